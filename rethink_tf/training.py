"""Optimizer, schedule, callbacks and the fit/evaluate loop of one run (PAPER.md §4; REQUIREMENTS.md 10-20).

* SGD with momentum 0.9 (Appendix A) and a staircase exponential decay, lr = lr0 · decay^floor(step / period), with
  the period given in *examples seen*: the full training set (one epoch) by default, so a full run decays "0.95 per
  training epoch" exactly as the paper says while a subset run keeps the paper's per-step schedule.
* Weight decay is in the models (TF l2_loss semantics, through momentum); the optimizer's decoupled `weight_decay`
  is never used.
* Per epoch: train loss/accuracy (running averages over the epoch, on the labels trained on), test loss/accuracy
  (clean labels), lr, images/s, streamed to history.jsonl; a checkpoint (weights + optimizer state) written
  atomically, from which a killed run resumes with the same data order (the pipeline is seeded per epoch).
* "Time to overfit" (Fig. 1b): the first epoch whose running training accuracy is 100%, i.e. every example of that
  epoch was classified correctly when it was seen; `steps_to_fit` is that epoch × steps per epoch.
* At the end a fixed-model evaluation on train_eval (the corrupted labels, no augmentation) and on test.
"""

import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from rethink_tf import results
from rethink_tf.errors import UserError

CHECKPOINT, STATE = "checkpoint.weights.h5", "checkpoint_state.json"


def steps_per_decay(lr_decay_examples, batch_size):
    """Optimizer steps per LR decay period: ceil(examples / batch), e.g. 50,000 / 128 -> 391."""
    return max(1, math.ceil(lr_decay_examples / batch_size))


def make_optimizer(cfg):
    """The optimizer of a resolved TrainConfig, with its staircase exponential-decay schedule."""
    schedule = keras.optimizers.schedules.ExponentialDecay(
        cfg.learning_rate, decay_steps=steps_per_decay(cfg.lr_decay_examples, cfg.batch_size),
        decay_rate=cfg.lr_decay, staircase=True)
    if cfg.optimizer == "sgd":
        return keras.optimizers.SGD(schedule, momentum=cfg.momentum)
    if cfg.optimizer == "rmsprop":  # the TF inception package: decay 0.9, momentum 0.9, epsilon 1.0
        return keras.optimizers.RMSprop(schedule, rho=0.9, momentum=cfg.momentum, epsilon=1.0)
    raise UserError(f"unknown optimizer {cfg.optimizer!r}; use sgd or rmsprop")


def compile_model(model, cfg, num_classes, num_replicas):
    """Compiles with cross-entropy on logits; one-hot labels when label smoothing is on; top-5 for ImageNet."""
    if cfg.label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing)
        metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
        if num_classes >= 100:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
        if num_classes >= 100:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    jit = bool(cfg.jit_compile) and num_replicas == 1  # XLA off under multi-replica strategies (REQUIREMENTS 15)
    model.compile(optimizer=make_optimizer(cfg), loss=loss, metrics=metrics, jit_compile=jit)
    return jit


def one_hot_labels(ds, num_classes):
    return ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)


class EpochRecorder(keras.callbacks.Callback):
    """Streams one history row per epoch and tracks time-to-fit and the cumulative best test accuracy."""

    CHANCE_CHECK_EPOCH = 10

    def __init__(self, run_dir, steps_per_epoch, batch_size, history, stop_at=None, num_classes=10):
        super().__init__()
        self.run_dir, self.steps, self.batch, self.stop_at = run_dir, steps_per_epoch, batch_size, stop_at
        self.num_classes = num_classes
        self.history = list(history)
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        images_per_s = self.steps * self.batch / seconds
        if logs is not None:  # the dict later callbacks see: TensorBoard then logs epoch_images_per_s too
            logs["images_per_s"] = images_per_s
        row = {"epoch": epoch + 1, "step": (epoch + 1) * self.steps, "seconds": round(seconds, 3),
               "images_per_s": round(images_per_s, 1),
               "lr": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))}
        for k, v in (logs or {}).items():
            name = {"loss": "train_loss", "accuracy": "train_accuracy", "top5_accuracy": "train_top5_accuracy",
                    "val_loss": "test_loss", "val_accuracy": "test_accuracy",
                    "val_top5_accuracy": "test_top5_accuracy"}.get(k)
            if name:
                row[name] = float(v)
        self.history.append(row)
        results.append_history(self.run_dir, row)  # a NaN loss is stopped by TerminateOnNaN, always in the list
        if self.stop_at is not None and row.get("train_accuracy", 0.0) >= self.stop_at:
            self.model.stop_training = True
        self._sanity(row)

    def _sanity(self, row):
        """REQUIREMENTS.md 5: accuracy stuck at or below chance usually means a label or learning-rate bug."""
        chance = 1.0 / self.num_classes
        if row["epoch"] == self.CHANCE_CHECK_EPOCH and row.get("train_accuracy", 1.0) < 1.5 * chance:
            print(f"warning: training accuracy is still {row['train_accuracy']:.3f} after {row['epoch']} epochs "
                  f"(chance {chance:.3f}); check the labels and the learning rate (random labels can take many "
                  "epochs to start fitting)", flush=True)
        if row.get("test_accuracy", 1.0) < 0.5 * chance and row["epoch"] >= 2:
            print(f"warning: test accuracy {row['test_accuracy']:.3f} is far below chance ({chance:.3f}): "
                  "check that test labels are clean and in [0, num_classes)", flush=True)


class Checkpoint(keras.callbacks.Callback):
    """Weights + optimizer state + the epoch count after every epoch, written atomically (REQUIREMENTS.md 19)."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch, logs=None):
        if logs and not np.isfinite(logs.get("loss", 0.0)):
            return  # never checkpoint a diverged model
        tmp = os.path.join(self.run_dir, ".tmp-" + CHECKPOINT)
        self.model.save_weights(tmp, overwrite=True)
        os.replace(tmp, os.path.join(self.run_dir, CHECKPOINT))
        results.write_json(os.path.join(self.run_dir, STATE), {"epoch": epoch + 1})


def restore(model, run_dir):
    """Loads the last checkpoint of run_dir into a compiled model; returns the epoch to resume from (0: none)."""
    state_path = os.path.join(run_dir, STATE)
    if not os.path.exists(state_path):
        return 0
    model.optimizer.build(model.trainable_variables)  # slots must exist before loading (keras#19389)
    model.load_weights(os.path.join(run_dir, CHECKPOINT))
    return int(results.read_json(state_path)["epoch"])


def fit_and_evaluate(model, cfg, datasets, run_dir, *, initial_epoch=0, history=(), extra_callbacks=(), verbose=1):
    """Trains from initial_epoch to cfg.epochs, then evaluates the final model on train_eval and test.

    Returns:
      (metrics dict, history list, status) with status "completed", "stopped_at_train_accuracy" or "diverged".
    """
    smoothing = bool(cfg.label_smoothing)
    wrap = (lambda ds: one_hot_labels(ds, datasets.num_classes)) if smoothing else (lambda ds: ds)
    recorder = EpochRecorder(run_dir, datasets.steps_per_epoch, cfg.batch_size, history, cfg.stop_at_train_accuracy,
                             datasets.num_classes)
    callbacks = [recorder, Checkpoint(run_dir)]
    if cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False,
                                                     profile_batch=0))
    callbacks += [keras.callbacks.TerminateOnNaN(), *extra_callbacks]
    if initial_epoch < cfg.epochs:
        model.fit(wrap(datasets.train(initial_epoch)), epochs=cfg.epochs, initial_epoch=initial_epoch,
                  steps_per_epoch=datasets.steps_per_epoch, validation_data=wrap(datasets.test),
                  callbacks=callbacks, verbose=verbose, shuffle=False)
    hist = recorder.history
    status = "completed"
    if hist and not np.isfinite(hist[-1].get("train_loss", 0.0)):
        status = "diverged"
    elif cfg.stop_at_train_accuracy is not None and hist and hist[-1].get("train_accuracy", 0) >= cfg.stop_at_train_accuracy \
            and hist[-1]["epoch"] < cfg.epochs:
        status = "stopped_at_train_accuracy"
    metrics = {}
    for split, ds in (("train", datasets.train_eval), ("test", datasets.test)):
        ev = model.evaluate(wrap(ds), verbose=0, return_dict=True)
        metrics[f"{split}_loss"] = float(ev["loss"])
        metrics[f"{split}_accuracy"] = float(ev["accuracy"])
        if "top5_accuracy" in ev:
            metrics[f"{split}_top5_accuracy"] = float(ev["top5_accuracy"])
    fit = results.first_at_accuracy(hist, 1.0)
    metrics["epochs_to_fit"] = fit and fit["epoch"]
    metrics["steps_to_fit"] = fit and fit["step"]
    test_accs = [h["test_accuracy"] for h in hist if "test_accuracy" in h]
    metrics["best_test_accuracy"] = max(test_accs) if test_accs else metrics["test_accuracy"]
    metrics["epochs_trained"] = hist[-1]["epoch"] if hist else 0
    metrics["steps_trained"] = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    metrics["final_lr"] = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    return metrics, hist, status
