"""Loaders read small files written in each original format, tfds mock data, and real Fashion-MNIST."""

import gzip
import os
import tarfile

import numpy as np
import pytest

from conftest import needs_fashion, write_cifar_binary, write_cifar_python, write_idx
from rethink_tf.data import sources
from rethink_tf.errors import UserError


def _expected(batches, split):
    names = [n for n in batches if ("test" in n) == (split == "test")]
    return np.concatenate([batches[n][0] for n in names]), np.concatenate([batches[n][1] for n in names])


def _assert_same_examples(arrays, images, labels):
    """The split holds exactly these (image, label) examples, in whatever order (sources keep key order)."""
    got = sorted((x.tobytes(), int(y)) for x, y in zip(arrays["image"], arrays["label"]))
    assert got == sorted((x.reshape(arrays["image"].shape[1:]).tobytes(), int(y)) for x, y in zip(images, labels))


@pytest.mark.parametrize("as_tar", [True, False])
def test_cifar_binary_round_trip(tmp_path, as_tar):
    _, batches = write_cifar_binary(str(tmp_path), as_tar=as_tar)
    for split in ("train", "test"):
        s = sources.load("cifar10", split, data_dir=str(tmp_path), source="archive")
        x, y = _expected(batches, split)
        _assert_same_examples(s.arrays, x, y)
        assert np.all(np.diff(s.arrays["key"]) > 0)  # key order, distinct keys
        assert s.size == len(y) == (20 if split == "train" else 6)


def test_cifar_python_round_trip(tmp_path):
    _, batches = write_cifar_python(str(tmp_path))
    s = sources.load("cifar10", "train", data_dir=str(tmp_path))
    _assert_same_examples(s.arrays, *_expected(batches, "train"))


def test_cifar_python_refuses_code(tmp_path):
    # A pickle that would call os.system when loaded must be refused, not executed.
    write_cifar_python(str(tmp_path), extra=_Evil())
    with pytest.raises(UserError, match="refusing to load"):
        sources.load("cifar10", "train", data_dir=str(tmp_path))


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/rethink_tf_pwned",))


def test_truncated_cifar_binary(tmp_path):
    path, _ = write_cifar_binary(str(tmp_path), as_tar=False)
    with open(os.path.join(path, "data_batch_3.bin"), "r+b") as f:
        f.truncate(3073 * 2 + 100)
    with pytest.raises(UserError, match="truncated"):
        sources.load("cifar10", "train", data_dir=str(tmp_path))


def test_truncated_tarball(tmp_path):
    path, _ = write_cifar_binary(str(tmp_path))
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot read cifar10"):
        sources.load("cifar10", "train", data_dir=str(tmp_path))


def test_tar_member_missing(tmp_path):
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz"):
        pass
    with pytest.raises(UserError, match="has no member cifar-10-batches-bin/data_batch_1.bin"):
        sources.load("cifar10", "train", data_dir=str(tmp_path))


def test_idx_round_trip_and_subset(tmp_path):
    written = write_idx(str(tmp_path))
    s = sources.load("mnist", "train", data_dir=str(tmp_path))
    _assert_same_examples(s.arrays, *written["train"])
    sub = sources.load("mnist", "test", data_dir=str(tmp_path), num_examples=3)
    assert sub.size == 3 and sub.arrays["image"].shape == (3, 28, 28, 1)
    full = sources.load("mnist", "test", data_dir=str(tmp_path))
    for k in ("image", "label", "key"):  # the first 3 in key order
        np.testing.assert_array_equal(sub.arrays[k], full.arrays[k][:3])


def test_idx_truncated_and_bad_magic(tmp_path):
    write_idx(str(tmp_path))
    p = tmp_path / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(p.read_bytes())
    p.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(UserError, match="truncated"):
        sources.load("fashion_mnist", "train", data_dir=str(tmp_path))
    p.write_bytes(gzip.compress(b"\x01\x02" + raw[2:]))
    with pytest.raises(UserError, match="bad magic"):
        sources.load("fashion_mnist", "train", data_dir=str(tmp_path))


def test_missing_data_says_what_to_put_where(tmp_path):
    with pytest.raises(UserError, match=r"cifar10 not found in .*cifar-10-binary\.tar\.gz"):
        sources.load("cifar10", "train", data_dir=str(tmp_path))
    with pytest.raises(UserError, match="no cifar10 archive found"):
        sources.load("cifar10", "train", data_dir=str(tmp_path), source="archive")


@pytest.mark.parametrize("kwargs,match", [
    (dict(name="cifar100", split="train"), "unknown dataset 'cifar100'"),
    (dict(name="cifar10", split="valid"), "unknown split"),
    (dict(name="cifar10", split="train", source="web"), "unknown source"),
    (dict(name="cifar10", split="train", num_examples=0), "at least one example"),
])
def test_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(UserError, match=match):
        sources.load(data_dir=str(tmp_path), **kwargs)


def test_tfds_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=12, policy=tfds.testing.MockPolicy.USE_CODE):
        s = sources.load("cifar10", "train", source="tfds", data_dir="/nonexistent-tfds")
        assert s.arrays["image"].shape == (12, 32, 32, 3) and s.arrays["image"].dtype == np.uint8
        assert len(set(s.arrays["key"].tolist())) == 12  # content keys: distinct and stable
        again = sources.load("cifar10", "train", source="tfds", data_dir="/nonexistent-tfds")
        np.testing.assert_array_equal(s.arrays["key"], again.arrays["key"])


@needs_fashion
def test_real_fashion_mnist():
    train = sources.load("fashion_mnist", "train")
    test = sources.load("fashion_mnist", "test")
    assert train.size == 60_000 and test.size == 10_000
    assert train.arrays["image"].shape == (60_000, 28, 28, 1)
    assert np.bincount(train.arrays["label"]).tolist() == [6000] * 10  # Fashion-MNIST is balanced


def _tfds_copy(name, served, data_dir, monkeypatch):
    """Prepares tfds's own `name` builder into data_dir from local files: what its download manager would have
    fetched and extracted (`served`), so tfds writes its prepared copy exactly as it does from the internet."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.image_classification import mnist

    monkeypatch.setattr(tfds.download.DownloadManager, "download_and_extract", lambda self, url: served)
    monkeypatch.setattr(mnist, "_TRAIN_EXAMPLES", 12)  # tfds reads a fixed count from MNIST's files
    monkeypatch.setattr(mnist, "_TEST_EXAMPLES", 5)
    tfds.builder(name, data_dir=str(data_dir)).download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def test_keys_subsets_and_corruptions_do_not_depend_on_the_source(tmp_path, monkeypatch):
    """The same CIFAR-10 and MNIST examples read from the original archive and from a copy prepared by tfds's own
    builder (which stores them in another order) get the same keys, arrays, corrupted labels and first-N subset."""
    import tensorflow_datasets as tfds

    from rethink_tf.data import corruption

    archive = tmp_path / "archive"
    archive.mkdir()
    write_cifar_binary(str(archive), per_batch=6, test=6, as_tar=False)
    (archive / "cifar-10-batches-bin" / "batches.meta.txt").write_text(
        "\n".join(["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]) + "\n")
    written = write_idx(str(archive), n_train=12, n_test=5)
    extracted = {}
    for prefix, key in (("train", "train"), ("t10k", "test")):
        for kind, field in (("images-idx3", "data"), ("labels-idx1", "labels")):
            path = archive / f"{prefix}-{kind}-ubyte"
            path.write_bytes(gzip.decompress((archive / f"{prefix}-{kind}-ubyte.gz").read_bytes()))
            extracted[f"{key}_{field}"] = str(path)
    _tfds_copy("cifar10", str(archive), tmp_path / "tfds", monkeypatch)
    _tfds_copy("mnist", extracted, tmp_path / "tfds", monkeypatch)
    stored = [int(y) for y in tfds.as_numpy(tfds.load("mnist", split="train", data_dir=str(tmp_path / "tfds"))
                                            .map(lambda ex: ex["label"]))]
    assert stored != written["train"][1].tolist()  # tfds keeps its own order: the keys must not come from it
    for name in ("cifar10", "mnist"):
        for split in ("train", "test"):
            a = sources.load(name, split, data_dir=str(archive), source="archive")
            t = sources.load(name, split, data_dir=str(tmp_path / "tfds"), source="tfds")
            assert t.origin.startswith("tfds:") and not a.origin.startswith("tfds:")
            for k in ("image", "label", "key"):
                np.testing.assert_array_equal(a.arrays[k], t.arrays[k], err_msg=f"{name}/{split} {k}")
            assert sources.fingerprint(a) == sources.fingerprint(t)
            for kind, p in (("random_labels", 1.0), ("labels", 0.5)):
                c = corruption.make(kind, p, 3, 10)
                np.testing.assert_array_equal(
                    corruption.corrupt_labels(c, a.arrays["label"], a.arrays["key"], split),
                    corruption.corrupt_labels(c, t.arrays["label"], t.arrays["key"], split))
        sub_a = sources.load(name, "train", data_dir=str(archive), source="archive", num_examples=7)
        sub_t = sources.load(name, "train", data_dir=str(tmp_path / "tfds"), source="tfds", num_examples=7)
        np.testing.assert_array_equal(sub_a.arrays["key"], sub_t.arrays["key"])
        np.testing.assert_array_equal(sub_a.arrays["image"], sub_t.arrays["image"])
