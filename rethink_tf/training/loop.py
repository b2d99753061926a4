"""The training loops of a run, under one contract, and the final evaluation.

Two loops train a model: Keras' `fit` (one device) and a strategy.run loop that runs Keras' own `model.train_step`
several steps per compiled call under every multi-replica strategy: MirroredStrategy, where Keras 3.15's fit can
only run one step per call (its multi-step function fails there), and MultiWorkerMirroredStrategy, where Keras 3's
fit fails outright (keras-team/keras#20585). They keep ONE contract, so that what a run records and how it stops
never depends on which loop ran:
  * the same callback objects get the same calls with the same logs: train begin, epoch begin, batch begin and
    end once per compiled call (several steps per call: `steps_per_execution`) with the epoch's running metrics,
    epoch end with the epoch's train and validation logs, train end;
  * after a batch end that set `model.stop_training` the epoch stops, still ends (validation, epoch end), and no
    further epoch starts;
  * NaN handling is callbacks.StopOnDivergence and checkpoint.save_checkpoint's finite-weights guard, in both.
A mid-epoch start (a resume from a `checkpoint_every_steps` checkpoint) first runs the rest of that epoch with
exactly the batches an uninterrupted run sees there, then the following epochs.

At the end a fixed-model evaluation on train_eval (the corrupted labels, no augmentation) and on test, on the
moving-average weights when `ema_decay` is set (the raw-weight numbers are kept beside them).
"""

import os

import keras
import numpy as np
import tensorflow as tf

from rethink_tf import dynamics, results
from rethink_tf.data import pipeline
from rethink_tf.errors import UserError
from rethink_tf.training import callbacks as callbacks_lib
from rethink_tf.training import checkpoint as checkpoint_lib
from rethink_tf.training import metrics as metrics_lib
from rethink_tf.training import optim

LOOPS = ("fit", "strategy_run")
MAX_STEPS_PER_EXECUTION = 32


def steps_per_execution(steps, wanted=None):
    """The steps per compiled call for an epoch of `steps`: a divisor of it (Keras runs whole executions, so a
    non-divisor would train past the epoch's end), the largest one <= wanted (default MAX_STEPS_PER_EXECUTION)."""
    cap = min(wanted or MAX_STEPS_PER_EXECUTION, steps)
    return max(d for d in range(1, cap + 1) if steps % d == 0)


def steps_per_call(steps, wanted, replicas, loop):
    """The steps per compiled call a run uses. Keras' fit: steps_per_execution's rule (a divisor of the epoch), and
    one call per step with several replicas (Keras 3.15's multi-step function fails under MirroredStrategy: "You
    must feed a value for placeholder tensor .../while/cond/Placeholder", measured on 2 logical CPUs). The
    strategy.run loop: `wanted` (default MAX_STEPS_PER_EXECUTION) steps per call, the epoch's last call shorter
    where they do not divide it (the call's step count is a tensor: no retrace)."""
    if loop == "strategy_run":
        return min(wanted or MAX_STEPS_PER_EXECUTION, steps)
    if replicas > 1:
        return 1
    return steps_per_execution(steps, wanted)


def default_loop(replicas, steps, wanted, cluster=False, device_data=False):
    """The loop a run takes unless told: the strategy.run loop under several replicas or on a cluster (Keras' fit
    runs one step per call under MirroredStrategy and fails under MultiWorkerMirroredStrategy) and with
    --device_data (its batches are made inside that loop); on one device Keras' fit, unless the epoch's steps have
    no divisor of at least a quarter of the steps per call wanted (fit's calls must divide the epoch: 397 steps
    would run one step per call, 3x the time per step of 39 per call for a small model on one CPU device, README:
    per-step overhead); the strategy.run loop then runs `wanted` steps per call and a shorter last one. Both loops
    keep one contract (the same history, stops and checkpoints: tests/test_loop_contract.py)."""
    if cluster or replicas > 1 or device_data:
        return "strategy_run"
    wanted_per_call = steps_per_call(steps, wanted, replicas, "strategy_run")
    return "strategy_run" if 4 * steps_per_execution(steps, wanted) < wanted_per_call else "fit"


def compiled_loop(replicas, jit_compile, device_data, cluster=False, scope="step"):
    """Whether XLA compiles the strategy.run loop's whole call (its k steps and the metric read: one XLA program per
    call, no per-op dispatch between steps) rather than each step alone: with XLA on (--jit_compile) and
    --jit_scope=call (models.XLA_CALL_DEFAULTS: where it measured faster), one replica (Keras keeps XLA off under
    several), not on a cluster (its collectives have no XLA kernels) and with --device_data (the steps gather their
    batches from arrays; a tf.data iterator's get-next has no XLA kernel)."""
    return bool(jit_compile) and scope == "call" and bool(device_data) and replicas == 1 and not cluster


def jit_scope(replicas, jit_compile, device_data, loop, cluster=False, scope="step"):
    """What XLA compiles in a run, as results.json's env records it: "call" (the strategy.run loop's whole call:
    compiled_loop), "step" (each step: Keras' fit with jit_compile, or the strategy.run loop otherwise) or None."""
    if not jit_compile or replicas > 1:
        return None
    return ("call" if loop == "strategy_run" and compiled_loop(replicas, jit_compile, device_data, cluster, scope)
            else "step")


DEVICE_DATA_DEFAULT_LIMIT_BYTES = 1 << 30  # the largest set --device_data's default places on every device


def device_data_default(replicas, datasets, loop=None, jit_compile=False, cluster=False, scope="step"):
    """--device_data's default, for an in-memory set held whitened (no random crop or augmentation: a step's batch is
    one gather) of at most DEVICE_DATA_DEFAULT_LIMIT_BYTES (CIFAR-10 whitened takes 470 MB of each device's memory;
    a larger set is the user's call: --device_data), unless the loop asked for is Keras' fit (it takes batches from
    tf.data). On under several replicas (MirroredStrategy, a cluster), where the strategy.run loop on it measured
    faster than on tf.data (benchmarks/step_overhead.py, README: per-step overhead, on 2 logical CPUs and 2 worker
    processes), and on one device where XLA compiles the loop's whole call (`scope` "call": the MLPs on CPU by
    default; compiled_loop, which needs it; benchmarks/train_throughput.py, README: training throughput). Off on one
    device otherwise (Keras' fit on tf.data: the tiny model of benchmarks/step_overhead.py measured as fast on
    either path) and with per-step augmentation (not measured faster)."""
    source = getattr(datasets, "device_source", None)
    if loop == "fit" or source is None or not source.prepared or source.nbytes > DEVICE_DATA_DEFAULT_LIMIT_BYTES:
        return False
    return bool(replicas > 1 or compiled_loop(replicas, jit_compile, True, cluster, scope))


def compile_model(model, cfg, num_classes, num_replicas, steps_per_epoch=1, optimizer=None, loop="fit"):
    """Compiles with cross-entropy on logits; one-hot labels when label smoothing is on; top-5 for ImageNet.
    `optimizer` (a user's Keras optimizer) replaces the recipe's. Returns whether XLA is on."""
    if cfg.label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing)
        metrics = [metrics_lib.Accuracy(one_hot=True)]
        if num_classes >= 100:
            metrics.append(keras.metrics.TopKCategoricalAccuracy(5, name="top5_accuracy"))
    else:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        metrics = [metrics_lib.Accuracy()]
        if num_classes >= 100:
            metrics.append(keras.metrics.SparseTopKCategoricalAccuracy(5, name="top5_accuracy"))
    jit = bool(cfg.jit_compile) and num_replicas == 1  # Keras turns XLA off under multi-replica strategies anyway
    spe = steps_per_call(steps_per_epoch, cfg.steps_per_execution, num_replicas, loop)
    model.compile(optimizer=optimizer or optim.make_optimizer(cfg, model), loss=loss, metrics=metrics, jit_compile=jit,
                  steps_per_execution=spe)
    return jit


def one_hot_labels(ds, num_classes):
    return ds.map(lambda x, y: (x, tf.one_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)


def fit_and_evaluate(model, cfg, datasets, run_dir, *, initial_step=0, history=(), extra_callbacks=(), verbose=1,
                     replicas=1, strategy=None, loop="fit", resume_totals=None, checkpoint_on_signal=True,
                     run_config=None):
    """Trains from optimizer step `initial_step` to the end of cfg.epochs, then evaluates the final model.

    Args:
      loop: "fit" (Keras' fit and evaluate) or "strategy_run" (Keras' train_step under `strategy`.run, and an
        evaluation on each worker's copy of the weights: evaluate_local).
      resume_totals: the running metric totals recorded with a mid-epoch checkpoint at initial_step
        (checkpoint.saved_state), which the partial epoch starts from; every worker of a cluster passes them.
      run_config: the run's config.json dict, copied into every checkpoint's STATE record (a damaged config.json
        is recovered from it).
      checkpoint_on_signal: SIGINT/SIGTERM checkpoint at the next step boundary (callbacks.StopOnSignal); on a
        multi-host cluster (strategy_run under a multi-worker strategy) the workers agree on it first, so a signal
        that reaches one worker stops every worker at the same step.

    Returns:
      (metrics dict, history list, status) with status "completed", "stopped_at_train_accuracy" or "diverged".
    """
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {LOOPS}; received {loop!r}")
    wrap = (lambda ds: one_hot_labels(ds, datasets.num_classes)) if cfg.label_smoothing else (lambda ds: ds)
    steps = datasets.steps_per_epoch
    schedule = optim.lr_schedule(model.optimizer)
    # A multi-host cluster (keras#20585): evaluation on this worker's own copy of the weights, where Keras' evaluate
    # and predict cannot run, and signals agreed between workers; on one host Keras' own evaluation, distributed over
    # the replicas, whichever loop trains.
    local = loop == "strategy_run" and strategy is not None and strategy.extended._in_multi_worker_mode()
    memorization = None
    changed = getattr(datasets, "changed", None)  # pipeline: None unless some, not all, labels changed
    labels = getattr(datasets, "train_labels", None)
    save = None
    if cfg.per_example and labels is not None and run_dir:
        def save(epoch, predicted):
            dynamics.save_epoch(run_dir, epoch, predicted, datasets.num_classes)
    if changed is not None or save is not None:
        memorization = callbacks_lib.memorization_metrics(
            datasets.train_eval, changed, local=local, clean=None if labels is None else labels["clean"], save=save)
    extra_test = getattr(datasets, "extra_test", None) or {}
    if extra_test:  # --extra_test: each set's loss and accuracy in every epoch's row, beside the test set's
        remember = memorization

        def memorization(model, epoch):
            row = remember(model, epoch) if remember else {}
            for name, ds in extra_test.items():
                ev = _evaluate(model, wrap(ds), local, cfg.label_smoothing)
                row.update({extra_test_key(name, k): v for k, v in ev.items()})
            return row
    # one line per epoch at verbose 2, and at verbose 1 in the strategy.run loop (Keras' progress bar is fit's)
    lines = verbose == 2 or (verbose == 1 and loop == "strategy_run")
    recorder = callbacks_lib.EpochRecorder(run_dir, steps, cfg.batch_size, history, schedule,
                                           cfg.stop_at_train_accuracy, datasets.num_classes, replicas,
                                           epochs=cfg.epochs, print_lines=lines, memorization=memorization,
                                           totals_restored=lambda: checkpoint.totals_restored)
    checkpoint = checkpoint_lib.Checkpoint(
        run_dir, steps, cfg.checkpoint_every_steps, history=recorder.history,
        resume_totals=resume_totals, config=run_config)
    divergence = callbacks_lib.StopOnDivergence()
    callbacks = [recorder, checkpoint]  # at an epoch's end the history row is written before the checkpoint
    if cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(run_dir, "tensorboard"), write_graph=False,
                                                     profile_batch=0))
    interrupt = callbacks_lib.StopOnSignal(checkpoint, steps, enabled=checkpoint_on_signal,
                                           agree=callbacks_lib.signal_agreement(strategy) if local else None)
    callbacks += [divergence, interrupt, *extra_callbacks]
    epoch, offset = divmod(initial_step, steps)
    partial = (recorder, checkpoint)  # the callbacks that count steps from a partial epoch's first step
    if epoch >= cfg.epochs or _met_stop_rule(history, cfg.stop_at_train_accuracy):
        # nothing left to train: killed after the last (or the fitted) epoch's checkpoint but before results.json;
        # training on would add an epoch that an uninterrupted run never trains
        pass
    elif loop == "strategy_run":
        with interrupt:
            fit_distributed(model, strategy or tf.distribute.get_strategy(), datasets, wrap, callbacks, epoch,
                            offset, cfg.epochs, cfg.batch_size, cfg.label_smoothing, partial, cfg.steps_per_execution,
                            local_eval=local, device_data=cfg.device_data,
                            jit_compile=bool(cfg.jit_compile) and replicas == 1, jit_scope=cfg.jit_scope or "step")
    else:
        with interrupt:
            _fit(model, datasets, wrap, callbacks, epoch, offset, cfg.epochs, partial, verbose)
    hist = recorder.history
    status = "completed"
    if divergence.diverged or (hist and not np.isfinite(hist[-1].get("train_loss", 0.0))):
        status = "diverged"
    elif _met_stop_rule(hist, cfg.stop_at_train_accuracy) and hist[-1]["epoch"] < cfg.epochs:
        status = "stopped_at_train_accuracy"

    def evaluate():
        out = {}
        for split, ds in (("train", datasets.train_eval), ("test", datasets.test)):
            ev = _evaluate(model, wrap(ds), local, cfg.label_smoothing)
            out.update({f"{split}_{k}": v for k, v in ev.items()})
        for name, ds in extra_test.items():
            out.setdefault("extra_test", {})[name] = _evaluate(model, wrap(ds), local, cfg.label_smoothing)
        return out

    metrics = evaluate()
    if cfg.ema_decay:
        raw = metrics
        with optim.ema_weights(model):
            metrics = {**evaluate(), "raw_weights": raw, "evaluated_weights": "ema"}
    else:
        metrics["evaluated_weights"] = "raw"
    fitted = callbacks_lib.time_to_fit(hist, steps, cfg.fit_threshold)
    metrics["fit_threshold"] = cfg.fit_threshold
    metrics["epochs_to_fit"], metrics["steps_to_fit"] = fitted["epochs"], fitted["steps"]
    for t in results.FIT_THRESHOLDS:
        metrics.setdefault("steps_to_accuracy", {})[f"{t:g}"] = callbacks_lib.time_to_fit(hist, steps, t)["steps"]
    for key in ("test_accuracy", "test_top5_accuracy"):  # Figure 2's / Table 2's best during training
        seen = [h[key] for h in hist if np.isfinite(h.get(key, np.nan))]
        if key in metrics or seen:
            metrics[f"best_{key}"] = max(seen) if seen else metrics[key]
    metrics["history_test_weights"] = "raw"  # per-epoch test accuracies are always on the trained weights
    metrics["epochs_trained"] = hist[-1]["epoch"] if hist else 0
    metrics["steps_trained"] = int(keras.ops.convert_to_numpy(model.optimizer.iterations))
    metrics["final_lr"] = float(schedule(max(metrics["steps_trained"] - 1, 0)))  # the lr of the last update
    return metrics, hist, status


def extra_test_key(name, metric):
    """The history key of an --extra_test set's metric: "cifar10_1_test_accuracy" for tfds:cifar10_1."""
    return name.split(":", 1)[-1].replace("/", "_") + f"_test_{metric}"


def _evaluate(model, dataset, local, label_smoothing):
    """{loss, accuracy[, top5_accuracy]} of the model on a dataset: Keras' evaluate, or evaluate_local on this
    worker's weights under the strategy.run loop."""
    ev = (evaluate_local(model, dataset, label_smoothing) if local
          else model.evaluate(dataset, verbose=0, return_dict=True))
    return {k: float(ev[k]) for k in ("loss", "accuracy", "top5_accuracy") if k in ev}


def _met_stop_rule(history, stop_at):
    """Whether the last recorded epoch reached --stop_at_train_accuracy (the recorder stops training there)."""
    return stop_at is not None and bool(history) and history[-1].get("train_accuracy", 0.0) >= stop_at


def _set_steps_per_execution(model, steps):
    """Keras' steps per execution for the next fit/evaluate/predict, every compiled function dropped: each was traced
    for the old count (a stale test function runs the old count of batches per call while Keras' evaluate advances
    by the new one, skipping test batches: measured, a resumed run's final accuracy then covered 36 of 40
    examples)."""
    model.steps_per_execution = steps
    model.train_function = model.test_function = model.predict_function = None


def _fit(model, datasets, wrap, callbacks, epoch, offset, epochs, partial, verbose):
    """Epochs epoch..epochs-1 through Keras' fit: a partly trained epoch first, in a fit call of its own."""
    steps = datasets.steps_per_epoch
    fit = dict(validation_data=wrap(datasets.test), callbacks=callbacks, verbose=1 if verbose == 1 else 0,
               shuffle=False)
    if offset and epoch < epochs:  # the rest of a partly trained epoch
        for cb in partial:
            cb.first_step = offset
        full_spe = model.steps_per_execution
        _set_steps_per_execution(model, steps_per_execution(steps - offset, full_spe))
        model.fit(wrap(datasets.train(epoch, offset)), epochs=epoch + 1, initial_epoch=epoch,
                  steps_per_epoch=steps - offset, **fit)
        _set_steps_per_execution(model, full_spe)  # retrace for whole epochs
        for cb in partial:
            cb.first_step = 0
        epoch += 1
    if epoch < epochs and not model.stop_training:
        model.fit(wrap(datasets.train(epoch)), epochs=epochs, initial_epoch=epoch, steps_per_epoch=steps, **fit)


def evaluate_local(model, dataset, label_smoothing=None):
    """{loss, accuracy[, top5_accuracy]} of `dataset` on this worker's copy of the weights, as Keras' evaluate
    reports them (mean cross-entropy on logits plus the regularization losses). Under MultiWorkerMirroredStrategy
    every worker evaluates the whole set itself: no collectives (Keras' distributed evaluate hits keras#20585
    too), identical numbers on every worker, at the cost of repeating the work per worker."""
    predict = callbacks_lib.local_predict(model)
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
        # keras.ops, as Keras' accuracy metrics compute it (also on non-finite logits, where tf.argmax differs)
        predicted = tf.cast(keras.ops.argmax(logits, axis=-1), tf.int64)
        correct += float(tf.reduce_sum(tf.cast(tf.equal(predicted, y), tf.float32)))
        if num_classes >= 100:
            top5 += float(tf.reduce_sum(tf.cast(keras.ops.in_top_k(y, logits, 5), tf.float32)))
        count += int(y.shape[0])
    regularization = float(sum(keras.ops.convert_to_numpy(v) for v in model.losses)) if model.losses else 0.0
    out = {"loss": total / count + regularization, "accuracy": correct / count}
    if num_classes and num_classes >= 100:
        out["top5_accuracy"] = top5 / count
    return out


def _running_logs(read):
    """The epoch's running metrics, as fit's batch-end logs hold them, from `read` (fit_distributed's compiled
    metrics.running_results: under a multi-worker strategy the read is an all-reduce, which every worker makes at
    the same epoch ends; compiled and packed into one collective, not one eager collective per metric variable
    after another: 2 local workers, exploratory timings, 15 ms per read eager, 4.4 compiled, 1.1 compiled and
    packed). The batch-end reads come from the training call itself (fit_distributed's train_steps)."""
    return {k: float(v) for k, v in read().items()}


def _distributed_epoch(model, strategy, datasets, wrap, cbs, train_steps, read_metrics, epoch, start, batch_size,
                       label_smoothing, partial, steps_per_call_wanted=None, local_eval=True, device_rows=None):
    """One epoch of fit_distributed from step `start`; every collective (metric resets and reads, steps) inside.
    `device_rows(epoch)`: --device_data's (batch indices of the epoch, epoch, arrays) on every replica (no input
    pipeline)."""
    for cb in partial:
        cb.first_step = start

    def input_fn(ctx):
        shard = _shard(ctx, batch_size)
        # Declared endless. On a stream of unknown or finite length, tf.distribute agrees at EVERY step whether each
        # worker still has a batch (input_lib._enable_get_next_as_optional: an all-reduce of a has-data flag beside
        # the gradients' under a multi-worker strategy; 2 local workers: 2.0 against 1.2 ms per step of a tiny
        # model). Every worker takes exactly the epoch's steps from a stream that holds them, so no worker ever
        # runs short; a stream that did end would raise (assert_cardinality), never wrap around.
        return wrap(datasets.train(epoch, start, shard=shard)).apply(
            tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))

    if device_rows is None:
        source = iter(strategy.distribute_datasets_from_function(input_fn))
    else:  # the epoch's rows, its number and the arrays on every replica: the step gathers its batch itself
        source = device_rows(epoch)
    model.reset_metrics()  # metric variables are all-reduced: a collective
    cbs.on_epoch_begin(epoch)
    todo = datasets.steps_per_epoch - start
    per_call = steps_per_call(todo, steps_per_call_wanted, strategy.num_replicas_in_sync, "strategy_run")
    for first in range(0, todo, per_call):
        n = min(per_call, todo - first)  # the epoch's last call runs what is left
        cbs.on_train_batch_begin(first)
        # the steps, then the metrics read, in one call
        running = train_steps(source, tf.constant(start + first), tf.constant(n))
        cbs.on_train_batch_end(first + n - 1, {k: float(v) for k, v in running.items()})
        if model.stop_training:
            break
    logs = _running_logs(read_metrics)
    logs.update({f"val_{k}": v for k, v in _evaluate(model, wrap(datasets.test), local_eval, label_smoothing).items()})
    cbs.on_epoch_end(epoch, logs)


def _replica_step(model):
    """The per-replica training step: Keras' own `model.train_step`, the one fit runs (loss scaled per replica,
    gradients all-reduced in apply_gradients, metrics updated); its return value stays on the replica."""
    def step(batch):
        model.train_step(batch)

    return step


def _on_every_replica(strategy, value):
    """`value(j)` (a numpy array or tensor) as a tensor on the device of this worker's replica j, for strategy.run
    (one copy per device, made once). MirroredStrategy and the multi-worker strategy call the value function
    without a device scope, so each copy is placed on its replica's device here (else every copy would land on the
    default device, GPU 0)."""
    try:
        devices = strategy.extended.worker_devices
    except (AttributeError, NotImplementedError, IndexError, RuntimeError):
        devices = ("",)  # the default strategy: TF's own placement
    if strategy.num_replicas_in_sync == 1:
        with tf.device(devices[0]):
            return tf.identity(value(0))

    def copy(ctx):  # replica ids run over the cluster: this worker's replicas are id % (replicas per worker)
        j = ctx.replica_id_in_sync_group % len(devices)
        with tf.device(devices[j]):
            return tf.identity(value(j))

    return strategy.experimental_distribute_values_from_function(copy)


def _input_shard(strategy, batch_size):
    """(num_input_pipelines, input_pipeline_id, per-replica batch): the shard of the global batches that this
    worker's input function is given under `strategy` (read from the InputContext tf.distribute itself passes to
    one, so that --device_data's indices are split exactly as the tf.data path's batches)."""
    seen = []

    def fn(ctx):
        seen.append(ctx)
        return tf.data.Dataset.range(1)

    strategy.distribute_datasets_from_function(fn)
    return _shard(seen[0], batch_size)


def _shard(ctx, batch_size):
    """A tf.distribute.InputContext as the pipeline's shard: (num_input_pipelines, input_pipeline_id, per-replica
    batch)."""
    return ctx.num_input_pipelines, ctx.input_pipeline_id, ctx.get_per_replica_batch_size(batch_size)


def fit_distributed(model, strategy, datasets, wrap, callbacks, first_epoch, offset, epochs, batch_size,
                    label_smoothing=None, partial=(), steps_per_call_wanted=None, local_eval=True, device_data=False,
                    jit_compile=False, jit_scope="step"):
    """Trains epochs first_epoch..epochs-1 with Keras' train_step under `strategy`.run, calling `callbacks` as fit
    calls them (the module's contract).

    Each worker's input pipeline builds the global batches of the epoch and keeps its share
    (Datasets.train(..., shard=...)), so the global batch is the one-device batch: the same order, labels and
    augmentation, and the same trajectory up to all-reduce rounding. Every worker runs the same number of steps;
    the metric reads are collectives, so every worker makes them. `partial` holds the callbacks with a `first_step`
    for a resumed partial epoch (the recorder and the checkpoint). Each compiled call runs several steps
    (`steps_per_call_wanted`, default 32; the epoch's last call runs what is left).
    `local_eval`: evaluate on this worker's copy of the weights (a multi-host cluster), else with Keras' evaluate.
    `device_data` (--device_data): the training arrays are placed on every replica's device once, and each epoch's
    batch indices too (one small tensor per epoch: no input pipeline, no tf.data element per step); step s of the
    call gathers, crops, augments and whitens its batch on the device (without augmentation it only gathers, from
    the set whitened once; datasets.device_source: the same batches as the tf.data path). `jit_compile` (one
    replica only: Keras' rule): XLA compiles each step, or with `jit_scope` "call" and --device_data the whole
    call (compiled_loop).
    """
    cbs = keras.callbacks.CallbackList(list(callbacks), model=model)
    with strategy.scope():  # build the optimizer's slots eagerly, before the first tf.function (mirrored)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
    step, device_rows = _replica_step(model), None
    if device_data:
        source = datasets.device_source
        arrays = tuple(_on_every_replica(strategy, lambda j, a=a: tf.constant(a)) for a in source.arrays())
        shard = _input_shard(strategy, batch_size)
        num_classes = datasets.num_classes

        def device_rows(epoch):  # the arrays go in as arguments: a traced function keeps no copy of the set alive
            rows = source.rows(epoch, shard)
            return (_on_every_replica(strategy, lambda j: pipeline.replica_columns(rows, shard, j)),
                    tf.constant(epoch, tf.int64), arrays)

        def device_step(rows, i, epoch, images, labels, keys):
            x, y = source.batch(images, labels, keys, tf.gather(rows, i), epoch)  # not rows[i]: see train_steps
            if label_smoothing:
                y = tf.one_hot(y, num_classes)
            model.train_step((x, y))

        step = device_step
    whole = compiled_loop(strategy.num_replicas_in_sync, jit_compile, device_data,
                          strategy.extended._in_multi_worker_mode(), jit_scope)
    if jit_compile and not whole:
        step = tf.function(step, jit_compile=True)

    @tf.function(jit_compile=whole)
    def train_steps(source, first, n):  # n steps per call: no per-step Python (the collectives run in the loop)
        # a while loop on a counter, not `for i in tf.range(n)`: XLA takes a range's bound, and a gather's index
        # from a slice, as compile-time constants and compiled the whole call again for every new first step and
        # every shorter last call (measured: 0.3 s per call through an epoch of a tiny MLP); a loop condition and
        # tf.gather take them as values
        i = tf.constant(0, n.dtype)
        while i < n:
            if device_data:  # source: (the epoch's rows, the epoch, the arrays), on every replica; step first + i
                strategy.run(step, args=(source[0], first + i, source[1], *source[2]))
            else:  # source: the epoch's distributed iterator
                strategy.run(step, args=(next(source),))
            i += 1
        # the running metrics after the n steps (all-reduced in one collective), read in the same call: no second
        # call per batch end (on 2 local workers each call's collectives cost milliseconds)
        return metrics_lib.running_results(model, strategy)

    # this compile's metrics, read at epoch ends (traced at the first one)
    read_metrics = tf.function(lambda: metrics_lib.running_results(model, strategy))
    model.stop_training = False
    cbs.on_train_begin()
    epoch = first_epoch
    try:
        for epoch in range(first_epoch, epochs):
            _distributed_epoch(model, strategy, datasets, wrap, cbs, train_steps, read_metrics, epoch,
                               offset if epoch == first_epoch else 0, batch_size, label_smoothing, partial,
                               steps_per_call_wanted, local_eval, device_rows)
            if model.stop_training:
                break
    except (tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError) as e:
        if not strategy.extended._in_multi_worker_mode():
            raise  # one host: not a lost worker
        reason = next((line.strip() for line in str(e).splitlines() if "aborted" in line.lower()), type(e).__name__)
        raise UserError(f"a worker of the cluster failed at epoch {epoch + 1} ({reason[:200]}); rerun the same "
                        "command on every worker to resume from the last checkpoint") from None
    for cb in partial:
        cb.first_step = 0
    cbs.on_train_end()
