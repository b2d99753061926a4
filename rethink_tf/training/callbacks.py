"""What a run records while it trains, as Keras callbacks that every loop calls at the same points.

* Per epoch (EpochRecorder): train loss/accuracy (running averages over the epoch, on the labels trained on),
  test loss/accuracy (clean labels, on the raw weights), the lr used at the epoch's first and last step, train-only
  images/s (total and per replica, first batch and validation excluded), streamed to history.jsonl; an optional
  stop once an epoch's training accuracy reaches a target.
* Divergence (StopOnDivergence): the one NaN policy. A non-finite running loss at a batch end or an epoch end stops
  training; the run then ends as "diverged" and the checkpoint keeps its last finite weights (checkpoint.py).
* Signals (StopOnSignal): SIGINT/SIGTERM end the run at the next batch end with a checkpoint and one line.
* Memorization (memorization_metrics): accuracy on the changed vs intact labels of a partially corrupted set, and
  (--per_example) every training example's prediction per epoch (rethink_tf.dynamics).
* "Time to overfit" (Fig. 1b, time_to_fit): the first epoch whose running training accuracy reaches the fit
  threshold (1.0: every example of that epoch was classified correctly when it was seen).
"""

import math
import os
import signal
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from rethink_tf import console, results
from rethink_tf.errors import Interrupted

_HISTORY_NAMES = {"loss": "train_loss", "accuracy": "train_accuracy", "top5_accuracy": "train_top5_accuracy",
                  "val_loss": "test_loss", "val_accuracy": "test_accuracy", "val_top5_accuracy": "test_top5_accuracy"}


class EpochRecorder(keras.callbacks.Callback):
    """Streams one history row per epoch; stops at the target training accuracy; warns on chance-level accuracy.

    images/s is train-only: it is timed from the end of an epoch's first batch (which carries the tf.function
    tracing of the first epoch) to the end of its last batch, so neither tracing nor the validation pass counts.
    `per_replica_images_per_s` divides by the replicas in sync.
    """

    CHANCE_CHECK_EPOCH = 10

    def __init__(self, run_dir, steps_per_epoch, batch_size, history, schedule, stop_at=None, num_classes=10,
                 replicas=1, epochs=None, print_lines=False, memorization=None, totals_restored=None):
        super().__init__()
        self.totals_restored = totals_restored  # () -> whether this epoch started from recorded running totals
        self.epochs, self.print_lines, self.memorization = epochs, print_lines, memorization
        self.run_dir, self.steps, self.batch, self.stop_at = run_dir, steps_per_epoch, batch_size, stop_at
        self.schedule, self.num_classes, self.replicas = schedule, num_classes, replicas
        self.history = list(history)
        self.first_step = 0  # > 0 for the partial epoch of a mid-epoch resume
        self._start = self._first = self._last = None
        self._began = None  # wall clock at this process's first epoch end, and the epochs done (the ETA)
        self._done = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._first, self._last = time.perf_counter(), None, None

    def on_train_batch_end(self, batch, logs=None):
        now = time.perf_counter()
        if self._first is None:
            self._first, self._first_batch = now, batch
        self._last, self._last_batch = now, batch

    def on_epoch_end(self, epoch, logs=None):
        ran = self.steps - self.first_step
        if self._first is not None and self._last_batch > self._first_batch:
            images_per_s = (self._last_batch - self._first_batch) * self.batch / (self._last - self._first)
        else:  # one execution per epoch: time it from the epoch's start (still without the validation pass)
            images_per_s = ran * self.batch / ((self._last or time.perf_counter()) - self._start)
        if logs is not None:  # the dict later callbacks see: TensorBoard then logs epoch_images_per_s too
            logs["images_per_s"] = images_per_s
        begin = epoch * self.steps + self.first_step
        end = (epoch + 1) * self.steps
        row = {"epoch": epoch + 1, "step": end, "seconds": round(time.perf_counter() - self._start, 3),
               "images_per_s": round(images_per_s, 1),
               "per_replica_images_per_s": round(images_per_s / self.replicas, 1),
               # the lr used for this epoch's first and last update (not the one after it)
               "lr": float(self.schedule(begin)), "lr_last": float(self.schedule(end - 1))}
        if self.first_step:
            row["resumed_at_step"] = begin
            # with the checkpoint's running totals the row's train metrics cover the whole epoch; without them
            # (a checkpoint of an older version) only steps begin..end
            row["running_totals_restored"] = bool(self.totals_restored and self.totals_restored())
        for k, v in (logs or {}).items():
            if k in _HISTORY_NAMES:
                row[_HISTORY_NAMES[k]] = float(v)
        if not math.isfinite(row.get("train_loss", 0.0)):
            # diverged weights: the argmax of NaN logits is backend-dependent (XLA and TF disagree, and the loops
            # stop after different numbers of NaN batches), so an accuracy measured now, test or the epoch's
            # running train accuracy, would be an artefact of the loop that ran, not a property of the model
            row.update({k: math.nan for k in row if k.startswith("test_") or k.endswith("accuracy")})
        if self.memorization is not None:
            extra = self.memorization(self.model, epoch + 1)
            row.update(extra)
            if logs is not None:
                logs.update(extra)  # TensorBoard: epoch_train_accuracy_changed / _intact
        self.history.append(row)
        results.append_history(self.run_dir, row)  # a diverged epoch is recorded too (StopOnDivergence stops it)
        self._done += 1
        if self._done == 1:
            self._began = time.perf_counter()  # the pace is timed from the first epoch's end: it carries the tracing
        if self.print_lines:
            eta = None
            if self.epochs and self.epochs > row["epoch"] and self._done > 1:
                eta = (time.perf_counter() - self._began) / (self._done - 1) * (self.epochs - row["epoch"])
            print(epoch_line(row, self.epochs, eta, at_most=self.stop_at is not None), flush=True)
        if self.stop_at is not None and row.get("train_accuracy", 0.0) >= self.stop_at:
            self.model.stop_training = True
        self._sanity(row)

    def _sanity(self, row):
        """Accuracy stuck at or below chance usually means a label or learning-rate bug: say so once."""
        chance = 1.0 / self.num_classes
        if row["epoch"] == self.CHANCE_CHECK_EPOCH and row.get("train_accuracy", 1.0) < 1.5 * chance:
            print(f"warning: training accuracy is still {row['train_accuracy']:.3f} after {row['epoch']} epochs "
                  f"(chance {chance:.3f}); check the labels and the learning rate (random labels can take many "
                  "epochs to start fitting)", flush=True)
        if row.get("test_accuracy", 1.0) < 0.5 * chance and row["epoch"] >= 2:
            print(f"warning: test accuracy {row['test_accuracy']:.3f} is far below chance ({chance:.3f}): "
                  "check that test labels are clean and in [0, num_classes)", flush=True)


def memorization_metrics(train_eval, changed, local=False, clean=None, save=None):
    """A function (model, epoch) -> {train_accuracy_changed, train_accuracy_intact[, train_predicts_clean_changed]}:
    the current model's accuracy on the (corrupted) labels trained on, separately over the examples whose label
    the corruption changed and those it left intact, and (given the `clean` labels) how many changed examples it
    still predicts by their original label. One pass over train_eval per epoch; it shows the order in which a
    network fits clean and noisy examples (Arpit et al. 2017 measure it; none of the paper's figures does).

    Args:
      train_eval: the training set in key order, unaugmented, with the labels trained on.
      changed: bool per example (None: no accuracy split, e.g. only `save` is wanted).
      local: predict with this worker's copy of the weights (multi-worker runs, where Keras' predict is not
        usable).
      clean: the original labels, in the same order.
      save: called as save(epoch, predicted classes) every epoch (--per_example: dynamics.save_epoch).
    """
    labels = np.concatenate([y for _, y in train_eval.as_numpy_iterator()])

    def measure(model, epoch):
        logits = (np.concatenate([local_predict(model)(x).numpy() for x, _ in train_eval]) if local
                  else model.predict(train_eval, verbose=0))
        predicted = np.argmax(logits, axis=-1)
        if save is not None:
            save(epoch, predicted)
        if changed is None:
            return {}
        right = predicted == labels
        out = {"train_accuracy_changed": float(right[changed].mean()),
               "train_accuracy_intact": float(right[~changed].mean())}
        if clean is not None:
            out["train_predicts_clean_changed"] = float(np.mean(predicted[changed] == clean[changed]))
        return out

    return measure


def epoch_line(row, epochs=None, eta=None, at_most=False):
    """One plain line per epoch (logs and pipes, and the strategy.run loop; a terminal under fit gets Keras' progress
    bar instead). `eta`: seconds left to the last epoch at this process's pace so far (`at_most`: the run may stop
    earlier, at its fit rule)."""
    parts = [f"epoch {row['epoch']}" + (f"/{epochs}" if epochs else "")]
    if "train_loss" in row:
        parts.append(f"train loss {row['train_loss']:.4f} acc {100 * row.get('train_accuracy', 0):.2f}%")
    if "test_loss" in row:
        parts.append(f"test loss {row['test_loss']:.4f} acc {100 * row.get('test_accuracy', 0):.2f}%")
    for key in row:  # --extra_test sets: "cifar10_1 acc 71.20%"
        if key.endswith("_test_accuracy") and key not in ("test_accuracy", "best_test_accuracy"):
            parts.append(f"{key[:-len('_test_accuracy')]} acc {100 * row[key]:.2f}%")
    if "train_accuracy_changed" in row:
        parts.append(f"fit changed {100 * row['train_accuracy_changed']:.1f}% / intact "
                     f"{100 * row['train_accuracy_intact']:.1f}%")
    parts += [f"lr {row['lr']:.3g}", f"{row['images_per_s']:,.0f} img/s", f"{row['seconds']:.1f} s"]
    if eta is not None:
        parts.append(f"ETA {'≤ ' if at_most else ''}{console.duration(eta)}")
    return " | ".join(parts)


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the first non-finite running loss, at a batch end or an epoch end; `diverged` says so.

    It replaces Keras' TerminateOnNaN so that the policy is one object with one outcome whatever loop calls it
    (Keras' fit or the strategy.run loop): the loop stops at its next batch boundary, still ends the epoch (the
    recorder writes the diverged row), and the run ends as "diverged". The checkpoint's own guard (checkpoint.py)
    keeps the last finite weights on disk.
    """

    def __init__(self):
        super().__init__()
        self.diverged = False

    def _check(self, logs):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged = True
            self.model.stop_training = True

    def on_train_batch_end(self, batch, logs=None):
        self._check(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._check(logs)


class StopOnSignal(keras.callbacks.Callback):
    """SIGINT (Ctrl-C) and SIGTERM (what Slurm and Kubernetes send before preemption) end the run at the next batch
    end with a checkpoint of that step, under either loop; the entry point then prints one line and exits 128 + the
    signal. A second signal while the first is pending exits at once, without a checkpoint.

    On a multi-host cluster (`agree`, see signal_agreement) the workers first agree, at every batch end and epoch
    end (points every worker reaches together), whether any of them has a signal pending: a preemption that
    reaches one worker stops all of them at the same step, with one checkpoint, instead of leaving the others
    waiting in a collective that never comes.

    Use as a context manager around training: the handlers are installed in the main thread only (elsewhere Python
    cannot) and the previous ones restored on exit.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, checkpoint, steps_per_epoch, enabled=True, agree=None):
        super().__init__()
        self.checkpoint, self.steps = checkpoint, steps_per_epoch  # the run's checkpoint.Checkpoint callback
        self.enabled = enabled
        self.agree = agree  # cluster: pending signal (or None) -> the signal any worker has pending (or None)
        self.requested = None
        self._previous = {}

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, exc_type, exc, tb):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}
        if self.requested is not None and exc_type is None:  # arrived after the last step (final validation)
            raise Interrupted(f"interrupted ({signal.Signals(self.requested).name}) after the last training step; "
                              "the final checkpoint is saved; rerun the same command to write the results",
                              self.requested)

    def _handle(self, signum, frame):
        if self.requested is not None:
            print(f"{signal.Signals(signum).name} again: exiting now, without a checkpoint", file=sys.stderr,
                  flush=True)
            os._exit(128 + signum)
        self.requested = signum

    def _pending(self):
        if self.agree is None:
            return self.requested
        # A collective: every worker calls it here. Most of a worker's time is spent waiting inside it, so a signal
        # often arrives during the call: its handler sets self.requested after the flags were sent. Assigning the
        # answer outright would erase that signal (measured: the cluster then trained to the end); keep it
        # pending for the next agreement instead, and act now only on what every worker agreed.
        agreed = self.agree(self.requested)
        if agreed is not None:
            self.requested = agreed
        return agreed

    def on_train_batch_end(self, batch, logs=None):
        if self._pending() is None:
            return
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        if step % self.steps == 0:
            return  # the epoch's last step: its row and checkpoint come at its end (on_epoch_end, below)
        self._stop(self.checkpoint.save(step), f"epoch {step // self.steps + 1}, step {step % self.steps} of "
                                               f"{self.steps}")

    def on_epoch_end(self, epoch, logs=None):  # after the recorder and the checkpoint of this epoch
        if self._pending() is not None:
            self._stop(self.checkpoint.last_saved, f"the end of epoch {epoch + 1}")

    def _stop(self, saved, where):
        signum, self.requested = self.requested, None
        raise Interrupted(f"interrupted ({signal.Signals(signum).name}) at {where}; "
                          + ("checkpoint saved; rerun the same command to resume" if saved else
                             "the weights were not finite, so the last good checkpoint stays; rerun the same command "
                             "to resume from it"), signum)


def signal_agreement(strategy):
    """The `agree` of StopOnSignal for a multi-worker strategy: an all-reduce of each worker's pending signal
    (counts of SIGINT and SIGTERM; collectives sum, they have no max), answering the signal any worker has pending,
    SIGTERM first (a preemption), or None."""
    import tensorflow as tf

    order = StopOnSignal.SIGNALS

    @tf.function  # compiled: an eager collective costs several ms per batch end (2 local workers)
    def total(flags):
        return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(lambda: tf.identity(flags)), axis=None)

    def agree(requested):
        flags = [1.0 if requested == s else 0.0 for s in order]
        counts = keras.ops.convert_to_numpy(total(tf.constant(flags)))
        pending = [s for s, n in zip(order, counts) if n > 0]
        return max(pending) if pending else None  # SIGTERM (15) before SIGINT (2)

    return agree


def time_to_fit(history, steps_per_epoch, threshold=1.0):
    """{"epochs": e, "steps": e × steps} of the first epoch whose training accuracy reached threshold, or Nones."""
    row = results.first_at_accuracy(history, threshold)
    return {"epochs": row and row["epoch"], "steps": row and row["epoch"] * steps_per_epoch}


def local_predict(model):
    """A compiled forward pass on this worker's copy of the weights (cross-replica reads: no collectives)."""
    fn = getattr(model, "_rethink_local_predict", None)
    if fn is None:
        fn = model._rethink_local_predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return fn
