"""Shared fixtures: small files written in the datasets' original formats, and quiet TensorFlow."""

import gzip
import io
import os
import pickle
import tarfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# No test may touch the network: a dataset download is tested with tfds's download manager patched, and the
# reachability probe answers "unreachable" at once (inherited by the CLI subprocesses the tests start).
os.environ["RETHINK_TF_NO_NETWORK"] = "1"

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The longest tests (multi-process runs, 30-160 s each in the recorded runs' --durations) go first: pytest-xdist's
# two workers then end the suite on short tests, not one worker idle while the other runs a long test left last.
HEAVY_FIRST = (
    "test_mirrored_on_two_logical_cpus_matches_one_device",
    "test_a_sigterm_under_mirrored_replicas_checkpoints_and_the_rerun_equals_an_uninterrupted_run",
    "test_the_example_memorizes_random_labels_on_real_fashion_mnist",
    "test_two_workers_equal_two_replicas_equal_one_device",
    "test_inception_v3_on_mini_imagenet",
    "test_cli_two_workers_on_real_fashion_mnist_chief_writes_and_cluster_resumes",
    "test_readme_quickstart_transcript_is_the_committed_output_and_a_fresh_run_ends_the_same_way",
    "test_an_experiment_in_one_command_from_outside_the_repository",
    "test_sweep_expands_skips_done_and_runs",
    "test_sigterm_to_one_worker_stops_the_cluster_at_one_step_with_a_checkpoint",
    "test_plugin_model_trains_through_run_and_the_cli",
    "test_a_signal_saves_a_checkpoint_says_one_line_and_the_rerun_finishes_the_same_run",
    "test_deterministic_mode_gives_identical_losses_in_two_processes",
)


def pytest_collection_modifyitems(items):
    """HEAVY_FIRST's tests first, in its order; the rest as collected (a stable sort: the same order on every
    xdist worker, which xdist requires)."""
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(getattr(item, "originalname", None) or item.name, len(rank)))


FASHION_DIR = "/usr/share/datasets/fashion-mnist"
needs_fashion = pytest.mark.skipif(not os.path.exists(os.path.join(FASHION_DIR, "train-images-idx3-ubyte.gz")),
                                   reason="Debian's dataset-fashion-mnist is not installed")


def fake_cifar(n, seed):
    """n random CIFAR-shaped images (HWC uint8) and labels."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int64)


def _add(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_cifar_binary(folder, per_batch=4, test=6, as_tar=True):
    """CIFAR-10 binary version: 5 train batches + test_batch, records label byte + R,G,B planes."""
    batches = {f"data_batch_{i}.bin": fake_cifar(per_batch, i) for i in range(1, 6)}
    batches["test_batch.bin"] = fake_cifar(test, 99)
    raw = {n: b"".join(bytes([int(y)]) + x.transpose(2, 0, 1).tobytes() for x, y in zip(*xy))
           for n, xy in batches.items()}
    if as_tar:
        path = os.path.join(folder, "cifar-10-binary.tar.gz")
        with tarfile.open(path, "w:gz") as tar:
            for n, data in raw.items():
                _add(tar, f"cifar-10-batches-bin/{n}", data)
    else:
        path = os.path.join(folder, "cifar-10-batches-bin")
        os.makedirs(path)
        for n, data in raw.items():
            with open(os.path.join(path, n), "wb") as f:
                f.write(data)
    return path, batches


def write_cifar_python(folder, per_batch=4, test=6, extra=None):
    """CIFAR-10 python version: pickled dicts {b'data': (N, 3072) uint8 CHW rows, b'labels': list}."""
    batches = {f"data_batch_{i}": fake_cifar(per_batch, i) for i in range(1, 6)}
    batches["test_batch"] = fake_cifar(test, 99)
    path = os.path.join(folder, "cifar-10-python.tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for n, (x, y) in batches.items():
            d = {b"batch_label": n.encode(), b"labels": [int(v) for v in y],
                 b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1), b"filenames": [b"f.png"] * len(y)}
            if extra is not None:
                d[b"extra"] = extra
            _add(tar, f"cifar-10-batches-py/{n}", pickle.dumps(d, protocol=2))
    return path, batches


def idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_idx(folder, n_train=12, n_test=5, seed=0):
    """MNIST-style train/t10k images (idx3) and labels (idx1), gzipped."""
    rng = np.random.default_rng(seed)
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        for kind, arr in (("images-idx3", x), ("labels-idx1", y)):
            with gzip.open(os.path.join(folder, f"{prefix}-{kind}-ubyte.gz"), "wb") as f:
                f.write(idx_bytes(arr))
        out[prefix] = (x, y)
    return out


def imagenet_jpeg(rng, height=None, width=None):
    """One ImageNet-sized JPEG (smooth colour field plus noise, ~375x500 like the median ImageNet photo)."""
    import tensorflow as tf

    height = height or int(rng.integers(300, 500))
    width = width or int(rng.integers(350, 500))
    coarse = tf.constant(rng.uniform(0, 255, (1, 6, 8, 3)), tf.float32)
    image = tf.image.resize(coarse, [height, width], method="bicubic")[0] + rng.normal(0, 12, (height, width, 3))
    return tf.io.encode_jpeg(tf.cast(tf.clip_by_value(image, 0, 255), tf.uint8), quality=90).numpy()


def write_imagenet_tars(folder, classes=3, per_class=4, val=6, seed=0):
    """ILSVRC2012_img_train.tar (one <synset>.tar per class, <synset>_<n>.JPEG inside) and ILSVRC2012_img_val.tar
    (ILSVRC2012_val_<8 digits>.JPEG, labelled by tfds's bundled validation list), as ImageNet distributes them."""
    rng = np.random.default_rng(seed)
    synsets = ["n01440764", "n01443537", "n01484850", "n01491361", "n01494475", "n01496331", "n01498041",
               "n01514668", "n01514859", "n01518878"][:classes]
    with tarfile.open(os.path.join(folder, "ILSVRC2012_img_train.tar"), "w") as outer:
        for s in synsets:
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for i in range(per_class):
                    _add(tar, f"{s}_{i + 1}.JPEG", imagenet_jpeg(rng))
            _add(outer, f"{s}.tar", inner.getvalue())
    with tarfile.open(os.path.join(folder, "ILSVRC2012_img_val.tar"), "w") as tar:
        for i in range(val):
            _add(tar, f"ILSVRC2012_val_{i + 1:08d}.JPEG", imagenet_jpeg(rng))
    return synsets


def prepare_imagenet(manual_dir, data_dir, num_shards):
    """Runs tfds's own imagenet2012 builder on the tars in manual_dir (the path `--prepare_imagenet` takes), with
    `num_shards` record files per split so that the per-epoch shard order has something to permute."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
        manual_dir=manual_dir, try_download_gcs=False, num_shards=num_shards))
    return data_dir


@pytest.fixture(scope="session")
def mini_imagenet(tmp_path_factory):
    """A miniature ImageNet in the original format (3 classes x 4 train JPEGs, 6 validation JPEGs of ImageNet size),
    prepared by the real tfds builder into 3 shards per split. Returns (data_dir, manual_dir)."""
    root = tmp_path_factory.mktemp("imagenet")
    manual = root / "manual"
    manual.mkdir()
    write_imagenet_tars(str(manual))
    return prepare_imagenet(str(manual), str(root / "data"), num_shards=3), str(manual)


def run_result_script(script, *args):
    """Runs a Python script in a fresh process (logical devices are configured before TensorFlow starts) and
    returns the JSON it prints on its line starting "RESULT"; its stderr when it printed none."""
    import json
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", script, *map(str, args), os.path.dirname(os.path.abspath(__file__))],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT")]
    assert line, proc.stderr[-3000:]
    return json.loads(line[0][len("RESULT"):])
