"""The pipeline: fixed corruptions, seeded per-epoch order, exact resume, clean test labels, loud bad combinations."""

import hashlib

import numpy as np
import pytest

from conftest import write_cifar_binary, write_idx
from rethink_tf.config import DataConfig
from rethink_tf.data import keyed_random, pipeline, sources
from rethink_tf.errors import UserError


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar")
    write_cifar_binary(str(d), per_batch=8)  # 40 train, 6 test
    return str(d)


def _batches(ds):
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_shapes_and_whitening(cifar_dir):
    d = pipeline.build(DataConfig(dataset="cifar10", data_dir=cifar_dir), batch_size=8, epochs=1)
    assert d.steps_per_epoch == 5 and d.input_shape == (28, 28, 3)
    batches = _batches(d.train(0))
    assert len(batches) == 5 and batches[0][0].shape == (8, 28, 28, 3)
    x = batches[0][0].reshape(8, -1)
    np.testing.assert_allclose(x.mean(axis=1), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(axis=1), 1, atol=1e-3)


@pytest.mark.parametrize("corrupt,prob,crop,augment", [("labels", 0.5, False, False), ("random_labels", None, True, False),
                                                       ("random_pixels", None, False, False),
                                                       ("none", None, True, True)])
def test_train_stream_is_seeded_and_resumes_exactly(cifar_dir, corrupt, prob, crop, augment):
    cfg = DataConfig(dataset="cifar10", data_dir=cifar_dir, corrupt=corrupt, corrupt_prob=prob, random_crop=crop,
                     augment=augment, shuffle_seed=3)
    a = pipeline.build(cfg, batch_size=8, epochs=3)
    b = pipeline.build(cfg, batch_size=8, epochs=3)
    full = _batches(a.train(0))
    assert len(full) == 15
    for (xa, ya), (xb, yb) in zip(full, _batches(b.train(0))):  # a second build (as another process would)
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    resumed = _batches(b.train(2))  # a run resumed at epoch 2 sees exactly the last epoch's batches
    assert len(resumed) == 5
    for (xa, ya), (xr, yr) in zip(full[10:], resumed):
        np.testing.assert_array_equal(xa, xr)
        np.testing.assert_array_equal(ya, yr)
    e0 = np.concatenate([y for _, y in full[:5]])
    e1 = np.concatenate([y for _, y in full[5:10]])
    assert sorted(e0) == sorted(e1) and not np.array_equal(e0, e1)  # same labels, new order each epoch


@pytest.mark.parametrize("augment", [False, True])
def test_worker_shards_partition_each_global_batch(cifar_dir, augment):
    # 2 workers x 2 replicas: each worker's per-replica batches, in order, are its columns of the one-device batch
    # (rows [w*4, w*4+4) of each batch of 8, in two batches of 2), from a fresh start and from a mid-epoch resume
    cfg = DataConfig(dataset="cifar10", data_dir=cifar_dir, corrupt="labels", corrupt_prob=0.5, random_crop=augment,
                     augment=augment, shuffle_seed=4)
    d = pipeline.build(cfg, batch_size=8, epochs=2)
    for first_step in (0, 3):
        whole = _batches(d.train(0, first_step))
        for worker in (0, 1):
            parts = _batches(d.train(0, first_step, shard=(2, worker, 2)))
            assert len(parts) == 2 * len(whole) == 2 * (10 - first_step)
            for i, (x, y) in enumerate(whole):
                rows = slice(worker * 4, worker * 4 + 4)
                np.testing.assert_array_equal(np.concatenate([parts[2 * i][1], parts[2 * i + 1][1]]), y[rows])
                np.testing.assert_allclose(np.concatenate([parts[2 * i][0], parts[2 * i + 1][0]]), x[rows],
                                           rtol=0, atol=1e-5 if augment else 0)  # bilinear sums: SIMD rounding


def test_unaugmented_batches_are_the_numpy_whitened_images(cifar_dir):
    # the training images are whitened once (per_image_standardization of the centre crop / 255); each batch must be
    # those images, at the keys of the epoch's order, as a NumPy twin computes them
    d = pipeline.build(DataConfig(dataset="cifar10", data_dir=cifar_dir, shuffle_seed=2), batch_size=8, epochs=1)
    split = sources.load("cifar10", "train", data_dir=cifar_dir)
    crop = split.arrays["image"][:, 2:30, 2:30, :].reshape(len(split.arrays["key"]), -1) / 255.0
    twin = (crop - crop.mean(1, keepdims=True)) / np.maximum(crop.std(1, keepdims=True), 1 / np.sqrt(crop.shape[1]))
    by_key = dict(zip(split.arrays["key"].tolist(), twin))
    for (x, y) in _batches(d.train(0)):
        for image, label in zip(x, y):
            match = [k for k, v in by_key.items() if np.allclose(v, image.reshape(-1), atol=1e-5)]
            assert len(match) == 1
            assert split.arrays["label"][list(split.arrays["key"]).index(match[0])] == label


def test_sets_over_the_whitened_copy_limit_are_whitened_per_batch(cifar_dir, monkeypatch):
    # the same batches either way: the whitened copy (under the limit) and per-batch whitening (over it)
    cfg = DataConfig(dataset="cifar10", data_dir=cifar_dir, corrupt="labels", corrupt_prob=0.5, shuffle_seed=6)
    held = _batches(pipeline.build(cfg, batch_size=8, epochs=2).train(0))
    monkeypatch.setattr(pipeline, "MODEL_INPUT_LIMIT_BYTES", 0)
    per_batch = pipeline.build(cfg, batch_size=8, epochs=2)
    assert per_batch.train(0).element_spec[0].dtype.name == "float32"
    for (xa, ya), (xb, yb) in zip(held, _batches(per_batch.train(0))):
        np.testing.assert_array_equal(ya, yb)
        np.testing.assert_array_equal(xa, xb)


def test_labels_trained_on_match_fingerprint_and_test_is_clean(cifar_dir):
    cfg = DataConfig(dataset="cifar10", data_dir=cifar_dir, corrupt="random_labels", corrupt_seed=1)
    d = pipeline.build(cfg, batch_size=8, epochs=1)
    train_eval_labels = np.concatenate([y for _, y in _batches(d.train_eval)])
    assert hashlib.sha256(train_eval_labels.astype("<i8").tobytes()).hexdigest() == d.summary["train_labels"]["sha256"]
    clean = sources.load("cifar10", "train", data_dir=cifar_dir).arrays["label"]
    assert np.mean(train_eval_labels != clean) > 0.5
    test_labels = np.concatenate([y for _, y in _batches(d.test)])
    np.testing.assert_array_equal(test_labels, sources.load("cifar10", "test", data_dir=cifar_dir).arrays["label"])
    assert d.summary["test_labels"]["changed_fraction"] == 0.0
    streamed = np.concatenate([y for _, y in _batches(d.train(0))])
    assert sorted(streamed) == sorted(train_eval_labels)  # the train stream trains on those same labels


def test_gaussian_records_moments(cifar_dir):
    d = pipeline.build(DataConfig(dataset="cifar10", data_dir=cifar_dir, corrupt="gaussian"), batch_size=8, epochs=1)
    assert len(d.summary["gaussian_mean"]) == 3 and all(0.3 < m < 0.7 for m in d.summary["gaussian_mean"])


@pytest.mark.parametrize("kwargs,match", [
    (dict(corrupt="shuffled_pixels", random_crop=True), "not defined by the paper"),
    (dict(corrupt="gaussian", augment=True), "not defined by the paper"),
    (dict(imagenet_augment=True), "use --augment"),
    (dict(corrupt="labels", corrupt_prob=2.0), r"\[0, 1\]"),
])
def test_bad_combinations(cifar_dir, kwargs, match):
    with pytest.raises(UserError, match=match):
        pipeline.build(DataConfig(dataset="cifar10", data_dir=cifar_dir, **kwargs), batch_size=8, epochs=1)


def test_batch_errors(cifar_dir, tmp_path):
    with pytest.raises(UserError, match="fewer than one batch"):
        pipeline.build(DataConfig(dataset="cifar10", data_dir=cifar_dir), batch_size=64, epochs=1)
    with pytest.raises(UserError, match="does not split evenly over 3 replicas"):
        pipeline.build(DataConfig(dataset="cifar10", data_dir=cifar_dir), batch_size=8, epochs=1, num_replicas=3)
    write_idx(str(tmp_path))
    with pytest.raises(UserError, match="no margin"):
        pipeline.build(DataConfig(dataset="mnist", data_dir=str(tmp_path), random_crop=True), batch_size=4, epochs=1)


@pytest.mark.parametrize("corrupt,prob,crop,augment,expected", [
    ("labels", 0.5, False, False, "c6eba39da0110c95"), ("random_labels", None, True, True, "48b1d21478fd0f87"),
    ("random_pixels", None, False, False, "3deca3a3eefe0b35")])
def test_epoch_order_and_labels_are_those_of_the_per_example_pipeline(corrupt, prob, crop, augment, expected):
    # sha256 of the label sequence of epochs 0-1, recorded with the per-example pipeline that preceded the batched
    # one (issue 10): the batched gather must replay exactly the same order and labels. Recorded again when the
    # examples became content-keyed and held in key order (issue 17), which changed order and labels by design.
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        write_cifar_binary(d, per_batch=8)
        cfg = DataConfig(dataset="cifar10", data_dir=d, corrupt=corrupt, corrupt_prob=prob, random_crop=crop,
                         augment=augment, shuffle_seed=3)
        ys = np.concatenate([y for _, y in _batches(pipeline.build(cfg, batch_size=8, epochs=2).train(0))])
    assert hashlib.sha256(ys.astype(np.int64).tobytes()).hexdigest()[:16] == expected


def test_batched_augmentation_is_per_example_and_keyed_by_seed_epoch_key():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    images = tf.constant(rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8))
    keys = tf.constant(rng.permutation(1000)[:16].astype(np.int64))
    whole = pipeline.augment_batch(images, keys, 5, 2, 28, True, True).numpy()
    assert whole.shape == (16, 28, 28, 3) and whole.dtype == np.float32
    for i in range(16):  # the same image gets the same crop/flip/angle alone or in any batch
        alone = pipeline.augment_batch(images[i:i + 1], keys[i:i + 1], 5, 2, 28, True, True).numpy()
        np.testing.assert_allclose(alone[0], whole[i], atol=1e-5)  # bilinear sums: SIMD rounding
    other_epoch = pipeline.augment_batch(images, keys, 5, 3, 28, True, True).numpy()
    assert not np.allclose(other_epoch, whole)
    # the pipeline's own one-program model input: per image too, with and without the crop (the zero window)
    for crop, x in ((True, images), (False, images[:, 2:30, 2:30, :])):
        batch = pipeline.augmented_input(x, keys, 5, 2, 28, crop, True).numpy()
        for i in (0, 7, 15):
            alone = pipeline.augmented_input(x[i:i + 1], keys[i:i + 1], 5, 2, 28, crop, True).numpy()
            np.testing.assert_allclose(alone[0], batch[i], atol=1e-4)  # whitened: the 1e-5 scaled by 1/std
    no_crop = pipeline.augmented_input(images[:, 2:30, 2:30, :], keys, 5, 2, 28, False, True).numpy()
    reference = pipeline.augment_batch(images[:, 2:30, 2:30, :], keys, 5, 2, 28, False, True).numpy().reshape(16, -1)
    white = (reference - reference.mean(1, keepdims=True)) / np.maximum(reference.std(1, keepdims=True),
                                                                       1 / np.sqrt(reference.shape[1]))
    np.testing.assert_allclose(no_crop.reshape(16, -1), white, atol=1e-4)
    # crops alone: exact windows of the uint8 image, offsets in 0..4, several distinct ones
    crops = pipeline.augment_batch(images, keys, 5, 2, 28, True, False).numpy()
    offsets = set()
    for i in range(16):
        found = [(t, l) for t in range(5) for l in range(5)
                 if np.array_equal(crops[i], images[i, t:t + 28, l:l + 28].numpy())]
        assert found
        offsets.add(found[0])
    assert len(offsets) > 5
    # the model input of a crop alone, in one program: the same windows / 255, whitened (NumPy twin)
    fused = pipeline.augmented_input(images, keys, 5, 2, 28, True, False).numpy()
    for i in range(16):
        window = crops[i].astype(np.float64) / 255.0
        white = (window - window.mean()) / max(window.std(), 1.0 / np.sqrt(window.size))
        np.testing.assert_allclose(fused[i], white, atol=1e-5)


def test_images_are_held_as_uint8_except_gaussian(cifar_dir):
    for corrupt, dtype in (("none", np.uint8), ("shuffled_pixels", np.uint8), ("gaussian", np.float32)):
        d = pipeline.build(DataConfig(dataset="cifar10", data_dir=cifar_dir, corrupt=corrupt), batch_size=8, epochs=1)
        x, _ = next(iter(d.train(0)))
        assert x.dtype == np.float32
        held = [c for c in d.train(0).element_spec]  # the model input is float32 in every case
        assert held[0].dtype.name == "float32"
        arrays = pipeline._prepared(d.corruption, sources.load("cifar10", "train", data_dir=cifar_dir), (28, 28, 3),
                                    crop=True)
        assert arrays["image"].dtype == dtype


def test_compiled_augmentation_equals_the_reference_ops():
    # augment_batch's crop/flip/rotation == tf.image crop windows + flip + ImageProjectiveTransformV3, and the XLA
    # program the pipeline runs (augmented_input) == those windows whitened
    import math

    import tensorflow as tf

    from rethink_tf.data import preprocessing

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    keys = tf.constant(np.arange(100, 112, dtype=np.int64))
    out = pipeline.augment_batch(tf.constant(images), keys, 4, 1, 28, True, True).numpy()
    fused = pipeline.augmented_input(tf.constant(images), keys, 4, 1, 28, True, True).numpy()
    u = lambda j: keyed_random.uniform(4, keyed_random.AUGMENT, 1, keys, j).numpy()
    top, left = np.floor(u(0) * 5).astype(int), np.floor(u(1) * 5).astype(int)
    for i in range(12):
        ref = images[i, top[i]:top[i] + 28, left[i]:left[i] + 28].astype(np.float32) / 255.0
        if u(2)[i] < 0.5:
            ref = ref[:, ::-1]
        angle = (2.0 * u(3)[i] - 1.0) * preprocessing.ROTATION_DEGREES * math.pi / 180.0
        ref = preprocessing.rotate(tf.constant(ref), tf.constant(angle, tf.float32)).numpy()
        np.testing.assert_allclose(out[i], ref, atol=1e-5)
        # the pipeline's one-program model input (crop folded into the rotation's gathers, then whitening) against
        # the reference window whitened in NumPy: (x - mean) / max(std, 1/sqrt(N))
        white = (ref - ref.mean()) / max(ref.std(), 1.0 / np.sqrt(ref.size))
        np.testing.assert_allclose(fused[i], white, atol=1e-4)  # whitening scales the 1e-5 by 1/std
