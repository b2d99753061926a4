"""The six randomizations: exact semantics, fixed across epochs/orders/parallelism/processes, test labels clean."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from rethink_tf.data import corruption as C
from rethink_tf.data import keyed_random
from rethink_tf.errors import UserError

M64 = (1 << 64) - 1


def np_hash(*words):
    """Independent NumPy implementation of keyed_random.hash_words (SplitMix64 finalizer chain)."""
    words = np.broadcast_arrays(*[np.asarray(w, np.int64) for w in words])
    h = np.full(words[0].shape, 0x9E3779B97F4A7C15, np.uint64)
    with np.errstate(over="ignore"):
        for w in words:
            z = (h ^ w.astype(np.uint64)) + np.uint64(0x9E3779B97F4A7C15)
            z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
            z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
            h = z ^ (z >> np.uint64(31))
    return h


def np_uniform(*words):
    return (np_hash(*words) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def np_corrupt_labels(labels, keys, seed, p, k=10, split=0):
    """The paper's rule in NumPy: Bernoulli(p) mask, then a uniform class over all k (true one included)."""
    mask = np_uniform(seed, 1, split, keys) < p
    new = np.floor(np_uniform(seed, 2, split, keys) * k).astype(np.int64)
    return np.where(mask, new, labels)


def _image_with_position_codes(h=28, w=28, c=3):
    """Each pixel's RGB triple encodes its position, so permutations can be read back exactly."""
    pos = np.arange(h * w, dtype=np.float32).reshape(h, w, 1)
    return np.concatenate([pos, pos + 0.25, pos + 0.5][:c], axis=-1)


def test_hash_matches_numpy_reference():
    keys = np.array([0, 1, 2, 12345, 2**62 - 1, -7], np.int64)
    np.testing.assert_array_equal(keyed_random.hash_words(3, 1, 0, keys).numpy(), np_hash(3, 1, 0, keys))
    np.testing.assert_array_equal(keyed_random.uniform(3, 1, 0, keys).numpy(), np_uniform(3, 1, 0, keys))


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_label_fraction_changed_within_binomial_bounds(p, seed):
    n = 50_000
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    keys = np.arange(n)
    c = C.make("labels", p, seed=seed)
    out = C.corrupt_labels(c, labels, keys).numpy()
    np.testing.assert_array_equal(out, np_corrupt_labels(labels, keys, seed, p))
    q = 0.9 * p  # a corrupted label may equal the true one: 1/10 of the time for 10 classes
    changed = np.mean(out != labels)
    bound = 5 * math.sqrt(q * (1 - q) / n) + 1e-12  # five binomial standard deviations
    assert abs(changed - q) <= bound, (changed, q, bound)
    if p == 1.0:  # random labels are uniform over classes and independent of the true label
        counts = np.bincount(out, minlength=10)
        chi2 = np.sum((counts - n / 10) ** 2 / (n / 10))
        assert chi2 < 27.88  # chi-square, 9 dof, p = 0.001
        assert abs(np.mean(out == labels) - 0.1) <= 5 * math.sqrt(0.09 / n)


def test_random_labels_is_p_one_and_errors():
    assert C.make("random_labels").prob == 1.0
    with pytest.raises(UserError, match=r"must lie in \[0, 1\]; received 1.5"):
        C.make("labels", 1.5)
    with pytest.raises(UserError, match=r"received -0.1"):
        C.make("labels", -0.1)
    with pytest.raises(UserError, match="needs --corrupt_prob"):
        C.make("labels")
    with pytest.raises(UserError, match="unknown corruption 'noise'"):
        C.make("noise")
    with pytest.raises(UserError, match="random_labels means p = 1"):
        C.make("random_labels", 0.5)


def test_test_labels_stay_clean_unless_asked():
    labels, keys = np.arange(1000) % 10, np.arange(1000)
    c = C.make("random_labels", seed=4)
    np.testing.assert_array_equal(C.corrupt_labels(c, labels, keys, "test").numpy(), labels)
    c2 = C.make("random_labels", seed=4, corrupt_test_labels=True)
    test_out = C.corrupt_labels(c2, labels, keys, "test").numpy()
    assert np.mean(test_out != labels) > 0.8
    # train and test keys overlap (both start at 0), but their corruptions are independent
    assert np.mean(test_out == C.corrupt_labels(c2, labels, keys, "train").numpy()) < 0.2


def _run_pipeline(c, images, labels, keys, parallel):
    """Runs the map over examples read in the given order; returns {key: (image, label)}."""
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "key": keys})
    ds = ds.map(C.example_map(c, "train"), num_parallel_calls=parallel)
    return {int(e["key"]): (e["image"].numpy(), int(e["label"])) for e in ds}


@pytest.mark.parametrize("kind", ["labels", "shuffled_pixels", "random_pixels", "gaussian"])
def test_fixed_across_epochs_orders_and_parallelism(kind):
    n = 64
    rng = np.random.default_rng(0)
    images = rng.random((n, 6, 6, 3)).astype(np.float32)
    labels = rng.integers(0, 10, n)
    c = C.make(kind, 0.5 if kind == "labels" else None, seed=9, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2))
    keys = np.arange(n)
    ref = _run_pipeline(c, images, labels, keys, 1)
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "label": labels, "key": keys})
    ds = ds.map(C.example_map(c, "train")).repeat(2)  # two epochs of the same dataset object
    epochs = [(e["image"].numpy(), int(e["label"])) for e in ds]
    for k in range(n):
        np.testing.assert_array_equal(epochs[k][0], epochs[n + k][0])
        assert epochs[k][1] == epochs[n + k][1] == ref[k][1]
    for perm, parallel in ((rng.permutation(n), 8), (rng.permutation(n), tf.data.AUTOTUNE)):
        # a different read order (as after another shuffle) and another thread count
        got = _run_pipeline(c, images[perm], labels[perm], keys[perm], parallel)
        for k in range(n):
            np.testing.assert_array_equal(got[k][0], ref[k][0])
            assert got[k][1] == ref[k][1]
    # eager application equals the tf.data map (BV's "you'd be surprised how much these two differ")
    fn = C.example_map(c, "train")
    eager = fn({"image": images[5], "label": labels[5], "key": tf.constant(5, tf.int64)})
    np.testing.assert_array_equal(np.asarray(eager["image"]), ref[5][0])
    if kind == "labels":
        assert sum(ref[k][1] != labels[k] for k in range(n)) > 0


def test_fresh_process_sees_the_same_corruption():
    code = ("import numpy as np, json; from rethink_tf.data import corruption as C;"
            "c=C.make('labels',0.3,seed=5); print(json.dumps(C.label_summary(c, np.arange(5000)%10, np.arange(5000))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    here = C.label_summary(C.make("labels", 0.3, seed=5), np.arange(5000) % 10, np.arange(5000))
    assert json.loads(out.strip().splitlines()[-1]) == json.loads(json.dumps(here))


def test_shuffled_pixels_one_bijection_shared_by_train_and_test():
    c = C.make("shuffled_pixels", seed=3)
    img = _image_with_position_codes()
    outs = [C.corrupt_image(c, img, tf.constant(k, tf.int64), split).numpy()
            for k, split in ((0, "train"), (17, "train"), (3, "test"))]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])  # the same permutation for every image, train and test
    perm = outs[0][..., 0].reshape(-1).astype(int)
    assert sorted(perm.tolist()) == list(range(784))  # bijective
    assert np.mean(perm != np.arange(784)) > 0.95
    np.testing.assert_array_equal(outs[0][..., 1], outs[0][..., 0] + 0.25)  # RGB triples move together


def test_random_pixels_a_fixed_permutation_per_image():
    c = C.make("random_pixels", seed=3)
    img = _image_with_position_codes()
    perms = [C.corrupt_image(c, img, tf.constant(k, tf.int64)).numpy()[..., 0].reshape(-1).astype(int)
             for k in range(5)]
    for p in perms:
        assert sorted(p.tolist()) == list(range(784))
    assert all(np.mean(perms[i] != perms[j]) > 0.95 for i in range(5) for j in range(i + 1, 5))
    again = C.corrupt_image(c, img, tf.constant(2, tf.int64)).numpy()[..., 0].reshape(-1).astype(int)
    np.testing.assert_array_equal(again, perms[2])


def test_gaussian_moments_match_dataset():
    mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
    c = C.make("gaussian", seed=1, mean=mean, std=std)
    x = np.stack([C.corrupt_image(c, tf.zeros([28, 28, 3]), tf.constant(k, tf.int64)).numpy() for k in range(64)])
    n = x.shape[0] * 28 * 28
    for ch in range(3):
        v = x[..., ch].reshape(-1)
        assert abs(v.mean() - mean[ch]) < 5 * std[ch] / math.sqrt(n)
        assert abs(v.std() / std[ch] - 1) < 5 / math.sqrt(2 * n)
        kurt = np.mean(((v - v.mean()) / v.std()) ** 4)
        assert abs(kurt - 3) < 5 * math.sqrt(24 / n)  # Gaussian, not uniform
    assert np.mean(np.abs(x[0] - x[1])) > 0.1  # different noise per image


def test_dataset_moments():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (100, 4, 4, 3), dtype=np.uint8)
    mean, std = C.dataset_moments(imgs, chunk=7)
    x = imgs / 255.0
    np.testing.assert_allclose(mean, x.mean(axis=(0, 1, 2)), rtol=1e-12)
    np.testing.assert_allclose(std, x.std(axis=(0, 1, 2)), rtol=1e-9)


def test_label_summary_fingerprint():
    labels, keys = np.arange(2000) % 10, np.arange(2000)
    s = C.label_summary(C.make("labels", 0.4, seed=2), labels, keys)
    assert s["expected_changed_fraction"] == pytest.approx(0.36)
    assert sum(s["class_histogram"]) == 2000 and len(s["sha256"]) == 64
    # the fingerprint depends on the data, not the read order
    rev = C.label_summary(C.make("labels", 0.4, seed=2), labels[::-1], keys[::-1])
    assert rev["sha256"] == s["sha256"]
    assert C.label_summary(C.make("labels", 0.4, seed=3), labels, keys)["sha256"] != s["sha256"]
