"""rethink_tf.randomization_test on a user's model and tf.data datasets, and --dataset=tfds:NAME plug-in data."""

import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import rethink_tf
from rethink_tf import results
from rethink_tf.randomization import experiment
from rethink_tf.training import checkpoint
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.data import pipeline, sources
from rethink_tf.errors import UserError
from rethink_tf.train import run


def tiny_mlp(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Dense(64, activation="relu")(keras.layers.Flatten()(inputs))
    return keras.Model(inputs, keras.layers.Dense(num_classes)(x))


def _data(n=48, m=24, classes=3, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n + m, 6, 6, 1)).astype(dtype)
    y = rng.integers(0, classes, n + m)
    return (tf.data.Dataset.from_tensor_slices((x[:n], y[:n])), tf.data.Dataset.from_tensor_slices((x[n:], y[n:])),
            x, y)


def test_randomization_test_end_to_end(tmp_path):
    train, test, _, _ = _data()
    rows = rethink_tf.randomization_test(
        tiny_mlp, train, test, corruptions=("none", "random_labels", "labels:0.5", ("gaussian")), epochs=25,
        batch_size=16, optimizer=lambda: keras.optimizers.Adam(1e-2), workdir=str(tmp_path),
        figures_dir=str(tmp_path / "fig"), data_name="toy 6x6")
    assert [r["corruption"] for r in rows] == ["none", "random_labels", "labels:0.5", "gaussian"]
    from rethink_tf.reporting import figures

    shown = results.read_json(rows[0]["results"])
    assert shown["display"] == {"model": "tiny_mlp", "dataset": "toy 6x6"} and shown["config"]["dataset"].startswith(
        "user:")  # the identity keeps the fingerprint; figures show the names
    assert figures._title(shown["config"], shown["display"]).startswith("tiny_mlp on toy 6x6")
    by = {r["corruption"]: r for r in rows}
    assert by["random_labels"]["train_accuracy"] == 1.0  # 48 random labels memorized
    for r in rows:
        assert r["generalization_gap"] == pytest.approx(r["train_accuracy"] - r["test_accuracy"])
        rec = results.read_json(r["results"])
        assert rec["kind"] == "train" and re.fullmatch(r"user:tiny_mlp-[0-9a-f]{8}", rec["config"]["model"])
        assert rec["config"]["optimizer"].startswith("Adam-") and rec["history"][0]["lr"] == pytest.approx(1e-2)
        assert ":" not in os.path.basename(os.path.dirname(r["results"]))
    # steps to fit, from the per-epoch history the loop wrote: the step count at the first epoch at 100%
    fit_step = {r["corruption"]: next((h["step"] for h in results.read_json(r["results"])["history"]
                                       if h["train_accuracy"] >= 1.0), None) for r in rows}
    assert all(r["steps_to_fit"] == fit_step[r["corruption"]] for r in rows) and fit_step["random_labels"]
    assert by["none"]["slowdown"] == 1.0
    assert by["random_labels"]["slowdown"] == pytest.approx(fit_step["random_labels"] / fit_step["none"])
    assert os.path.exists(tmp_path / "fig" / "figure1a.png") and os.path.exists(tmp_path / "fig" / "figure1bc.png")
    assert os.path.exists(tmp_path / "fig" / "memorization.png")  # labels:0.5 records clean/noisy accuracies
    table = rethink_tf.format_table(rows)
    assert "random_labels" in table and "100.00%" in table
    # the same call again: every run is complete, nothing retrains, the same numbers come back
    again = rethink_tf.randomization_test(tiny_mlp, train, test, corruptions=("none", "random_labels", "labels:0.5",
                                                                                "gaussian"), epochs=25, batch_size=16,
                                          optimizer=lambda: keras.optimizers.Adam(1e-2), workdir=str(tmp_path))
    assert again == rows


def test_a_killed_randomization_test_resumes(tmp_path, monkeypatch):
    train, test, _, _ = _data()
    kw = dict(corruptions=("random_labels",), epochs=3, batch_size=16, workdir=str(tmp_path))
    original = checkpoint.Checkpoint.on_epoch_end

    def die_after_first(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch == 0:
            raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.Checkpoint, "on_epoch_end", die_after_first)
    with pytest.raises(KeyboardInterrupt):
        rethink_tf.randomization_test(tiny_mlp, train, test, **kw)
    monkeypatch.setattr(checkpoint.Checkpoint, "on_epoch_end", original)
    row, = rethink_tf.randomization_test(tiny_mlp, train, test, **kw)
    rec = results.read_json(row["results"])
    assert [r["step"] for r in rec["resumes"]] == [3] and len(rec["history"]) == 3


def test_user_data_dicts_float_images_and_100_classes(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (150, 5, 5)).astype(np.float32)  # float, no channel axis
    y = np.arange(150) % 100
    ds = tf.data.Dataset.from_tensor_slices({"pixels": x[:120], "cls": y[:120], "id": np.arange(120)})
    tds = tf.data.Dataset.from_tensor_slices({"pixels": x[120:], "cls": y[120:], "id": np.arange(30)})
    train, test, name = experiment.load_data(ds, tds, num_classes=100, image="pixels", label="cls")
    assert name.startswith("user:") and train.arrays["image"].shape == (120, 5, 5, 1)
    assert train.arrays["image"].dtype == np.float32 and train.spec.num_classes == 100
    np.testing.assert_array_equal(train.arrays["image"][..., 0], x[:120])  # taken in their own units
    again = experiment.load_data(ds.shuffle(120, seed=3), tds, num_classes=100, image="pixels", label="cls")[0]
    assert set(again.arrays["key"].tolist()) == set(train.arrays["key"].tolist())  # content keys: order-free
    cfg = DataConfig(dataset=name, corrupt="labels", corrupt_prob=0.5)
    d = pipeline.build(cfg, 10, 1, splits=(train, test))
    assert d.num_classes == 100 and d.input_shape == (5, 5, 1) and 0 < d.changed.mean() < 1
    labels = np.concatenate([yb for _, yb in d.train_eval.as_numpy_iterator()])
    assert labels.max() < 100 and (labels != y[:120]).mean() > 0.3
    xb, _ = next(d.test.as_numpy_iterator())
    np.testing.assert_allclose(xb.mean(axis=(1, 2, 3)), 0, atol=1e-5)  # per-image whitening, as for CIFAR-10


@pytest.mark.parametrize("call,match", [
    (dict(corruptions=("labels",)), "needs a probability"),
    (dict(corruptions=("noise",)), "unknown corruption 'noise'"),
    (dict(optimizer=keras.optimizers.SGD()), "function returning a fresh Keras optimizer"),
    (dict(optimizer=lambda: "sgd"), "not a keras.optimizers.Optimizer"),
    (dict(nonsense=1), "unknown option"),
    (dict(build_model=lambda shape, n: "a model"), "returned str, not a keras.Model"),
])
def test_randomization_test_bad_input_one_line(tmp_path, call, match):
    train, test, _, _ = _data()
    kw = dict(build_model=tiny_mlp, train=train, test=test, epochs=1, batch_size=16, workdir=str(tmp_path))
    kw.update(call)
    with pytest.raises(UserError, match=match) as e:
        rethink_tf.randomization_test(**kw)
    assert "\n" not in str(e.value)


class RethinkToy(tfds.core.GeneratorBasedBuilder):
    """A tfds image classification dataset prepared in the test, with non-default feature names."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
            "picture": tfds.features.Image(shape=(8, 8, 1)), "kind": tfds.features.ClassLabel(num_classes=4),
            "note": tfds.features.Text()}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(40, 0), "test": self._generate_examples(12, 1)}

    def _generate_examples(self, n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            yield i, {"picture": rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), "kind": int(i % 4), "note": "x"}


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("tfds"))
    RethinkToy(data_dir=data_dir).download_and_prepare()
    return data_dir


def test_tfds_plugin_dataset_trains_through_run(toy_dir, tmp_path):
    cfg = TrainConfig(model="mlp_1x512", epochs=2, batch_size=8, tensorboard=False,
                      data=DataConfig(dataset="tfds:rethink_toy", data_dir=toy_dir, corrupt="random_labels",
                                      image_feature="picture", label_feature="kind"))
    assert cfg.resolved().lr_decay_examples == 40  # the prepared train split's size x 1 epoch per decay
    r = results.read_json(run(cfg, str(tmp_path), verbose=0))
    assert r["corruption"]["train_size"] == 40 and r["corruption"]["test_size"] == 12
    assert r["metrics"]["trainable_parameters"] == 64 * 512 + 512 + 512 * 4 + 4
    assert r["corruption"]["train_labels"]["changed_fraction"] > 0.5


@pytest.mark.parametrize("kw,match", [
    (dict(image_feature="image"), "no image feature 'image' \\(features: kind, note, picture\\)"),
    (dict(image_feature="picture", label_feature="note"), "no class-label feature 'note'"),
])
def test_tfds_plugin_bad_features_one_line(toy_dir, kw, match):
    with pytest.raises(UserError, match=match):
        sources.load("tfds:rethink_toy", "train", data_dir=toy_dir, **kw)


def test_tfds_plugin_missing_or_unknown(tmp_path):
    with pytest.raises(UserError, match="tfds knows no such dataset"):
        sources.spec("tfds:no_such_dataset_xyz", str(tmp_path))
    with pytest.raises(UserError, match="is not prepared in .*tfds build mnist"):
        sources.spec("tfds:mnist", str(tmp_path))


def test_library_path_defines_no_absl_flags(tmp_path):
    """A user's absl program with its own --epochs flag can call randomization_test: the library path never
    imports the CLI module that defines the training flags."""
    import subprocess
    import sys

    code = f"""
import sys
from absl import flags
flags.DEFINE_integer("epochs", 3, "the user's own flag")
import keras, numpy as np, tensorflow as tf, rethink_tf
x = np.random.default_rng(0).integers(0, 256, (16, 4, 4, 1)).astype(np.uint8); y = np.arange(16) % 2
ds = tf.data.Dataset.from_tensor_slices((x, y))
def build(shape, n):
    i = keras.Input(shape)
    return keras.Model(i, keras.layers.Dense(n)(keras.layers.Flatten()(i)))
rows = rethink_tf.randomization_test(build, ds, ds, corruptions=("none",), epochs=1, batch_size=8,
                                     workdir={str(tmp_path)!r})
print("ROWS", len(rows), "rethink_tf.train" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert "ROWS 1 False" in proc.stdout, proc.stderr[-2000:]


def test_a_changed_architecture_is_a_new_run_not_the_old_models_results(tmp_path):
    train, test, _, _ = _data()

    def widths(width):
        def tiny(input_shape, num_classes):  # the same function name for both widths
            inputs = keras.Input(input_shape)
            x = keras.layers.Dense(width, activation="relu")(keras.layers.Flatten()(inputs))
            return keras.Model(inputs, keras.layers.Dense(num_classes)(x))
        return tiny

    kw = dict(corruptions=("none",), epochs=1, batch_size=16, workdir=str(tmp_path))
    wide = rethink_tf.randomization_test(widths(64), train, test, **kw)[0]["results"]
    narrow = rethink_tf.randomization_test(widths(32), train, test, **kw)[0]["results"]
    assert narrow != wide
    assert results.read_json(narrow)["metrics"]["trainable_parameters"] == 36 * 32 + 32 + 32 * 3 + 3
    assert results.read_json(wide)["metrics"]["trainable_parameters"] == 36 * 64 + 64 + 64 * 3 + 3
    keras.utils.clear_session()  # other layer names in a new session: still the same architecture, the same run
    assert rethink_tf.randomization_test(widths(64), train, test, **kw)[0]["results"] == wide
