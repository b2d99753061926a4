"""The run's checkpoint: save, restore, and the guard that never lets a diverged model overwrite a good one.

The checkpoint is ONE file, `checkpoint.weights.h5` (weights, BN statistics, optimizer slots and `iterations`),
replaced atomically at every epoch end and every `checkpoint_every_steps` steps. The position of a run is derived
from the restored `iterations`, so the checkpoint cannot disagree with itself; a resumed run replays the same
batches from that step on (the pipeline's order is a pure function of (seed, epoch)).

The finite-weights guard is the checkpoint's half of the one NaN policy (callbacks.StopOnDivergence is the other):
`save` looks at the weights themselves, not at a loop's logs, so it holds whichever loop calls it.
"""

import os

import keras
import numpy as np
import tensorflow as tf

CHECKPOINT = "checkpoint.weights.h5"


def weights_finite(model):
    """True when every weight of the model (trainable, BN statistics) is finite."""
    return all(np.isfinite(keras.ops.convert_to_numpy(v)).all() for v in model.weights)


def save_checkpoint(model, run_dir):
    """Weights + BN statistics + optimizer state (incl. `iterations`) in one file, replaced atomically.

    Returns False, writing nothing, when a weight is not finite: the previous checkpoint stays the run's last good
    state."""
    if not weights_finite(model):
        return False
    tmp = os.path.join(run_dir, ".tmp-" + CHECKPOINT)
    model.save_weights(tmp, overwrite=True)
    os.replace(tmp, os.path.join(run_dir, CHECKPOINT))
    return True


class Checkpoint(keras.callbacks.Callback):
    """Checkpoints at every epoch end and, with `every_steps`, every that many optimizer steps (an ImageNet epoch
    is hours long). Diverged weights are never saved (save_checkpoint's guard)."""

    def __init__(self, run_dir, steps_per_epoch, every_steps=None):
        super().__init__()
        self.run_dir, self.steps, self.every = run_dir, steps_per_epoch, every_steps
        self._epoch = 0
        self._last = 0
        self.first_step = 0  # first step of a partial (resumed) epoch, as EpochRecorder.first_step

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last = epoch * self.steps + self.first_step

    def on_train_batch_end(self, batch, logs=None):
        # `batch` counts from the start of this fit() epoch (a partial epoch starts at first_step); with
        # steps_per_execution > 1 it advances in strides, so "a multiple of every was crossed" is the test.
        step = self._epoch * self.steps + self.first_step + batch + 1
        crossed = self.every and step // self.every > self._last // self.every
        self._last = step
        if crossed and step % self.steps:
            save_checkpoint(self.model, self.run_dir)

    def on_epoch_end(self, epoch, logs=None):
        save_checkpoint(self.model, self.run_dir)


def restore(model, run_dir, strategy=None):
    """Loads the run's checkpoint into a compiled model; returns the optimizer step it holds (0: no checkpoint).

    The optimizer's slots are built inside the strategy's scope (they must be mirrored variables under
    MirroredStrategy) before loading (keras#19389).
    """
    path = os.path.join(run_dir, CHECKPOINT)
    if not os.path.exists(path):
        return 0
    with (strategy or tf.distribute.get_strategy()).scope():
        model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))
