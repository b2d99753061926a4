"""--extra_test (beyond the paper: CIFAR-10.1, Recht et al. 2019): extra test sets read through tfds's own builder
(prepared here with its download patched to local .npy files in the format it downloads), evaluated beside the test
set every epoch and at the end. The check is independent of the code: an extra set holding exactly the test set's
images and labels must score exactly what the test set scores, epoch by epoch, through its own pipeline."""

import dataclasses
import os

import numpy as np
import pytest

from conftest import write_cifar_binary
from rethink_tf import results
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.data import pipeline
from rethink_tf.data.sources import download as download_lib
from rethink_tf.errors import UserError
from rethink_tf.training.run import run


def _prepare_cifar10_1(data_dir, images, labels, config, monkeypatch):
    """Prepares tfds's cifar10_1/<config> in data_dir through the package's own download path (--download): the
    host probe answers, and tfds's download manager returns local files in the format it downloads (npy)."""
    import tensorflow_datasets as tfds

    files = []
    for what, array in (("data", images), ("labels", labels)):
        path = os.path.join(data_dir, f"cifar10.1_{config}_{what}.npy")
        np.save(path, array)
        files.append(path)
    monkeypatch.setattr(download_lib, "network_reachable", lambda url, timeout=None: (True, ""))
    monkeypatch.setattr(tfds.download.DownloadManager, "download", lambda self, urls: list(files))


@pytest.fixture
def cifar_with_extra(tmp_path, monkeypatch):
    data_dir = str(tmp_path / "data")
    os.makedirs(data_dir)
    _, batches = write_cifar_binary(data_dir, per_batch=12, test=10)
    test_x, test_y = batches["test_batch.bin"]
    _prepare_cifar10_1(data_dir, test_x, test_y.astype(np.int64), "v4", monkeypatch)  # the test set itself
    return data_dir, tmp_path, monkeypatch


def test_an_extra_test_set_scores_like_the_test_set_it_copies_every_epoch_and_at_the_end(cifar_with_extra):
    data_dir, tmp_path, monkeypatch = cifar_with_extra
    cfg = TrainConfig(model="mlp_1x512", epochs=3, batch_size=12, tensorboard=False, learning_rate=0.05,
                      data=DataConfig(dataset="cifar10", data_dir=data_dir, extra_test="tfds:cifar10_1"))
    assert cfg.name() == dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, extra_test=None)).name()
    path = run(cfg, str(tmp_path / "runs"), verbose=0)
    r = results.read_json(path)
    assert len(r["history"]) == 3
    for row in r["history"]:  # per epoch, through its own pipeline: exactly the test set's numbers
        assert row["cifar10_1_test_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-7)
        assert row["cifar10_1_test_loss"] == pytest.approx(row["test_loss"], rel=1e-5)
    extra = r["metrics"]["extra_test"]["tfds:cifar10_1"]
    assert extra["accuracy"] == pytest.approx(r["metrics"]["test_accuracy"], abs=1e-7)
    assert extra["loss"] == pytest.approx(r["metrics"]["test_loss"], rel=1e-5)
    assert r["corruption"]["extra_test"]["tfds:cifar10_1"]["size"] == 10

    # a finished run asked for another extra set later: evaluated from its checkpoint, nothing else changes
    rng = np.random.default_rng(5)
    other_x, other_y = rng.integers(0, 256, (7, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 7)
    _prepare_cifar10_1(data_dir, other_x, other_y, "v6", monkeypatch)
    later = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, extra_test="tfds:cifar10_1,tfds:cifar10_1/v6"))
    assert run(later, str(tmp_path / "runs"), verbose=0) == path
    after = results.read_json(path)
    assert after["history"] == r["history"]
    assert after["metrics"]["extra_test"]["tfds:cifar10_1"] == extra
    added = after["metrics"]["extra_test"]["tfds:cifar10_1/v6"]
    assert added["added_after_training"]
    # against an independent evaluation of the checkpoint: NumPy centre crop, /255, per-image standardization
    import keras

    from rethink_tf import models
    from rethink_tf.training import checkpoint

    model = models.build("mlp_1x512", (28, 28, 3), 10)
    model.load_weights(os.path.join(os.path.dirname(path), checkpoint.CHECKPOINT))
    x = other_x[:, 2:30, 2:30].astype(np.float64) / 255.0
    flat = x.reshape(len(x), -1)
    flat = (flat - flat.mean(1, keepdims=True)) / np.maximum(flat.std(1), 1 / np.sqrt(flat.shape[1]))[:, None]
    logits = keras.ops.convert_to_numpy(model(flat.reshape(x.shape).astype(np.float32))).astype(np.float64)
    assert added["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == other_y), abs=1e-9)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    assert added["loss"] == pytest.approx(-np.mean(logp[np.arange(7), other_y]), rel=1e-4)
    assert {k: v for k, v in after["metrics"].items() if k != "extra_test"} == {
        k: v for k, v in r["metrics"].items() if k != "extra_test"}
    assert results.lacks(after, later) == []


def test_extra_test_refusals(tmp_path):
    data_dir = str(tmp_path)
    write_cifar_binary(data_dir, per_batch=4)
    base = DataConfig(dataset="cifar10", data_dir=data_dir, download=False)
    for extra, match in (("cifar10_1", "tfds:NAME"), ("tfds:no_such_set_xyz", "knows no such dataset"),
                         ("tfds:cifar10_1", "not prepared")):
        with pytest.raises(UserError, match=match):
            pipeline.build(dataclasses.replace(base, extra_test=extra), batch_size=4, epochs=1)
    with pytest.raises(UserError, match="corrupt_test_labels"):  # its labels would take the test split's draws
        pipeline.build(dataclasses.replace(base, extra_test="tfds:cifar10_1", corrupt="labels", corrupt_prob=0.5,
                                           corrupt_test_labels=True), batch_size=4, epochs=1)


def test_an_extra_test_set_of_another_shape_is_refused(cifar_with_extra):
    data_dir, _, _ = cifar_with_extra
    cfg = DataConfig(dataset="fashion_mnist_5k", data_dir=data_dir, extra_test="tfds:cifar10_1", train_examples=100,
                     test_examples=20)
    with pytest.raises(UserError, match="32x32x3 images; the run's data hold 10 of 28x28x1"):
        pipeline.build(cfg, batch_size=10, epochs=1)
