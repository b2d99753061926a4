"""Optimizer, schedule, callbacks, checkpoints and the fit/evaluate loop of one run (PAPER.md §4; REQUIREMENTS.md 10-20).

* SGD with momentum 0.9 (Appendix A) and a staircase exponential decay, lr = lr0 · decay^floor(step / period).
  The period is given in *examples seen* and turned into steps with the floor, as the TF CIFAR-10 code of the
  paper's era does (`decay_steps = int(50000 / 128 * epochs_per_decay)` = 390): with `drop_remainder` an epoch is
  also 390 steps, so decay k falls exactly at the start of epoch k+1, "0.95 per training epoch".
* Weight decay is in the models (TF l2_loss semantics, through momentum); the optimizer's decoupled `weight_decay`
  is never used. `ema_decay` keeps a moving average of the trainable weights inside the optimizer (the TF
  inception package evaluates a 0.9999 average); it never overwrites the trained weights.
* Per epoch: train loss/accuracy (running averages over the epoch, on the labels trained on), test loss/accuracy
  (clean labels, on the raw weights), the lr used at the epoch's first and last step, train-only images/s (total and
  per replica, first batch and validation excluded), streamed to history.jsonl.
* The checkpoint is ONE file, `checkpoint.weights.h5` (weights, BN statistics, optimizer slots and `iterations`),
  replaced atomically at every epoch end and every `checkpoint_every_steps` steps. The position of a run is derived
  from the restored `iterations`, so the checkpoint cannot disagree with itself; a resumed run replays the same
  batches from that step on (the pipeline's order is a pure function of (seed, epoch)).
* "Time to overfit" (Fig. 1b): the first epoch whose running training accuracy reaches the fit threshold (1.0: every
  example of that epoch was classified correctly when it was seen); results record 0.99, 0.999 and 1.0.
* At the end a fixed-model evaluation on train_eval (the corrupted labels, no augmentation) and on test, on the EMA
  weights when `ema_decay` is set (the raw-weight numbers are kept beside them).
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from rethink_tf import results
from rethink_tf.errors import UserError

CHECKPOINT = "checkpoint.weights.h5"


def steps_per_decay(lr_decay_examples, batch_size):
    """Optimizer steps per LR decay period: floor(examples / batch), e.g. 50,000 / 128 -> 390 (TF's int())."""
    return max(1, lr_decay_examples // batch_size)


def make_schedule(cfg):
    """The staircase exponential decay of a resolved TrainConfig: a function of the optimizer step."""
    return keras.optimizers.schedules.ExponentialDecay(
        cfg.learning_rate, decay_steps=steps_per_decay(cfg.lr_decay_examples, cfg.batch_size),
        decay_rate=cfg.lr_decay, staircase=True)


def make_optimizer(cfg):
    """The optimizer of a resolved TrainConfig, with its schedule and, if asked, a weight moving average."""
    ema = {"use_ema": True, "ema_momentum": cfg.ema_decay} if cfg.ema_decay else {}
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(make_schedule(cfg), momentum=cfg.momentum, **ema)
    elif cfg.optimizer == "rmsprop":  # the TF inception package: decay 0.9, momentum 0.9, epsilon 1.0
        opt = keras.optimizers.RMSprop(make_schedule(cfg), rho=0.9, momentum=cfg.momentum, epsilon=1.0, **ema)
    else:
        raise UserError(f"unknown optimizer {cfg.optimizer!r}; use sgd or rmsprop")
    if cfg.ema_decay:
        # Keras' fit() ends by overwriting the weights with the average (finalize_variable_values). That would
        # corrupt a run trained in two fit() calls (a mid-epoch resume) and the checkpoint; we swap explicitly
        # for evaluation instead (ema_weights).
        opt.finalize_variable_values = lambda var_list: None
    return opt


def lr_schedule(optimizer):
    """step -> the learning rate a compiled optimizer uses at that step: its schedule (the recipe's staircase
    decay, or a user's), or its constant rate."""
    lr = optimizer._learning_rate  # Keras 3 keeps the schedule here; .learning_rate evaluates it at `iterations`
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return lr
    value = float(keras.ops.convert_to_numpy(lr))
    return lambda step: value


MAX_STEPS_PER_EXECUTION = 32


def steps_per_execution(steps, wanted=None):
    """The steps per compiled call for an epoch of `steps`: a divisor of it (Keras runs whole executions, so a
    non-divisor would train past the epoch's end), the largest one <= wanted (default MAX_STEPS_PER_EXECUTION)."""
    cap = min(wanted or MAX_STEPS_PER_EXECUTION, steps)
    return max(d for d in range(1, cap + 1) if steps % d == 0)


def compile_model(model, cfg, num_classes, num_replicas, steps_per_epoch=1, optimizer=None):
    """Compiles with cross-entropy on logits; one-hot labels when label smoothing is on; top-5 for ImageNet.
    `optimizer` (a user's Keras optimizer) replaces the recipe's."""
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
    # Keras 3.15's multi-step function fails under MirroredStrategy ("You must feed a value for placeholder tensor
    # .../while/cond/Placeholder", measured on 2 logical CPUs): one step per call with several replicas.
    spe = 1 if num_replicas > 1 else steps_per_execution(steps_per_epoch, cfg.steps_per_execution)
    model.compile(optimizer=optimizer or make_optimizer(cfg), loss=loss, metrics=metrics, jit_compile=jit, steps_per_execution=spe)
    return jit


def one_hot_labels(ds, num_classes):
    return ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)


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
                 replicas=1, epochs=None, print_lines=False, memorization=None):
        super().__init__()
        self.epochs, self.print_lines, self.memorization = epochs, print_lines, memorization
        self.run_dir, self.steps, self.batch, self.stop_at = run_dir, steps_per_epoch, batch_size, stop_at
        self.schedule, self.num_classes, self.replicas = schedule, num_classes, replicas
        self.history = list(history)
        self.first_step = 0  # > 0 for the partial epoch of a mid-epoch resume
        self._start = self._first = self._last = None

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
            row["resumed_at_step"] = begin  # running metrics of this row cover steps begin..end only
        for k, v in (logs or {}).items():
            if k in _HISTORY_NAMES:
                row[_HISTORY_NAMES[k]] = float(v)
        if self.memorization is not None:
            extra = self.memorization(self.model)
            row.update(extra)
            if logs is not None:
                logs.update(extra)  # TensorBoard: epoch_train_accuracy_changed / _intact
        self.history.append(row)
        results.append_history(self.run_dir, row)  # a NaN loss is stopped by TerminateOnNaN, always in the list
        if self.print_lines:
            print(epoch_line(row, self.epochs), flush=True)
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


def memorization_metrics(train_eval, changed, local=False):
    """A function model -> {train_accuracy_changed, train_accuracy_intact}: the current model's accuracy on the
    (corrupted) labels trained on, separately over the examples whose label the corruption changed and those it
    left intact. One pass over train_eval per epoch; it shows the order in which a network fits clean and noisy
    examples (issue 11; none of the paper's figures does). `local`: predict with this worker's copy of the
    weights (multi-worker runs, where Keras' predict is not usable).
    """
    labels = np.concatenate([y for _, y in train_eval.as_numpy_iterator()])

    def measure(model):
        logits = (np.concatenate([_local_predict(model)(x).numpy() for x, _ in train_eval]) if local
                  else model.predict(train_eval, verbose=0))
        right = np.argmax(logits, axis=-1) == labels
        return {"train_accuracy_changed": float(right[changed].mean()),
                "train_accuracy_intact": float(right[~changed].mean())}

    return measure


def epoch_line(row, epochs=None):
    """One plain line per epoch (logs and pipes; a terminal gets Keras' progress bar instead)."""
    parts = [f"epoch {row['epoch']}" + (f"/{epochs}" if epochs else "")]
    if "train_loss" in row:
        parts.append(f"train loss {row['train_loss']:.4f} acc {100 * row.get('train_accuracy', 0):.2f}%")
    if "test_loss" in row:
        parts.append(f"test loss {row['test_loss']:.4f} acc {100 * row.get('test_accuracy', 0):.2f}%")
    if "train_accuracy_changed" in row:
        parts.append(f"fit changed {100 * row['train_accuracy_changed']:.1f}% / intact "
                     f"{100 * row['train_accuracy_intact']:.1f}%")
    parts += [f"lr {row['lr']:.3g}", f"{row['images_per_s']:,.0f} img/s", f"{row['seconds']:.1f} s"]
    return " | ".join(parts)


def save_checkpoint(model, run_dir):
    """Weights + BN statistics + optimizer state (incl. `iterations`) in one file, replaced atomically."""
    tmp = os.path.join(run_dir, ".tmp-" + CHECKPOINT)
    model.save_weights(tmp, overwrite=True)
    os.replace(tmp, os.path.join(run_dir, CHECKPOINT))


class Checkpoint(keras.callbacks.Callback):
    """Checkpoints at every epoch end and, with `every_steps`, every that many optimizer steps (REQUIREMENTS 19)."""

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
            if logs and "loss" in logs and not np.isfinite(float(logs["loss"])):
                return
            save_checkpoint(self.model, self.run_dir)

    def on_epoch_end(self, epoch, logs=None):
        if logs and not np.isfinite(logs.get("loss", 0.0)):
            return  # never checkpoint a diverged model
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


class ema_weights:  # noqa: N801 (a context manager used as `with ema_weights(model):`)
    """Within the block the model's trainable weights are the optimizer's moving averages (no-op without EMA)."""

    def __init__(self, model):
        self.opt, self.saved = model.optimizer, None

    def __enter__(self):
        if getattr(self.opt, "use_ema", False):
            self.saved = [v.numpy() for v in self.opt._trainable_variables]
            for v, avg in zip(self.opt._trainable_variables, self.opt._model_variables_moving_average):
                v.assign(avg)

    def __exit__(self, *exc):
        if self.saved is not None:
            for v, value in zip(self.opt._trainable_variables, self.saved):
                v.assign(value)


def time_to_fit(history, steps_per_epoch, threshold=1.0):
    """{"epochs": e, "steps": e × steps} of the first epoch whose training accuracy reached threshold, or Nones."""
    row = results.first_at_accuracy(history, threshold)
    return {"epochs": row and row["epoch"], "steps": row and row["epoch"] * steps_per_epoch}


def fit_and_evaluate(model, cfg, datasets, run_dir, *, initial_step=0, history=(), extra_callbacks=(), verbose=1,
                     replicas=1, strategy=None):
    """Trains from optimizer step `initial_step` to the end of cfg.epochs, then evaluates the final model.

    A mid-epoch start (a resume from a `checkpoint_every_steps` checkpoint) first runs the rest of that epoch,
    with exactly the batches an uninterrupted run would see there, then the following epochs. With a multi-worker
    `strategy` the epochs run in fit_distributed (Keras' fit fails there, keras#20585) with the same callbacks,
    and the evaluations in evaluate_local.

    Returns:
      (metrics dict, history list, status) with status "completed", "stopped_at_train_accuracy" or "diverged".
    """
    smoothing = bool(cfg.label_smoothing)
    wrap = (lambda ds: one_hot_labels(ds, datasets.num_classes)) if smoothing else (lambda ds: ds)
    steps = datasets.steps_per_epoch
    schedule = lr_schedule(model.optimizer)
    memorization = None
    if getattr(datasets, "changed", None) is not None and datasets.changed.any() and (~datasets.changed).any():
        memorization = memorization_metrics(datasets.train_eval, datasets.changed, local=strategy is not None)
    recorder = EpochRecorder(run_dir, steps, cfg.batch_size, history, schedule, cfg.stop_at_train_accuracy,
                             datasets.num_classes, replicas, epochs=cfg.epochs, print_lines=verbose == 2,
                             memorization=memorization)
    checkpoint = Checkpoint(run_dir, steps, cfg.checkpoint_every_steps)
    callbacks = [recorder, checkpoint]
    if cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False,
                                                     profile_batch=0))
    callbacks += [keras.callbacks.TerminateOnNaN(), *extra_callbacks]
    epoch, offset = divmod(initial_step, steps)
    fit = dict(validation_data=wrap(datasets.test), callbacks=callbacks, verbose=1 if verbose == 1 else 0,
               shuffle=False)
    if strategy is not None:
        fit_distributed(model, strategy, datasets, wrap, callbacks, epoch, offset, cfg.epochs, cfg.batch_size,
                        cfg.label_smoothing, (recorder, checkpoint), cfg.steps_per_execution)
        epoch = cfg.epochs
    if offset and epoch < cfg.epochs:  # the rest of a partly trained epoch
        recorder.first_step = checkpoint.first_step = offset
        full_spe = model.steps_per_execution
        model.steps_per_execution, model.train_function = steps_per_execution(steps - offset, full_spe), None
        model.fit(wrap(datasets.train(epoch, offset)), epochs=epoch + 1, initial_epoch=epoch,
                  steps_per_epoch=steps - offset, **fit)
        model.steps_per_execution, model.train_function = full_spe, None  # retrace for whole epochs
        recorder.first_step = checkpoint.first_step = 0
        epoch += 1
    if epoch < cfg.epochs and not model.stop_training:
        model.fit(wrap(datasets.train(epoch)), epochs=cfg.epochs, initial_epoch=epoch, steps_per_epoch=steps, **fit)
    hist = recorder.history
    status = "completed"
    if hist and not np.isfinite(hist[-1].get("train_loss", 0.0)):
        status = "diverged"
    elif cfg.stop_at_train_accuracy is not None and hist and hist[-1].get("train_accuracy", 0) >= cfg.stop_at_train_accuracy \
            and hist[-1]["epoch"] < cfg.epochs:
        status = "stopped_at_train_accuracy"

    def evaluate():
        out = {}
        for split, ds in (("train", datasets.train_eval), ("test", datasets.test)):
            ev = (evaluate_local(model, wrap(ds), cfg.label_smoothing) if strategy is not None
                  else model.evaluate(wrap(ds), verbose=0, return_dict=True))
            out[f"{split}_loss"] = float(ev["loss"])
            out[f"{split}_accuracy"] = float(ev["accuracy"])
            if "top5_accuracy" in ev:
                out[f"{split}_top5_accuracy"] = float(ev["top5_accuracy"])
        return out

    metrics = evaluate()
    if cfg.ema_decay:
        raw = metrics
        with ema_weights(model):
            metrics = {**evaluate(), "raw_weights": raw, "evaluated_weights": "ema"}
    else:
        metrics["evaluated_weights"] = "raw"
    fitted = time_to_fit(hist, steps, cfg.fit_threshold)
    metrics["fit_threshold"] = cfg.fit_threshold
    metrics["epochs_to_fit"], metrics["steps_to_fit"] = fitted["epochs"], fitted["steps"]
    for t in results.FIT_THRESHOLDS:
        metrics.setdefault("steps_to_accuracy", {})[f"{t:g}"] = time_to_fit(hist, steps, t)["steps"]
    test_accs = [h["test_accuracy"] for h in hist if "test_accuracy" in h]
    metrics["best_test_accuracy"] = max(test_accs) if test_accs else metrics["test_accuracy"]
    metrics["history_test_weights"] = "raw"  # per-epoch test accuracies are always on the trained weights
    metrics["epochs_trained"] = hist[-1]["epoch"] if hist else 0
    metrics["steps_trained"] = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    metrics["final_lr"] = float(schedule(max(metrics["steps_trained"] - 1, 0)))  # the lr of the last update
    return metrics, hist, status


def _local_predict(model):
    """A compiled forward pass on this worker's copy of the weights (cross-replica reads: no collectives)."""
    fn = getattr(model, "_rethink_local_predict", None)
    if fn is None:
        fn = model._rethink_local_predict = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    return fn


def evaluate_local(model, dataset, label_smoothing=None):
    """{loss, accuracy[, top5_accuracy]} of `dataset` on this worker's copy of the weights, as Keras' evaluate
    reports them (mean cross-entropy on logits plus the regularization losses). Under MultiWorkerMirroredStrategy
    every worker evaluates the whole set itself: no collectives (Keras' distributed evaluate hits keras#20585
    too), identical numbers on every worker, at the cost of repeating the work per worker."""
    predict = _local_predict(model)
    total = correct = top5 = 0.0
    count = 0
    num_classes = None
    for x, y in dataset:
        logits = tf.cast(predict(x), tf.float32)
        num_classes = logits.shape[-1]
        if y.shape.rank == 2:  # one-hot (label smoothing)
            loss = keras.losses.categorical_crossentropy(y, logits, from_logits=True,
                                                         label_smoothing=label_smoothing or 0.0)
            y = tf.argmax(y, axis=-1)
        else:
            loss = keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
        y = tf.cast(y, tf.int64)
        total += float(tf.reduce_sum(loss))
        correct += float(tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), y), tf.float32)))
        if num_classes >= 100:
            top5 += float(tf.reduce_sum(tf.cast(tf.math.in_top_k(y, logits, 5), tf.float32)))
        count += int(y.shape[0])
    regularization = float(sum(keras.ops.convert_to_numpy(v) for v in model.losses)) if model.losses else 0.0
    out = {"loss": total / count + regularization, "accuracy": correct / count}
    if num_classes and num_classes >= 100:
        out["top5_accuracy"] = top5 / count
    return out


def _distributed_epoch(model, strategy, datasets, wrap, cbs, train_steps, epoch, start, batch_size, label_smoothing,
                       partial, steps_per_call=None):
    """One epoch of fit_distributed from step `start`; every collective (metric resets and reads, steps) inside."""
    for cb in partial:
        cb.first_step = start
    dist = strategy.distribute_datasets_from_function(
        lambda ctx: wrap(datasets.train(epoch, start, shard=(
            ctx.num_input_pipelines, ctx.input_pipeline_id, ctx.get_per_replica_batch_size(batch_size)))))
    model.reset_metrics()  # metric variables are all-reduced: a collective
    cbs.on_epoch_begin(epoch)
    iterator = iter(dist)
    todo = datasets.steps_per_epoch - start
    per_call = steps_per_execution(todo, steps_per_call)
    for last in range(per_call - 1, todo, per_call):
        train_steps(iterator, tf.constant(per_call))
        cbs.on_train_batch_end(last)
    logs = {k: float(v) for k, v in model.get_metrics_result().items()}  # all-reduced: every worker reads
    logs.update({f"val_{k}": v for k, v in evaluate_local(model, wrap(datasets.test), label_smoothing).items()})
    cbs.on_epoch_end(epoch, logs)


def _replica_step(model):
    """The per-replica training step: Keras' own `model.train_step`, the one fit runs (loss scaled per replica,
    gradients all-reduced in apply_gradients, metrics updated); its return value stays on the replica."""
    def step(batch):
        model.train_step(batch)

    return step


def fit_distributed(model, strategy, datasets, wrap, callbacks, first_epoch, offset, epochs, batch_size,
                    label_smoothing=None, partial=(), steps_per_call=None):
    """Trains epochs first_epoch..epochs-1 under a multi-worker strategy, calling `callbacks` where fit calls them
    (train begin, epoch begin, batch end, epoch end with the epoch's train and validation logs, train end).

    Each worker's input pipeline builds the global batches of the epoch and keeps its share
    (Datasets.train(..., shard=...)), so the global batch is the one-device batch: the same order, labels and
    augmentation, and the same trajectory up to all-reduce rounding. Every worker runs the same number of steps;
    the metric reads at an epoch's end are collectives, so every worker makes them. `partial` holds the callbacks
    with a `first_step` for a resumed partial epoch (the recorder and the checkpoint). Each compiled
    call runs several steps (steps_per_execution's rule: the largest divisor of the epoch's steps up to
    `steps_per_call`, default 32); batch-end callbacks see the last step of each call, as under fit.
    """
    cbs = keras.callbacks.CallbackList(list(callbacks), model=model)
    with strategy.scope():  # build the optimizer's slots eagerly, before the first tf.function (mirrored)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)

    @tf.function
    def train_steps(iterator, n):  # n steps per call: no per-step Python (the collectives run in the loop)
        for _ in tf.range(n):
            strategy.run(_replica_step(model), args=(next(iterator),))

    model.stop_training = False
    cbs.on_train_begin()
    epoch = first_epoch
    try:
        for epoch in range(first_epoch, epochs):
            _distributed_epoch(model, strategy, datasets, wrap, cbs, train_steps, epoch,
                               offset if epoch == first_epoch else 0, batch_size, label_smoothing, partial,
                               steps_per_call)
            if model.stop_training:
                break
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as e:
        reason = next((line.strip() for line in str(e).splitlines() if "aborted" in line.lower()), type(e).__name__)
        raise UserError(f"a worker of the cluster failed at epoch {epoch + 1} ({reason[:200]}); rerun the same "
                        "command on every worker to resume from the last checkpoint") from None
    for cb in partial:
        cb.first_step = 0
    cbs.on_train_end()
