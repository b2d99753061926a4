"""One loop contract: Keras' fit and the strategy.run loop give the same history, the same stop and the same
checkpoint, on a healthy run and on one that diverges mid-training."""

import json
import os

import h5py
import keras
import numpy as np
import pytest

from conftest import write_cifar_binary
from rethink_tf import results
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.errors import UserError
from rethink_tf.train import run
from rethink_tf.training import checkpoint

STEPS_PER_EPOCH = 5  # 40 training images, batch 8
BLOW_UP_STEP = 7  # the diverging run's learning rate jumps to inf at this update (epoch 2, its third step)


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar")
    write_cifar_binary(str(d), per_batch=8, test=16)
    return str(d)


@keras.saving.register_keras_serializable(package="rethink_tf_tests")
class JumpSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """0.01, then inf from update `at` on: a healthy start, then a sure divergence (the weights become inf/NaN in
    one update, the loss NaN at the next step)."""

    def __init__(self, at):
        self.at = at

    def __call__(self, step):
        return keras.ops.where(step < self.at, 0.01, float("inf"))

    def get_config(self):
        return {"at": self.at}


def _config(data_dir, diverge):
    return TrainConfig(model="mlp_1x512", data=DataConfig(dataset="cifar10", data_dir=data_dir), batch_size=8,
                       epochs=4, steps_per_execution=1, checkpoint_every_steps=2, tensorboard=False,
                       optimizer="sgd_jump" if diverge else None, learning_rate=None if diverge else 0.01)


def _train(data_dir, workdir, loop, diverge):
    cfg = _config(data_dir, diverge)
    optimizer = (lambda: keras.optimizers.SGD(JumpSchedule(BLOW_UP_STEP), momentum=0.9)) if diverge else None
    keras.utils.clear_session()
    try:
        run(cfg, str(workdir), verbose=0, loop=loop, optimizer=optimizer)
        status = "completed"
    except UserError as e:
        assert "training diverged" in str(e)
        status = "diverged"
    (run_dir,) = [os.path.join(workdir, d) for d in os.listdir(workdir)]
    with h5py.File(os.path.join(run_dir, checkpoint.CHECKPOINT)) as f:
        weights = []
        f.visititems(lambda name, obj: weights.append((name, obj[()]))
                     if isinstance(obj, h5py.Dataset) and name != checkpoint.STATE_DATASET else None)
    return status, results.read_history(run_dir), dict(weights), run_dir


@pytest.mark.parametrize("diverge", [False, True], ids=["healthy", "diverging"])
def test_fit_and_strategy_run_loops_keep_one_contract(cifar_dir, tmp_path, diverge):
    out = {loop: _train(cifar_dir, tmp_path / loop, loop, diverge) for loop in ("fit", "strategy_run")}
    (s_fit, h_fit, w_fit, dir_fit), (s_run, h_run, w_run, dir_run) = out["fit"], out["strategy_run"]

    # the same stop
    assert s_fit == s_run == ("diverged" if diverge else "completed")
    assert [r["epoch"] for r in h_fit] == [r["epoch"] for r in h_run]
    if diverge:  # stopped in the epoch that diverged: epoch 2 of 4, its row recorded with the non-finite loss
        assert [r["epoch"] for r in h_fit] == [1, 2]
        assert not np.isfinite(h_fit[-1]["train_loss"]) and not np.isfinite(h_run[-1]["train_loss"])
        assert os.path.exists(os.path.join(dir_fit, "diverged.json"))
        assert os.path.exists(os.path.join(dir_run, "diverged.json"))
    else:
        assert [r["epoch"] for r in h_fit] == [1, 2, 3, 4]
        assert (json.load(open(os.path.join(dir_fit, results.RESULTS)))["status"]
                == json.load(open(os.path.join(dir_run, results.RESULTS)))["status"] == "completed")

    # the same history (the epochs' running train metrics and the test evaluation)
    for a, b in zip(h_fit, h_run):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "lr", "lr_last", "step"):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6, err_msg=key)

    # the same checkpoint: finite, and for the diverging run the last finite state before the blow-up
    assert w_fit.keys() == w_run.keys()
    for name in w_fit:
        assert np.all(np.isfinite(w_fit[name])) and np.all(np.isfinite(w_run[name])), name
        np.testing.assert_allclose(w_fit[name], w_run[name], rtol=1e-5, atol=1e-6, err_msg=name)
    if diverge:  # saved every 2 steps: step 6 was the last finite state (step 8 held NaN and was refused)
        iterations = w_fit["optimizer/vars/0"]  # Keras saves the optimizer's `iterations` first
        assert int(np.ravel(iterations)[0]) == 6 < BLOW_UP_STEP
