"""One training run of a TrainConfig: `run(config, workdir)` trains, evaluates and writes results.json.

A run directory is named from its config: re-running a finished run returns its results; re-running a killed run
resumes it from its last checkpoint. This module defines no flags (library code: rethink_tf.randomization_test and
the sweeps call it); `python -m rethink_tf.train` is the command-line entry point that turns flags into a config.

The order of one run: identity check against an existing config.json, strategy (one device, MirroredStrategy, or
a multi-host cluster), data (everything that can fail on user input fails before the run directory is touched),
model and compile under the strategy's scope, restore, the loop (loop.fit_and_evaluate), results.json.
"""

import contextlib
import dataclasses
import os
import secrets
import shutil
import sys
import tempfile

from rethink_tf import dynamics, results
from rethink_tf.config import NON_IDENTITY_FIELDS, TrainConfig, nondefault_width, source_run_name
from rethink_tf.errors import UserError
from rethink_tf.runs import corruption_label


@contextlib.contextmanager
def dtype_policy(name):
    """Sets Keras' global dtype policy for the block and restores the previous one, whatever happens."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def model_options(cfg):
    """The builder options a TrainConfig sets for its model (None values fall back to builder defaults)."""
    from rethink_tf import models

    wanted = {"weight_decay": cfg.weight_decay, "dropout": cfg.dropout, "bn_momentum": cfg.bn_momentum,
              "bn_synchronized": cfg.sync_batchnorm, "width_multiplier": nondefault_width(cfg.width)}
    accepted = models.options_of(cfg.model)
    for name, value in wanted.items():
        if value and name not in accepted:
            flag = {"bn_synchronized": "sync_batchnorm", "width_multiplier": "width"}.get(name, name)
            raise UserError(f"--{flag} does not apply to --model={cfg.model}")
    return {k: v for k, v in wanted.items() if k in accepted}


def run(config, workdir, strategy=None, datasets=None, extra_callbacks=(), verbose=None, build_model=None,
        optimizer=None, loop=None):
    """Trains and evaluates one configuration; returns the path of its results.json.

    Args:
      config: a TrainConfig (None fields take the paper's recipe).
      workdir: parent folder of run directories.
      strategy: a tf.distribute.Strategy (default: from config.strategy).
      datasets: prebuilt pipeline.Datasets (default: built from config.data).
      extra_callbacks: more Keras callbacks (tests use one to kill a run mid-way).
      verbose: 1 a progress bar, 2 one line per epoch, 0 silent (default: 1 on a terminal, else 2).
      build_model: a function (input_shape, num_classes) -> uncompiled keras.Model used instead of config.model's
        builder (rethink_tf.randomization_test; config.model then only names the run).
      optimizer: a function () -> a fresh Keras optimizer used instead of config's recipe (its learning-rate
        fields are then not used; config.optimizer should describe it, since it names the run).
      loop: "fit" or "strategy_run" (training.loop.LOOPS; default training.loop.default_loop: strategy_run under
        any multi-replica strategy, where it runs several steps per compiled call, Keras' fit one step per call on
        mirrored replicas and none at all on a multi-host cluster, with --device_data, and on one device when the
        epoch's steps have no divisor near the steps per call wanted; else fit). Both keep one contract, so this
        changes where the steps run, not the result.

    Raises:
      UserError: invalid configuration or data; nothing is written to the run directory in that case.
    """
    import keras
    import tensorflow as tf

    from rethink_tf import models
    from rethink_tf.data import pipeline
    from rethink_tf.training import checkpoint, cluster, distribute
    from rethink_tf.training import lock as lock_lib
    from rethink_tf.training import loop as loop_lib

    d = config.data
    if d.prepare_imagenet and d.dataset == "imagenet2012":  # first: the recipe's decay period is the prepared epoch's
        from rethink_tf.data.sources import imagenet

        imagenet.prepare(d.data_dir or os.path.expanduser("~/tensorflow_datasets"), d.manual_dir)
    cfg = config.resolved()
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    member = None  # this process's place in a multi-host cluster
    if strategy is None and cfg.strategy == "multi_worker":
        member = cluster.connect(cfg.worker_hosts, cfg.task_index, cfg.cluster_timeout)
        strategy = member.strategy
    strategy = strategy or distribute.get_strategy(cfg.strategy, cfg.num_gpus, cfg.cross_device_ops)
    replicas = strategy.num_replicas_in_sync
    chief = member is None or member.chief
    if cfg.jit_scope not in (None, "step", "call"):
        raise UserError(f"--jit_scope must be step or call; received {cfg.jit_scope!r}")
    if cfg.device_data and loop == "fit":
        raise UserError("--device_data makes each batch inside the package's strategy.run loop; Keras' fit takes "
                        "batches from tf.data")
    # The replica count names the run where it changes what is trained (per-replica BatchNorm's batch).
    bn_batch = cfg.bn_replica_batch(replicas)
    run_dir = os.path.join(workdir, _run_dir_name(cfg, replicas))
    _check_writable(run_dir)  # before any expensive work: one line, nothing created
    final = os.path.join(run_dir, results.RESULTS)
    config_path = os.path.join(run_dir, results.CONFIG)
    changed = {}
    stored_json = _stored_run_config(run_dir)  # config.json (or, damaged, its copy inside the checkpoint)
    stored = stored_json or _stored_config(final, key="config")
    if stored is not None:  # compared first: an explicit run name may point at another run's directory
        old, new = _jsonable(TrainConfig.from_dict(stored).to_dict()), _jsonable(cfg.to_dict())
        differ = sorted(k for k in new if old.get(k) != new[k])
        clash = [k for k in differ if k not in NON_IDENTITY_FIELDS]
        if source_run_name(old.get("init_from")) != source_run_name(cfg.init_from):  # the path may move, not the run
            clash.append(f"the --init_from run ({source_run_name(old.get('init_from'))} then, "
                         f"{source_run_name(cfg.init_from)} now)")
        stored_bn = _stored_bn_batch(run_dir, stored_json or {}, cfg)
        if stored_bn != bn_batch and os.path.exists(config_path):
            clash.append(f"BatchNorm's per-replica batch ({stored_bn} then, {bn_batch} on {replicas} replica(s) now)")
        if clash:
            raise UserError(f"{run_dir} holds a run with a different config ({', '.join(clash)} differ); choose "
                            "another --run_name or --workdir")
        changed = {k: [old[k], new[k]] for k in differ}

    if cfg.dtype_policy == "mixed_float16" and replicas > 1:
        raise UserError("--dtype_policy=mixed_float16 needs loss scaling, which fails under MirroredStrategy "
                        "(keras-team/keras#18666); use mixed_bfloat16 or one replica")
    # Everything that can fail on user input happens before the run directory is touched.
    # A tf.data service job is named after the run and this start of it (the trainers agree on the token).
    service_job = f"{os.path.basename(run_dir)}-{member.token if member else secrets.randbits(32)}"
    datasets = datasets or pipeline.build(cfg.data, cfg.batch_size, cfg.epochs, num_replicas=replicas,
                                          deterministic=cfg.deterministic, service_job=service_job)
    if cfg.device_data and getattr(datasets, "device_source", None) is None:
        raise UserError(f"--device_data places an in-memory training set on the devices; {cfg.data.dataset} is "
                        "streamed (its input stays in tf.data)")
    # what XLA compiles on one device, each step or the loop's whole call (cfg keeps None: config.json records flags)
    scope = cfg.jit_scope or models.jit_scope_default(cfg.model)
    device_data = cfg.device_data
    if device_data is None:  # the default: where it measured faster (cfg keeps None: config.json records the flags)
        device_data = loop_lib.device_data_default(replicas, datasets, loop, jit_compile=cfg.jit_compile,
                                                   cluster=member is not None, scope=scope)
        if cfg.jit_scope == "call" and loop != "fit" and getattr(datasets, "device_source", None) is not None:
            device_data = True  # asked for: the whole call needs the batches made in it (augmented, or > 1 GiB)
    if cfg.jit_scope == "call" and not loop_lib.compiled_loop(replicas, cfg.jit_compile, device_data and loop != "fit",
                                                             member is not None, "call"):
        raise UserError("--jit_scope=call compiles the strategy.run loop's whole call with XLA: it needs "
                        "--jit_compile, one device (no mirrored replicas, no cluster) and --device_data (in-memory "
                        "data, not Keras' fit loop)")
    # unless told: the strategy.run loop under several replicas, on a cluster and with --device_data, and on one
    # device where fit's divisor rule would leave few steps per call; else Keras' fit (loop.default_loop)
    loop = loop or loop_lib.default_loop(replicas, datasets.steps_per_epoch, cfg.steps_per_execution,
                                         cluster=member is not None, device_data=bool(device_data))
    if cfg.per_example and getattr(datasets, "train_labels", None) is None:
        raise UserError(f"--per_example records every training example per epoch; {cfg.data.dataset} is streamed, "
                        "not held in memory")
    fingerprint = datasets.summary.get("data_fingerprint")
    keys = datasets.summary.get(EXAMPLE_KEYS)
    _check_same_data(run_dir, fingerprint, keys, stored_json or {})
    source = None
    if cfg.init_from:  # checked before the run directory is touched
        try:
            source = _init_source(cfg, datasets)
        except UserError:
            if not (stored_json or os.path.exists(final)):
                raise
            # a started run goes on from its own checkpoint: the source is only described then
            source = {"run_dir": os.path.abspath(cfg.init_from), "name": source_run_name(cfg.init_from),
                      "sha256": (stored_json or {}).get(INIT_SHA256), "note": "not readable at this start"}
        was = (stored_json or {}).get(INIT_SHA256)
        if was and source.get("sha256") and was != source["sha256"]:
            print(f"warning: {source['run_dir']}'s checkpoint changed since this run started from it; the run goes on from its own checkpoint, and --measures will not measure a "
                  "distance from the changed weights", flush=True)
            source["sha256"] = was
    if os.path.exists(final):
        if _complete(final, cfg):
            print(f"{run_dir}: already complete", flush=True)
            return final
        if results.valid_results(final):
            what = " and ".join(results.lacks(results.read_json(final), cfg))
            print(f"{run_dir}: finished without {what}; evaluating its last checkpoint (its results stay as "
                  "they are, these are added)", flush=True)
        else:
            print(f"warning: {final} is unreadable or incomplete; evaluating the run's last checkpoint again to "
                  "rewrite it", flush=True)
    options = model_options(cfg)
    keras.utils.set_random_seed(cfg.seed)
    with dtype_policy(cfg.dtype_policy):
        with strategy.scope():
            model = models.build(cfg.model, datasets.input_shape, datasets.num_classes, builder=build_model, **options)
            jit = loop_lib.compile_model(model, cfg, datasets.num_classes, replicas, datasets.steps_per_epoch,
                                         optimizer=optimizer() if optimizer else None, loop=loop)

        # Only the chief writes the run directory; the other workers read its checkpoint and write to scratch.
        out_dir = run_dir if chief else _scratch_dir(member)
        os.makedirs(out_dir, exist_ok=True)
        with (lock_lib.RunLock(run_dir) if chief else contextlib.nullcontext()):  # one process per run
            if chief and _complete(final, cfg):  # finished while this process waited for the lock
                print(f"{run_dir}: already complete", flush=True)
                return final
            run_config = {**cfg.to_dict(), DATA_FINGERPRINT: fingerprint, EXAMPLE_KEYS: keys,
                          BN_REPLICA_BATCH: bn_batch,  # config.json, and its copy in every checkpoint
                          **({INIT_SHA256: source.get("sha256")} if source else {})}
            initial_step = checkpoint.restore(model, run_dir, strategy)
            if results.valid_results(final):  # finished, only measures or extra tests missing: add, change nothing
                if chief:
                    record = results.read_json(final)
                    missing = results.lacks(record, cfg)
                    if "measures" in missing:
                        record["measures"] = _measures(cfg, model, datasets, build_model, options,
                                                       run_config.get(INIT_SHA256))
                        record["config"]["measures"] = True
                    if set(missing) - {"measures"}:
                        _add_extra_tests(record, cfg, model, datasets, [n for n in missing if n != "measures"])
                    results.write_json(final, record)
                return final
            if cfg.init_from and not initial_step:
                model.set_weights(_source_model(cfg, datasets, build_model, options).get_weights())
                print(f"initialized from {source['run_dir']} (its final weights; a fresh optimizer)", flush=True)
            initial_epoch = initial_step // datasets.steps_per_epoch
            state = checkpoint.saved_state(run_dir, initial_step)  # the record written with that checkpoint
            if chief:
                results.write_json(config_path, run_config)
                history = results.truncate_history(run_dir, initial_epoch)
                dynamics.clear(run_dir, initial_epoch)  # epochs after the checkpoint are retrained
            else:
                history = results.read_history(run_dir, initial_epoch)
            history = _rebuilt_history(run_dir, history, state.get("history") or [], initial_epoch, chief)
            missing = sorted(set(range(1, initial_epoch + 1)) - {row.get("epoch") for row in history})
            if missing:
                print(f"warning: {run_dir}/{results.HISTORY} has lost the rows of epoch(s) {_ranges(missing)} (the "
                      "checkpoint has trained them); results.json lists them under history_missing_epochs", flush=True)
            if initial_step:
                if chief:
                    results.append_resume(run_dir, {"step": initial_step, "replicas": replicas, "changed": changed})
                print(f"{run_dir}: resuming at step {initial_step} (epoch {initial_epoch + 1}, step "
                      f"{initial_step % datasets.steps_per_epoch} of {datasets.steps_per_epoch})", flush=True)
            print(f"{cfg.model} on {cfg.data.dataset} ({datasets.train_size} train / {datasets.test_size} test), "
                  f"corrupt={cfg.data.corrupt}, {models.trainable_count(model):,} trainable parameters, "
                  f"{datasets.steps_per_epoch} steps/epoch, {replicas} replica(s) -> {run_dir}", flush=True)
            _warn_small_replica_batch(cfg, model, replicas)
            if verbose is None:
                verbose = 1 if sys.stdout.isatty() else 2
            try:
                metrics, history, status = loop_lib.fit_and_evaluate(
                    model, dataclasses.replace(cfg, device_data=device_data, jit_scope=scope), datasets, out_dir,
                    initial_step=initial_step, history=history, run_config=run_config, extra_callbacks=extra_callbacks,
                    verbose=verbose, replicas=replicas, strategy=strategy, loop=loop,
                    resume_totals=state.get("totals"))
            finally:
                if not chief:
                    shutil.rmtree(out_dir, ignore_errors=True)
            metrics["trainable_parameters"] = models.trainable_count(model)
            metrics["steps_per_epoch"] = datasets.steps_per_epoch
            record = {"schema_version": results.SCHEMA_VERSION, "kind": "train", "status": status,
                      "config": cfg.to_dict(), "metrics": metrics, "history": history, "corruption": datasets.summary,
                      "resumes": results.read_resumes(run_dir), "history_missing_epochs": missing,
                      "env": {**results.environment(), "replicas": replicas, "jit_compile": jit,
                              "steps_per_execution": loop_lib.steps_per_call(datasets.steps_per_epoch,
                                                                             cfg.steps_per_execution, replicas, loop),
                              "loop": loop, "device_data": device_data,
                              "jit_scope": loop_lib.jit_scope(replicas, jit, device_data, loop, member is not None,
                                                              scope),
                              "strategy": type(strategy).__name__, "workers": member.workers if member else 1}}
            if status == "diverged":
                if chief:
                    results.write_json(os.path.join(run_dir, "diverged.json"), record)
                raise UserError(f"training diverged (loss is NaN/inf) at epoch {history[-1]['epoch']}; "
                                f"see {run_dir}/history.jsonl. Try a lower --learning_rate")
            if not chief:
                print(f"{member.kind} {member.index}: done; the chief writes {final}", flush=True)
                return final
            if source:
                record["init_from"] = source
            if cfg.per_example:
                record["per_example"] = dynamics.export(run_dir, history, datasets.train_labels)
            if cfg.measures:
                record["measures"] = _measures(cfg, model, datasets, build_model, options,
                                               run_config.get(INIT_SHA256))
            results.write_json(final, record)
            print(summary(cfg, datasets, metrics, status, final, workdir), flush=True)
            return final


def _init_source(cfg, datasets):
    """The finished run --init_from names, checked: its results.json is complete, its checkpoint is there, and it
    trained the same model (and width) on images of the same shape and classes. A summary for results.json."""
    from rethink_tf.training import checkpoint

    src = os.path.normpath(cfg.init_from)
    final = os.path.join(src, results.RESULTS)
    if not results.valid_results(final):
        raise UserError(f"--init_from={cfg.init_from}: no finished run there ({results.RESULTS} missing or "
                        "incomplete); give the directory of a finished training run")
    if not os.path.exists(os.path.join(src, checkpoint.CHECKPOINT)):
        raise UserError(f"--init_from={cfg.init_from}: its {checkpoint.CHECKPOINT} is missing")
    r = results.read_json(final)
    c = r["config"]
    theirs = (c.get("model"), nondefault_width(c.get("width")))
    ours = (cfg.model, nondefault_width(cfg.width))
    if theirs != ours:
        raise UserError(f"--init_from={cfg.init_from} trained {theirs[0]} at width {theirs[1] or 1.0:g}; this run "
                        f"builds {ours[0]} at width {ours[1] or 1.0:g}: the weights do not fit")
    classes = len(((r.get("corruption") or {}).get("test_labels") or {}).get("class_histogram") or []) or None
    if c.get("dataset") != cfg.data.dataset or (classes and classes != datasets.num_classes):
        raise UserError(f"--init_from={cfg.init_from} trained on {c.get('dataset')} ({classes or '?'} classes); this "
                        f"run trains on {cfg.data.dataset} ({datasets.num_classes} classes): start from a run on the "
                        "same data (a subset, or other labels, of it)")
    import hashlib

    digest = hashlib.sha256()
    with open(os.path.join(src, checkpoint.CHECKPOINT), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):  # hashlib.file_digest is Python >= 3.11
            digest.update(block)
    sha = digest.hexdigest()
    return {"run_dir": os.path.abspath(src), "name": os.path.basename(src), "sha256": sha, "corrupt": c.get("corrupt"),
            "corrupt_prob": c.get("corrupt_prob"), "dataset": c.get("dataset"),
            "epochs_trained": r["metrics"].get("epochs_trained"), "train_accuracy": r["metrics"].get("train_accuracy"),
            "test_accuracy": r["metrics"].get("test_accuracy")}


def _source_model(cfg, datasets, build_model, options):
    """A one-device model holding the final (raw, trained) weights of the run --init_from names."""
    from rethink_tf import models
    from rethink_tf.training import checkpoint

    model = models.build(cfg.model, datasets.input_shape, datasets.num_classes, builder=build_model, **options)
    try:
        model.load_weights(os.path.join(os.path.normpath(cfg.init_from), checkpoint.CHECKPOINT))
    except Exception as e:  # noqa: BLE001 (h5py / Keras raise ValueError, KeyError, OSError on a mismatch)
        raise UserError(f"--init_from={cfg.init_from}: its checkpoint does not load into this model "
                        f"({type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]})") from None
    return model


def _complete(final, cfg):
    """A valid results.json that holds everything this invocation asks for (--measures, --extra_test: what a
    finished run gains from its last checkpoint without training again, results.lacks)."""
    return results.valid_results(final) and not results.lacks(results.read_json(final), cfg)


def _measures(cfg, model, datasets, build_model, options, init_sha=None):
    """rethink_tf.measures of the weights the run reports (the moving average with --ema_decay), computed on a
    one-device copy of the model (the same code under every strategy), with the run's initialization rebuilt from
    its seed for the distance from it."""
    import keras
    import tensorflow as tf

    from rethink_tf import measures, models
    from rethink_tf.training import optim

    print("measuring the trained network (--measures) ...", flush=True)
    if cfg.ema_decay:
        with optim.ema_weights(model):
            weights = model.get_weights()
    else:
        weights = model.get_weights()
    with dtype_policy(cfg.dtype_policy):
        keras.utils.set_random_seed(cfg.seed)  # as run() seeds the model it trains: the same initial weights
        try:  # --init_from: the distance is from the weights it started from, if they are still those
            if cfg.init_from and _init_source(cfg, datasets)["sha256"] != init_sha:
                raise UserError(f"{cfg.init_from}'s checkpoint is not the one this run started from")
            initial = (_source_model(cfg, datasets, build_model, options) if cfg.init_from else
                       models.build(cfg.model, datasets.input_shape, datasets.num_classes, builder=build_model,
                                    **options))
        except UserError as e:
            print(f"warning: no distance from initialization: {e}", flush=True)
            initial = None
        trained = models.build(cfg.model, datasets.input_shape, datasets.num_classes, builder=build_model, **options)
    trained.set_weights(weights)
    try:
        out = measures.compute(trained, datasets.train_eval, datasets.test, initial=initial)
    except (ArithmeticError, MemoryError, ValueError, tf.errors.OpError) as e:  # never costs the run's results
        print(f"warning: --measures failed ({type(e).__name__}: {str(e)[:200]}); results.json records the error",
              flush=True)
        return {"error": f"{type(e).__name__}: {str(e)[:500]}"}
    print(f"  measured in {out['seconds']:.1f} s: log10 product of spectral norms "
          f"{out.get('log10_product_spectral', float('nan')):.2f}, distance from init "
          f"{out.get('distance_from_init', float('nan')):.3g}, median margin {out['margins']['quantiles']['0.5']:.3g}"
          f", sharpness {out['sharpness']['top_hessian_eigenvalue']:.3g}", flush=True)
    return out


def _add_extra_tests(record, cfg, model, datasets, names):
    """The final evaluation of --extra_test sets a finished run did not have, on the weights it reports (the
    moving average with --ema_decay), into its metrics; its history has no per-epoch values of them (noted)."""
    from rethink_tf.training import loop as loop_lib
    from rethink_tf.training import optim

    wrap = ((lambda ds: loop_lib.one_hot_labels(ds, datasets.num_classes)) if cfg.label_smoothing
            else (lambda ds: ds))
    with (optim.ema_weights(model) if cfg.ema_decay else contextlib.nullcontext()):
        for name in names:
            ev = loop_lib.evaluate_local(model, wrap(datasets.extra_test[name]), cfg.label_smoothing)
            record["metrics"].setdefault("extra_test", {})[name] = {
                **{k: float(v) for k, v in ev.items()}, "added_after_training": True}
            print(f"  {name}: test accuracy {100 * ev['accuracy']:.2f}% (evaluated after training: no per-epoch "
                  "values in its history)", flush=True)
    record["config"]["extra_test"] = ",".join(dict.fromkeys(
        [*TrainConfig.from_dict(record["config"]).data.extra_test_names(), *names]))
    record.setdefault("corruption", {}).setdefault("extra_test", {}).update(
        {n: datasets.summary["extra_test"][n] for n in names})


STALLED_LR_FRACTION = 0.01  # an unfitted run whose lr fell below this fraction of its start has stalled, not failed


def summary(cfg, datasets, metrics, status, path, workdir):
    """The few plain lines a run ends with: what, how well, when it fit, where the results are, what next."""
    d = cfg.data
    labels = ("true labels" if d.corrupt == "none" else f"labels corrupted with p = {d.corrupt_prob:g}"
              if d.corrupt == "labels" else corruption_label(d.to_dict()).replace("_", " "))
    thr = f"{100 * cfg.fit_threshold:g}%"
    fit = (f"fitted (an epoch at >= {thr} training accuracy) at epoch {metrics['epochs_to_fit']}, step "
           f"{metrics['steps_to_fit']:,}" if metrics["epochs_to_fit"] else
           f"did not reach {thr} training accuracy in {metrics['epochs_trained']} epochs")
    if not metrics["epochs_to_fit"] and metrics.get("final_lr", 1.0) < STALLED_LR_FRACTION * cfg.learning_rate:
        fit += (f"; the learning rate had decayed to {metrics['final_lr']:.2g}, below "
                f"{100 * STALLED_LR_FRACTION:g}% of its start {cfg.learning_rate:g}, so training stalled: raise "
                "--lr_decay_examples (examples per decay period); more --epochs will not help")
    weights = " (moving-average weights)" if metrics.get("evaluated_weights") == "ema" else ""
    return "\n".join([
        f"done: {cfg.model} on {d.dataset} ({datasets.train_size:,} train / {datasets.test_size:,} test images), "
        f"{labels}, {metrics['epochs_trained']} epochs" + (", stopped at fit" if status == "stopped_at_train_accuracy"
                                                           else ""),
        f"  train accuracy {100 * metrics['train_accuracy']:.2f}% on the labels trained on, test accuracy "
        f"{100 * metrics['test_accuracy']:.2f}% on clean labels{weights}",
        *[f"  extra test {name}: accuracy {100 * ev['accuracy']:.2f}% ({datasets.summary['extra_test'][name]['size']:,}"
          f" images)" for name, ev in (metrics.get("extra_test") or {}).items()],
        f"  {fit}",
        f"  results: {path}",
        f"  figures: python scripts/make_figures.py --results={workdir} --out=figures"]
        + ([f"  curves:  tensorboard --logdir={workdir}"] if cfg.tensorboard else []))


BN_MIN_REPLICA_BATCH = 16


def _warn_small_replica_batch(cfg, model, replicas):
    """BatchNorm normalizes over each replica's batch: a handful of images gives noisy statistics."""
    import keras

    from rethink_tf import models

    per_replica = cfg.batch_size // replicas
    has_bn = any(isinstance(layer, keras.layers.BatchNormalization) for layer in models.all_layers(model))
    if has_bn and per_replica < BN_MIN_REPLICA_BATCH and not cfg.sync_batchnorm:
        print(f"warning: {cfg.model} has BatchNormalization and each of the {replicas} replica(s) sees "
              f"{per_replica} images per step (< {BN_MIN_REPLICA_BATCH}); its statistics will be noisy. Raise "
              "--batch_size with the number of GPUs or use --sync_batchnorm", flush=True)


SCRATCH_PREFIX = "rethink_tf-scratch-"


def _scratch_dir(member):
    """A non-chief worker's private output folder, named after its PID. Folders of workers that died without
    removing theirs (kill -9, a lost node) are removed here first, by any later worker of this host."""
    import glob

    from rethink_tf.training import lock

    for old in glob.glob(os.path.join(tempfile.gettempdir(), SCRATCH_PREFIX + "*")):
        pid = os.path.basename(old)[len(SCRATCH_PREFIX):].split("-")[0]
        if pid.isdigit() and not lock.pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{os.getpid()}-{member.kind}{member.index}-")


def _rebuilt_history(run_dir, rows, saved_rows, epochs, chief):
    """history.jsonl's rows up to `epochs`, with rows it lost (torn, emptied) taken from the record the checkpoint
    was saved with; the chief rewrites the file when it rebuilt any."""
    have = {row.get("epoch") for row in rows}
    extra = [row for row in saved_rows if isinstance(row, dict) and row.get("epoch") not in have
             and isinstance(row.get("epoch"), int) and row["epoch"] <= epochs]
    if not extra:
        return rows
    rows = sorted(rows + extra, key=lambda row: row["epoch"])
    print(f"warning: {run_dir}/{results.HISTORY} had lost the rows of epoch(s) "
          f"{_ranges([row['epoch'] for row in extra])}; rebuilt them from the checkpoint's record", flush=True)
    if chief:
        results.write_history(run_dir, rows)
    return rows


def _ranges(numbers):
    """[1, 2, 3, 7] -> "1-3, 7"."""
    parts, start = [], None
    for i, n in enumerate(numbers):
        start = n if start is None else start
        if i + 1 == len(numbers) or numbers[i + 1] != n + 1:
            parts.append(f"{start}-{n}" if n > start else f"{n}")
            start = None
    return ", ".join(parts)


def _run_dir_name(cfg, replicas=1):
    """The run directory's name: one path component, so that a run never writes outside --workdir."""
    name = cfg.name(replicas)
    if cfg.run_name is not None:
        bad = not name or name in (".", "..") or os.sep in name or (os.altsep and os.altsep in name) or "\0" in name
    else:  # derived: a tfds:NAME/CONFIG dataset nests a folder, which stays inside --workdir
        bad = os.path.isabs(name) or ".." in name.split("/")
    if bad:
        raise UserError(f"--run_name must be a plain directory name inside --workdir; received {name!r}")
    return name


def _check_writable(run_dir):
    """One line, before any data is loaded or directory made, when run_dir cannot be created or written."""
    import errno

    for part in os.path.normpath(os.path.abspath(run_dir)).split(os.sep):
        if len(part.encode()) > 255:
            raise UserError(f"cannot write runs under {run_dir}: the name {part[:40]}... is longer than 255 bytes "
                            f"({os.strerror(errno.ENAMETOOLONG)}); choose a shorter --workdir or --run_name")
    existing = run_dir
    while not os.path.exists(existing):
        existing = os.path.dirname(existing) or "."
    if not os.path.isdir(existing):
        raise UserError(f"cannot write runs under {run_dir}: {existing} is a file, not a folder; choose another "
                        "--workdir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write runs under {run_dir}: {existing} is not writable by this user; choose "
                        "another --workdir")


INIT_SHA256 = "init_from_sha256"  # config.json: SHA-256 of the --init_from checkpoint this run started from
DATA_FINGERPRINT = "data_fingerprint"  # config.json's record of the data (sources.fingerprint), beside the fields
BN_REPLICA_BATCH = "bn_replica_batch"  # config.json: TrainConfig.bn_replica_batch of the run (None: the global batch)
EXAMPLE_KEYS = "example_keys"  # config.json's record of how examples were keyed (sources.KEY_SCHEME)


def _check_same_data(run_dir, fingerprint, keys=None, config=None):
    """One line when the run directory's run was trained on other data than this invocation reads (other files
    behind --data_dir, labels replaced in place, another source): resuming or reporting it would mix two.

    An unfinished run started by a version of the package that keyed in-memory examples by file index (before
    sources.KEY_SCHEME) drew other random labels and subsets: it cannot be continued with today's; a finished one
    is still reported, with a note that says so."""
    config = config if config is not None else (_stored_config(os.path.join(run_dir, results.CONFIG)) or {})
    stored = config.get(DATA_FINGERPRINT)
    final = os.path.join(run_dir, results.RESULTS)
    finished = results.valid_results(final)
    if config and keys and config.get(EXAMPLE_KEYS) != keys:
        if not finished:
            was = config.get(EXAMPLE_KEYS) or "file-index keys (rethink_tf before content keys)"
            raise UserError(f"{run_dir} was started with {was}, this version keys examples by {keys}: its corrupted "
                            "labels and subsets differ, so it cannot be resumed; rerun it under another --workdir (or "
                            "finish it with the version that started it)")
        print(f"note: {run_dir} was trained by a version that keyed examples by "
              f"{config.get(EXAMPLE_KEYS) or 'file index'}: its corrupted labels, subsets and batch order differ from "
              f"what this version ({keys}) draws; its numbers stand for that version (rerun under another --workdir "
              "to reproduce them with this one)", flush=True)
    if stored is None and finished:  # a finished run whose config.json went missing
        stored = (results.read_json(final).get("corruption") or {}).get(DATA_FINGERPRINT)
    if stored and fingerprint and stored != fingerprint:
        raise UserError(f"{run_dir} was trained on other data (fingerprint {stored}) than these settings read now "
                        f"(fingerprint {fingerprint}): --data_dir holds other files, or they changed; point "
                        "--data_dir at the run's data, or use another --workdir or --run_name")


def _stored_bn_batch(run_dir, stored, cfg):
    """BatchNorm's per-replica batch of the run in run_dir: config.json's record, or, for a run started before
    config.json recorded it, TrainConfig.bn_replica_batch of the replica count it ran on (results.json's env, else
    its first recorded resume); None when neither tells (a run killed before it ever resumed)."""
    if BN_REPLICA_BATCH in stored or not stored:
        return stored.get(BN_REPLICA_BATCH)
    replicas = None
    final = os.path.join(run_dir, results.RESULTS)
    if results.valid_results(final):
        replicas = (results.read_json(final).get("env") or {}).get("replicas")
    if replicas is None:
        replicas = next((r.get("replicas") for r in results.read_resumes(run_dir)
                         if isinstance(r, dict) and r.get("replicas")), None)
    return cfg.bn_replica_batch(int(replicas)) if replicas else None


def _stored_run_config(run_dir):
    """The run directory's config.json dict (None: no config.json). When config.json is damaged (a torn write, a
    disk error), the copy each checkpoint carries in its STATE record takes its place, with a warning (run()
    rewrites config.json from it); only when no checkpoint holds one is it the one line of _stored_config."""
    from rethink_tf.training import checkpoint

    path = os.path.join(run_dir, results.CONFIG)
    try:
        return _stored_config(path)
    except UserError:
        for name in (checkpoint.CHECKPOINT, checkpoint.PREVIOUS):
            state = checkpoint.embedded_state(os.path.join(run_dir, name))
            if isinstance(state, dict) and isinstance(state.get("config"), dict) and "model" in state["config"]:
                print(f"warning: {path} is unreadable; using the copy of the run's config inside its checkpoint "
                      f"{name} (config.json is rewritten from it)", flush=True)
                return state["config"]
        raise


def _stored_config(path, key=None):
    """The config dict a run directory's config.json (or results.json[key]) holds; None when the file is absent.
    An unreadable config.json is one line: it is the only record of what the run's checkpoint belongs to."""
    if not os.path.exists(path):
        return None
    try:
        data = results.read_json(path)
        data = data.get(key) if key and isinstance(data, dict) else data
    except (OSError, ValueError) as e:
        if key:
            return None  # an unreadable results.json is rewritten from the checkpoint (valid_results says so)
        raise UserError(f"{path} is unreadable ({type(e).__name__}: {str(e)[:80]}): it records which run the "
                        "checkpoint beside it belongs to; restore it, or delete its folder to start the run again")
    if not isinstance(data, dict) or (not key and "model" not in data):
        if key:
            return None
        raise UserError(f"{path} holds no run config; restore it, or delete its folder to start the run again")
    return data


def _jsonable(d):
    import json

    return json.loads(json.dumps(d))
