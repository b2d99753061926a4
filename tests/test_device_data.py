"""--device_data (issue 21): the training set on the device, each step's batch made inside the compiled loop. It must
train on exactly the batches of the tf.data path: same examples in the same order, same labels, same crops, flips
and rotations, same whitening; so the same losses and weights, and the same after a kill and resume."""

import dataclasses
import json
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import write_cifar_binary
from rethink_tf import models
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.data import pipeline
from rethink_tf.errors import UserError
from rethink_tf.training import checkpoint
from rethink_tf.training.run import run


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar")
    write_cifar_binary(str(d), per_batch=8, test=16)  # 40 train, 16 test: 5 steps per epoch at batch 8
    return str(d)


@pytest.mark.parametrize("augmented", [True, False, "over_limit"])
@pytest.mark.parametrize("shard", [None, (1, 0, 4), (2, 1, 4), (2, 1, 2)])  # (2, 1, 2): 2 workers x 2 replicas
def test_the_device_batches_are_the_tf_data_batches(cifar_dir, shard, augmented, monkeypatch):
    # Without augmentation both paths gather from the set whitened once (the device path holds it as floats), so
    # this case checks the indices, order, sharding and labels; the whitening itself is checked by "over_limit"
    # (above MODEL_INPUT_LIMIT_BYTES both whiten each batch of uint8 images, the device path from the int32-packed
    # rows) and by tests/test_pipeline.py. Run eagerly on the host CPU here, the two must agree bit for bit (inside
    # a compiled step the device path's whitening may round differently: the training tests below compare to 1e-5)
    if augmented == "over_limit":
        monkeypatch.setattr(pipeline, "MODEL_INPUT_LIMIT_BYTES", 0)
        augmented = False
    cfg = DataConfig(dataset="cifar10", data_dir=cifar_dir, corrupt="labels", corrupt_prob=0.5, random_crop=augmented,
                     augment=augmented, shuffle_seed=3)
    d = pipeline.build(cfg, batch_size=8, epochs=3)
    src = d.device_source
    assert src.prepared == (not augmented and pipeline.MODEL_INPUT_LIMIT_BYTES > 0)
    arrays = [tf.constant(a) for a in src.arrays()]
    pieces = (8 // shard[0]) // shard[2] if shard else 1  # per-replica batches per worker's share of a batch
    for first_epoch, first_step in ((0, 0), (1, 2)):  # a fresh start and a mid-epoch resume
        want = list(d.train(first_epoch, first_step, shard=shard))  # per-replica batches, replica after replica
        got = []
        for epoch in range(first_epoch, 3):
            rows = src.rows(epoch, shard)
            assert rows.shape == (5, 8 // shard[0] if shard else 8) and rows.dtype == tf.int64
            for step in range(first_step if epoch == first_epoch else 0, 5):
                for replica in range(pieces):
                    idx = pipeline.replica_columns(rows, shard, replica)[step]
                    got.append(src.batch(*arrays, idx, tf.constant(epoch, tf.int64)))
        assert len(got) == len(want) == ((3 - first_epoch) * 5 - first_step) * pieces
        for (x1, y1), (x2, y2) in zip(want, got):
            np.testing.assert_array_equal(y1.numpy(), y2.numpy())
            np.testing.assert_allclose(x1.numpy(), x2.numpy(), rtol=0, atol=1e-6 if augmented else 0)


def _weights(workdir, name, model="small_inception_nobn"):
    m = models.build(model, (28, 28, 3), 10, width_multiplier=0.25 if model == "small_inception_nobn" else 1.0)
    m.load_weights(os.path.join(workdir, name, checkpoint.CHECKPOINT))
    return [w.numpy() for w in m.weights]


def test_device_data_trains_like_the_tf_data_path_and_resumes(cifar_dir, tmp_path):
    from test_train import _Kill, _KillAfter

    base = TrainConfig(model="small_inception_nobn", width=0.25, epochs=3, batch_size=8, tensorboard=False,
                       learning_rate=0.01, data=DataConfig(dataset="cifar10", data_dir=cifar_dir, random_crop=True,
                                                           augment=True, corrupt="labels", corrupt_prob=0.5))
    w = str(tmp_path)
    plain = json.load(open(run(dataclasses.replace(base, run_name="plain"), w, verbose=0)))
    dev_cfg = dataclasses.replace(base, device_data=True, run_name="device")
    assert dataclasses.replace(dev_cfg, run_name=None).name() == base.name()  # where batches are made, not what
    dev = json.load(open(run(dev_cfg, w, verbose=0)))
    assert (dev["env"]["loop"], plain["env"]["loop"]) == ("strategy_run", "fit")
    for a, b in zip(plain["history"], dev["history"]):
        for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["epoch"], k)
    for x, y in zip(_weights(w, "plain"), _weights(w, "device")):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)
    # killed after epoch 1, resumed with --device_data: the uninterrupted device-data run
    killed = dataclasses.replace(dev_cfg, run_name="killed")
    with pytest.raises(_Kill):
        run(killed, w, verbose=0, extra_callbacks=[_KillAfter(epoch=1)])
    resumed = json.load(open(run(killed, w, verbose=0)))
    assert resumed["resumes"][0]["step"] == 5
    for a, b in zip(dev["history"], resumed["history"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-6)
    for x, y in zip(_weights(w, "device"), _weights(w, "killed")):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-6)


def test_device_data_refusals(cifar_dir, tmp_path):
    cfg = TrainConfig(model="mlp_1x512", epochs=1, batch_size=8, tensorboard=False, device_data=True,
                      data=DataConfig(dataset="cifar10", data_dir=cifar_dir))
    with pytest.raises(UserError, match="strategy.run loop"):
        run(cfg, str(tmp_path), verbose=0, loop="fit")
    assert not os.listdir(str(tmp_path))


@pytest.mark.parametrize("over_limit", [False, True])
def test_device_data_with_label_smoothing_and_xla_on_one_device(cifar_dir, tmp_path, monkeypatch, over_limit):
    # mlp_1x512: XLA on by default on CPU; with --device_data XLA compiles the loop's whole call (its steps, their
    # gathers, the metric read), against Keras' fit on tf.data with each step XLA-compiled. Label smoothing: one-hot
    # labels in the step. over_limit: a set too large to hold whitened, so the compiled call unpacks and whitens
    # each batch (the plain run's --nodevice_data: with the set held whitened the default would be --device_data)
    if over_limit:
        monkeypatch.setattr(pipeline, "MODEL_INPUT_LIMIT_BYTES", 0)
    base = TrainConfig(model="mlp_1x512", epochs=2, batch_size=8, tensorboard=False, learning_rate=0.01,
                       label_smoothing=0.1, data=DataConfig(dataset="cifar10", data_dir=cifar_dir, corrupt="labels",
                                                            corrupt_prob=0.5))
    w = str(tmp_path)
    plain = json.load(open(run(dataclasses.replace(base, run_name="plain", device_data=False), w, verbose=0)))
    dev = json.load(open(run(dataclasses.replace(base, run_name="device", device_data=True), w, verbose=0)))
    assert (dev["env"]["loop"], dev["env"]["jit_scope"]) == ("strategy_run", "call")
    assert (plain["env"]["loop"], plain["env"]["jit_scope"]) == ("fit", "step")
    for a, b in zip(plain["history"], dev["history"]):
        for k in ("train_loss", "train_accuracy", "test_loss", "train_accuracy_changed"):
            assert a[k] == pytest.approx(b[k], rel=1e-5, abs=1e-6), (a["epoch"], k)
    for x, y in zip(_weights(w, "plain", "mlp_1x512"), _weights(w, "device", "mlp_1x512")):
        np.testing.assert_allclose(x, y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("augmented", [False, True])
def test_device_data_default_where_it_measured_faster(cifar_dir, monkeypatch, augmented):
    # The default: several replicas in the strategy.run loop, a set held whitened (no augmentation), at most
    # DEVICE_DATA_DEFAULT_LIMIT_BYTES on each device; the size it goes by is what the loop places there.
    from rethink_tf.training import loop

    d = pipeline.build(DataConfig(dataset="cifar10", data_dir=cifar_dir, random_crop=augmented, augment=augmented),
                       batch_size=8, epochs=1)
    held = sum(np.asarray(a).nbytes for a in d.device_source.arrays()[:1])
    assert d.device_source.nbytes == held == (40 * 28 * 28 * 3 * 4 if not augmented else 40 * 32 * 32 * 3)
    assert loop.device_data_default(2, d, "strategy_run") is (not augmented)
    assert loop.device_data_default(1, d, "strategy_run") is False
    assert loop.device_data_default(2, d, "fit") is False
    # one device: on where XLA compiles the loop's whole call (scope "call"), unless fit is asked for or on a cluster
    assert loop.device_data_default(1, d, None, jit_compile=True, scope="call") is (not augmented)
    assert loop.device_data_default(1, d, "strategy_run", jit_compile=True, scope="call") is (not augmented)
    assert loop.device_data_default(1, d, None, jit_compile=True, scope="step") is False
    assert loop.device_data_default(1, d, None, jit_compile=False, scope="call") is False
    assert loop.device_data_default(1, d, "fit", jit_compile=True, scope="call") is False
    assert loop.device_data_default(1, d, None, jit_compile=True, cluster=True, scope="call") is False
    monkeypatch.setattr(loop, "DEVICE_DATA_DEFAULT_LIMIT_BYTES", held - 1)
    assert loop.device_data_default(2, d, "strategy_run") is False
    assert loop.device_data_default(1, d, None, jit_compile=True, scope="call") is False


def test_what_xla_compiles(cifar_dir, tmp_path, monkeypatch):
    # (replicas, jit_compile, device_data, loop, cluster, --jit_scope) -> env.jit_scope
    from rethink_tf.training import loop

    cases = {(1, True, True, "strategy_run", False, "call"): "call",
             (1, True, True, "strategy_run", False, "step"): "step",
             (1, True, False, "strategy_run", False, "call"): "step", (1, True, False, "fit", False, "call"): "step",
             (1, True, True, "strategy_run", True, "call"): "step", (2, True, True, "strategy_run", False, "call"): None,
             (1, False, True, "strategy_run", False, "call"): None}
    for (replicas, jit, device_data, which, cluster, scope), want in cases.items():
        assert loop.jit_scope(replicas, jit, device_data, which, cluster, scope) == want
        assert loop.compiled_loop(replicas, jit, device_data, cluster, scope) is (want == "call")
    # the measured table: the MLPs' call compiled whole on CPU (faster), each step elsewhere; unmeasured -> step
    assert [models.jit_scope_default(m, "cpu") for m in ("mlp_1x512", "mlp_3x512", "small_alexnet",
                                                         "small_inception", "user.module:build")] == \
        ["call", "call", "step", "step", "step"]
    assert models.jit_scope_default("mlp_1x512", "gpu") == "step"
    # --jit_scope=call where the call cannot be compiled whole: one line, nothing written
    base = TrainConfig(model="mlp_1x512", epochs=1, batch_size=8, tensorboard=False, jit_scope="call",
                       data=DataConfig(dataset="cifar10", data_dir=cifar_dir))
    for cfg in (dataclasses.replace(base, device_data=False), dataclasses.replace(base, jit_compile=False)):
        with pytest.raises(UserError, match="--jit_scope=call"):
            run(cfg, str(tmp_path), verbose=0)
    with pytest.raises(UserError, match="--jit_scope=call"):
        run(base, str(tmp_path), verbose=0, loop="fit")
    assert not os.listdir(str(tmp_path))
    with pytest.raises(UserError, match="--jit_scope must be"):
        run(dataclasses.replace(base, jit_scope="whole"), str(tmp_path), verbose=0)
    assert not os.listdir(str(tmp_path))
    # What the loop really hands XLA: the jit_compile of every tf.function training/loop.py makes (the loop's call,
    # the per-step wrapper; None for the metric read), against what env.jit_scope says
    real, made = tf.function, []

    def spy(*args, **kwargs):
        if sys._getframe(1).f_code.co_filename.endswith(os.path.join("training", "loop.py")):
            made.append(kwargs.get("jit_compile"))
        return real(*args, **kwargs)

    monkeypatch.setattr(tf, "function", spy)

    def env(cfg, name):
        made.clear()
        r = json.load(open(run(dataclasses.replace(cfg, run_name=name), str(tmp_path), verbose=0)))
        return (r["env"]["jit_scope"], r["env"]["loop"], r["env"]["device_data"]), [m for m in made if m is not None]

    # the MLP's default: the whole call compiled (one tf.function, jit_compile=True), --device_data its default
    assert env(dataclasses.replace(base, jit_scope=None), "default") == (("call", "strategy_run", True), [True])
    # asked for on an augmented set (not held whitened): --device_data becomes its default too
    augmented = dataclasses.replace(base, data=dataclasses.replace(base.data, random_crop=True, augment=True))
    assert env(augmented, "augmented") == (("call", "strategy_run", True), [True])
    # each step in the strategy.run loop: the step compiled, the call not
    assert env(dataclasses.replace(base, jit_scope="step", device_data=True), "step") == \
        (("step", "strategy_run", True), [True, False])
    # --jit_scope=step, defaults otherwise: Keras' fit on tf.data, each step compiled by Keras (not this module)
    assert env(dataclasses.replace(base, jit_scope="step"), "fit") == (("step", "fit", False), [])


def test_a_finished_device_data_run_leaves_no_copy_of_the_set_alive(cifar_dir, tmp_path):
    # Runs in one process (a sweep, randomization_test) must not pile up copies of the training set on the
    # devices: a traced loop that captured the placed arrays kept one alive per run (measured: +190 MB per
    # Fashion-MNIST run), so the arrays go into the compiled loop as arguments.
    import gc

    from tensorflow.python.framework import ops

    def held():  # live tensors shaped like this run's whitened training set (24 examples: no other test's)
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, ops.EagerTensor) and o.shape == (24, 28, 28, 3))

    before = held()
    for name in ("a", "b"):
        cfg = TrainConfig(model="mlp_1x512", epochs=1, batch_size=8, tensorboard=False, device_data=True, run_name=name,
                          data=DataConfig(dataset="cifar10", data_dir=cifar_dir, train_examples=24))
        run(cfg, str(tmp_path), verbose=0)
    assert held() == before
