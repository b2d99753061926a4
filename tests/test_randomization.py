"""rethink_tf.randomize on user datasets: tuples and dicts, any dtype, 10 and 100 classes, pure in the content key."""

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import rethink_tf
from rethink_tf.data import corruption as C
from rethink_tf.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _data(n=2000, classes=10, dtype=np.uint8, seed=0, shape=(8, 8, 3)):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, *shape)).astype(dtype)
    if dtype != np.uint8:
        images = images / 255.0
    return images, rng.integers(0, classes, n).astype(np.int64)


def _collect(ds):
    """{content digest of the clean image: (corrupted image, corrupted label)} so that read orders compare."""
    return [(x, int(y)) for x, y in ds.as_numpy_iterator()]


def _by_key(clean, corrupted):
    return {hashlib.sha256(c[0].tobytes() + c[1].tobytes()).hexdigest(): (r[0].tobytes(), r[1])
            for c, r in zip(clean, corrupted)}


@pytest.mark.parametrize("classes", [10, 100])
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_label_corruption_on_tuples_is_fixed_and_about_p_times_0_9(classes, dtype):
    images, labels = _data(classes=classes, dtype=dtype)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    out = ds.apply(lambda d: rethink_tf.randomize(d, "labels", prob=0.5, seed=3, num_classes=classes))
    first = _collect(out)
    again = _collect(out)  # a second epoch
    assert [y for _, y in first] == [y for _, y in again]
    new = np.array([y for _, y in first])
    assert new.min() >= 0 and new.max() < classes and out.element_spec[1].dtype == tf.int64
    changed = np.mean(new != labels)
    expected = 0.5 * (1 - 1 / classes)
    assert abs(changed - expected) < 5 * np.sqrt(expected * (1 - expected) / len(labels))
    np.testing.assert_array_equal(np.stack([x for x, _ in first]), images)  # images untouched


def test_content_keys_survive_another_read_order_parallelism_and_dicts():
    images, labels = _data()
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    base = _by_key([(x, np.int64(y)) for x, y in zip(images, labels)],
                   _collect(rethink_tf.randomize(ds, "random_labels", num_classes=10, seed=1)))
    order = np.random.default_rng(5).permutation(len(labels))
    shuffled = tf.data.Dataset.from_tensor_slices((images[order], labels[order]))
    out = _collect(rethink_tf.randomize(shuffled, "random_labels", num_classes=10, seed=1))
    assert _by_key([(x, np.int64(y)) for x, y in zip(images[order], labels[order])], out) == base
    dicts = tf.data.Dataset.from_tensor_slices({"pixels": images, "y": labels, "extra": labels * 2})
    dout = rethink_tf.randomize(dicts, "random_labels", num_classes=10, seed=1, image="pixels", label="y")
    rows = list(dout.as_numpy_iterator())
    assert set(rows[0]) == {"pixels", "y", "extra"}
    assert [int(r["y"]) for r in rows] == [y for _, y in _collect(rethink_tf.randomize(ds, "random_labels",
                                                                                        num_classes=10, seed=1))]


def test_same_semantics_as_the_package_pipeline_given_the_same_key():
    images, labels = _data(n=500)
    keys = np.arange(500, dtype=np.int64) * 7
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "id": keys})
    out = list(rethink_tf.randomize(ds, "labels", prob=0.7, seed=9, num_classes=10, key="id").as_numpy_iterator())
    ref = C.corrupt_labels(C.make("labels", 0.7, 9, 10), labels, keys, "train").numpy()
    np.testing.assert_array_equal([r["label"] for r in out], ref)
    test_split = rethink_tf.randomize(ds, "random_labels", num_classes=10, key="id", split="test")
    np.testing.assert_array_equal([r["label"] for r in test_split.as_numpy_iterator()], labels)  # test stays clean


@pytest.mark.parametrize("kind", ["shuffled_pixels", "random_pixels"])
def test_pixel_permutations_on_any_dtype_and_grayscale(kind):
    for dtype, shape in ((np.uint8, (6, 6, 3)), (np.float32, (6, 6))):
        images, labels = _data(n=50, dtype=dtype, shape=shape)
        out = _collect(rethink_tf.randomize(tf.data.Dataset.from_tensor_slices((images, labels)), kind, seed=2))
        for (x, y), img, lab in zip(out, images, labels):
            assert x.dtype == img.dtype and x.shape == img.shape and y == lab
            flat_in = img.reshape(36, -1)
            assert sorted(map(tuple, x.reshape(36, -1))) == sorted(map(tuple, flat_in))  # pixels move together
        if kind == "shuffled_pixels":  # one permutation for every image: a constant position code moves alike
            codes = np.arange(36, dtype=np.float32).reshape(6, 6)
            same = np.stack([codes] * 3)
            perm = _collect(rethink_tf.randomize(tf.data.Dataset.from_tensor_slices((same, labels[:3])), kind, seed=2))
            assert all(np.array_equal(perm[0][0], p[0]) for p in perm)


def test_gaussian_with_moments_from_the_training_split():
    images, labels = _data(n=400)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    mean, std = rethink_tf.image_moments(ds)
    np.testing.assert_allclose(mean, images.reshape(-1, 3).mean(0), rtol=1e-9)
    out = np.stack([x for x, _ in _collect(rethink_tf.randomize(ds, "gaussian", mean=mean, std=std))])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.reshape(-1, 3).mean(0), mean, rtol=0.02)
    np.testing.assert_allclose(out.reshape(-1, 3).std(0), std, rtol=0.02)


def test_duplicates_share_a_key_and_stay_duplicates():
    images, labels = _data(n=20)
    images[7], labels[7] = images[3], labels[3]
    out = _collect(rethink_tf.randomize(tf.data.Dataset.from_tensor_slices((images, labels)), "random_pixels"))
    np.testing.assert_array_equal(out[7][0], out[3][0])


FRESH = r"""
import hashlib, numpy as np, tensorflow as tf, rethink_tf
rng = np.random.default_rng(0)
images, labels = rng.integers(0, 256, (300, 8, 8, 3)).astype(np.uint8), rng.integers(0, 10, 300)
ds = rethink_tf.randomize(tf.data.Dataset.from_tensor_slices((images, labels)), "random_labels", num_classes=10)
print("DIGEST", hashlib.sha256(np.array([int(y) for _, y in ds.as_numpy_iterator()]).tobytes()).hexdigest())
"""


def test_fresh_process_gives_the_same_corruption():
    digests = set()
    for _ in range(2):
        proc = subprocess.run([sys.executable, "-c", FRESH], capture_output=True, text=True, cwd=REPO)
        digests.update(l for l in proc.stdout.splitlines() if l.startswith("DIGEST"))
    assert len(digests) == 1


def test_bad_input_is_one_clear_error():
    images, labels = _data(n=4)
    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    with pytest.raises(UserError, match="needs num_classes"):
        rethink_tf.randomize(ds, "random_labels")
    with pytest.raises(UserError, match="unknown corruption"):
        rethink_tf.randomize(ds, "blur")
    with pytest.raises(UserError, match="needs the dataset's per-channel mean and std"):
        rethink_tf.randomize(ds, "gaussian")
    with pytest.raises(UserError, match="no 'label' feature"):
        rethink_tf.randomize(tf.data.Dataset.from_tensor_slices({"image": images, "y": labels}), "random_labels",
                             num_classes=10)
    with pytest.raises(UserError, match="split must be"):
        rethink_tf.randomize(ds, "none", split="valid")


def test_key_feature_errors_come_before_any_tracing():
    images, labels = _data(n=4)
    d = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "w": labels.astype(np.float32)})
    with pytest.raises(UserError, match="names a feature, but the dataset's dicts have only"):
        rethink_tf.randomize(d, "random_labels", num_classes=10, key="id")
    with pytest.raises(UserError, match="integer or a string"):
        rethink_tf.randomize(d, "random_labels", num_classes=10, key="w")
    with pytest.raises(UserError, match="elements are tuples"):
        rethink_tf.randomize(tf.data.Dataset.from_tensor_slices((images, labels)), "none", key="id")


def test_the_example_memorizes_random_labels_on_real_fashion_mnist(tmp_path):
    """On the Fashion-MNIST images the package ships (no download, no Debian package needed)."""
    proc = subprocess.run([sys.executable, "examples/your_model.py", f"--workdir={tmp_path}"], capture_output=True,
                          text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split("|")[1].strip(): [float(c.strip().rstrip("%").split()[0]) for c in line.split("|")[2:5]]
            for line in proc.stdout.splitlines() if line.startswith("| none") or line.startswith("| random_labels")}
    train_true, test_true, _ = rows["none"]
    train_random, test_random, _ = rows["random_labels"]
    assert train_true >= 99 and test_true >= 75  # docs/your_model.txt: measured 100.00% / 80.80%
    assert train_random >= 99 and test_random <= 20  # memorized, chance on test (docs/your_model.txt)
    assert "epoch 1/60" in proc.stdout  # progress: one line per epoch
    assert "Warning" not in proc.stderr and "I0000" not in proc.stderr
