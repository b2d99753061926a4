"""The pipeline: fixed corruptions, seeded per-epoch order, exact resume, clean test labels, loud bad combinations."""

import hashlib

import numpy as np
import pytest

from conftest import write_cifar_binary, write_idx
from rethink_tf.config import DataConfig
from rethink_tf.data import pipeline, sources
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
