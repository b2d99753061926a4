"""Per-step overhead of the package's training loop against a bare tf.function loop of the same steps.

    python benchmarks/step_overhead.py [--steps_per_call 1,4,16,32] [--out docs/benchmarks/step_overhead.png]
    python benchmarks/step_overhead.py --prime_epoch   # one device, an epoch of 397 steps: default loop vs fit
    python benchmarks/step_overhead.py --xla           # one device, --jit_compile --jit_scope=call

A tiny model (one Dense layer on flattened 28×28×1 Fashion-MNIST images, batch 128: Debian's full 60,000 images, 468
steps per epoch, where installed, else the built-in 5,000, 39 steps, whose 20 ms epochs time poorly)
makes every step's cost overhead: Python, dispatch, the input pipeline, callbacks, all-reduce. Measured:
* package: `rethink_tf.train.run` (the CLI's path: in-memory pipeline, keyed order, callbacks, checkpoint each
  epoch), train-only time per step from the history (images/s of epochs 2..N, best), with --steps_per_execution k;
* bare: a tf.function that runs k steps of the same model, loss and SGD on batches already in memory, called
  until an epoch's steps are done, best of N epochs;
* bare with metrics: the bare loop that also keeps the running loss and accuracy sums that the package records
  for every epoch (Figure 1's curves), in the fewest ops (one variable, one assign_add): the ratio to it leaves
  that work out and counts only the loop's overhead. The issue's goal is against the plain bare loop;
* bare, shuffled: the bare loop on a new order of the batches each epoch (a permutation, one gather per batch in
  tf.data), as the paper's SGD and the package train: the ratio to it leaves out the shuffle's data movement,
  which the plain bare loop, reading the same cached batches every epoch, never pays.
Each loop is measured --repeats times, interleaved, and the best counts (this machine's speed drifts by ~10%).
Each under one device (TF's default strategy, as the CLI's --strategy=none), under MirroredStrategy over 2 logical
CPUs (the CPU proxy of a multi-GPU host) and under MultiWorkerMirroredStrategy in 2 local worker processes of one
CPU device each, joined by TF_CONFIG on localhost ports (the CPU proxy of a cluster; worker 0's time). Under
both multi-replica strategies the package's loop is its compiled strategy.run loop (k steps per call).
The package runs both input paths: --nodevice_data (tf.data on the host makes each batch) and --device_data (the
training set on the device, each step's batch made inside the compiled loop: here, without augmentation, one
gather from the set whitened once; the strategy.run loop under one device too). package_ms_per_step is the path
the CLI takes by default (default_path: read from a one-epoch run with neither flag, per strategy).
Issue 21's goal: package <= 1.15x bare. One JSON line per (strategy, k), a summary line, and a figure of time
per step vs steps per call.
--xla: one device with --jit_compile --jit_scope=call (by default on CPU for the paper's MLPs; for a user's model,
XLA is off by default), where the package's loop runs with --device_data by default and XLA compiles each call
whole (k steps: no per-op dispatch),
against the plain bare loop (no XLA), the bare loop on shuffled batches and the bare loop compiled whole by XLA
(bare_xla: the same gathers of a new permutation per epoch). One JSON line per k.
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines)

console.quiet()

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

from rethink_tf import results  # noqa: E402
from rethink_tf.config import DataConfig, TrainConfig  # noqa: E402
from rethink_tf.data import sources  # noqa: E402
from rethink_tf.train import run  # noqa: E402

BATCH = 128
PATHS = {"tf_data": False, "device_data": True, "default": None}  # the package's input paths: --[no]device_data


def tiny(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(inputs)))


DATASET = "fashion_mnist" if os.path.isdir("/usr/share/datasets/fashion-mnist") else "fashion_mnist_5k"


def package_step_seconds(strategy, k, epochs, loop=None, device_data=None, cluster=False, train_examples=None,
                         env=None, jit=False, jit_scope=None):
    """(seconds per step, steps per call, whether it trained with --device_data) of the package's CLI path;
    device_data None: the CLI's default. A cluster's non-chief worker returns Nones. `env`: a dict that receives
    results.json's env (which loop ran). `jit`, `jit_scope`: --jit_compile (off: the CLI's default for a user's
    model), --jit_scope."""
    cfg = TrainConfig(model="user:tiny", epochs=epochs, batch_size=BATCH, steps_per_execution=k, tensorboard=False,
                      learning_rate=0.01, jit_compile=jit, jit_scope=jit_scope,
                      data=DataConfig(dataset=DATASET, train_examples=train_examples),
                      device_data=device_data, strategy="multi_worker" if cluster else "none", cluster_timeout=120)
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own start and summary lines
        path = run(cfg, tempfile.mkdtemp(), strategy=strategy, build_model=tiny, verbose=0, loop=loop)
    if not os.path.exists(path):  # a cluster's non-chief worker writes no results
        return None, None, None
    record = results.read_json(path)
    if env is not None:
        env.update(record["env"])
    rates = [h["images_per_s"] for h in record["history"][1:]] or [h["images_per_s"] for h in record["history"]]
    return BATCH / max(rates), record["env"].get("steps_per_execution"), record["env"].get("device_data")


def bare_training(input_shape, strategy):
    """The bare loops' model (the tiny one), SGD with momentum 0.9 (its slots built under `strategy`) and their update:
    update(xb, yb) -> (logits, mean loss) after one SGD step on the summed cross-entropy / BATCH."""
    with strategy.scope():
        model = tiny(input_shape, 10)
        opt = keras.optimizers.SGD(0.01, momentum=0.9)
        opt.build(model.trainable_variables)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")

    def update(xb, yb):
        with tf.GradientTape() as tape:
            logits = model(xb, training=True)
            loss = loss_fn(yb, logits) / BATCH
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return logits, loss

    return update


def bare_step_seconds(strategy, k, epochs, metrics=False, shuffled=False):
    """`metrics`: the step also keeps the running loss and accuracy sums the package records for every epoch (one
    variable, one assign_add: the fewest ops that keep them), so that the ratio to it leaves out that work.
    `shuffled`: batches in a new order each epoch, as the paper's SGD (and the package) trains, made the usual way
    for in-memory arrays: a permutation per epoch and one gather per batch in tf.data; otherwise the same batches
    every epoch, cached (no per-step input work at all)."""
    split = sources.load(DATASET, "train")
    x = split.arrays["image"].astype(np.float32) / 255.0
    y = split.arrays["label"]
    steps = len(y) // BATCH
    if shuffled:  # each worker gathers its share of every global batch (the package's rule), split per replica
        xs, ys = tf.constant(x), tf.constant(y)

        def input_fn(ctx):
            local = BATCH // ctx.num_input_pipelines
            lo, per_replica = ctx.input_pipeline_id * local, ctx.get_per_replica_batch_size(BATCH)

            def epoch(e):  # the same permutation on every worker
                order = tf.random.experimental.stateless_shuffle(tf.range(len(y)), seed=tf.stack([e, e]))
                return tf.data.Dataset.from_tensor_slices(tf.reshape(order[:steps * BATCH], [steps, BATCH]))

            ds = tf.data.Dataset.range(epochs + 1).flat_map(epoch).map(
                lambda idx: (tf.gather(xs, idx[lo:lo + local]), tf.gather(ys, idx[lo:lo + local])))
            ds = (ds.rebatch(per_replica) if per_replica != local else ds).prefetch(tf.data.AUTOTUNE)
            # declared endless (it outlasts the loop), as the cached stream's repeat() is: on a stream of unknown
            # length tf.distribute all-reduces a has-data flag at every step under a multi-worker strategy
            return ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))

        iterator = iter(strategy.distribute_datasets_from_function(input_fn))
    else:
        ds = tf.data.Dataset.from_tensor_slices((x[:steps * BATCH], y[:steps * BATCH])).batch(BATCH).cache().repeat()
        iterator = iter(strategy.experimental_distribute_dataset(ds))
    update = bare_training(x.shape[1:], strategy)
    if metrics:
        with strategy.scope():
            sums = tf.Variable(tf.zeros([3]), synchronization=tf.VariableSynchronization.ON_READ,
                               aggregation=tf.VariableAggregation.SUM)

    def step(batch):
        xb, yb = batch
        logits, loss = update(xb, yb)
        if metrics:  # loss and hit sums, examples (per replica; the sums are read at an epoch's end)
            hits = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(logits, -1), tf.cast(yb, tf.int64)), tf.float32))
            sums.assign_add(tf.stack([loss * BATCH, hits, tf.cast(tf.shape(yb)[0], tf.float32)]))

    @tf.function
    def steps_fn(iterator, n):  # the iterator as an argument: no traced graph keeps it (and its data) alive
        for _ in tf.range(n):
            strategy.run(step, args=(next(iterator),))

    calls, best = steps // k, None
    steps_fn(iterator, tf.constant(k))  # trace
    for _ in range(epochs):
        start = time.perf_counter()
        for _ in range(calls):
            steps_fn(iterator, tf.constant(k))
        elapsed = (time.perf_counter() - start) / (calls * k)
        best = elapsed if best is None else min(best, elapsed)
    return best


def bare_xla_step_seconds(k, epochs):
    """The bare loop as XLA compiles it: one tf.function(jit_compile=True) call runs k steps, each gathering its
    batch from the training set held as tensors by a new permutation per epoch (what the package's loop does with
    --jit_compile --device_data on one device), the same model, loss and SGD; best of `epochs` epochs."""
    split = sources.load(DATASET, "train")
    xs = tf.constant(split.arrays["image"].astype(np.float32) / 255.0)
    ys = tf.constant(split.arrays["label"])
    steps = int(ys.shape[0]) // BATCH
    update = bare_training(xs.shape[1:], tf.distribute.get_strategy())

    @tf.function(jit_compile=True)
    def steps_fn(rows, first, n, xs, ys):  # the arrays as arguments, as the package passes them
        i = tf.constant(0)
        while i < n:  # a loop condition and a gather: XLA takes n and the row as values, not constants
            idx = tf.gather(rows, first + i)
            i += 1
            update(tf.gather(xs, idx), tf.gather(ys, idx))

    def rows(e):
        order = tf.random.experimental.stateless_shuffle(tf.range(int(ys.shape[0])), seed=[e, e])
        return tf.reshape(order[:steps * BATCH], [steps, BATCH])

    calls, best = steps // k, None
    steps_fn(rows(0), tf.constant(0), tf.constant(k), xs, ys)  # trace and compile
    for e in range(epochs):
        r = rows(e + 1)
        start = time.perf_counter()
        for c in range(calls):
            steps_fn(r, tf.constant(c * k), tf.constant(k), xs, ys)
        elapsed = (time.perf_counter() - start) / (calls * k)
        best = elapsed if best is None else min(best, elapsed)
    return best


def xla(args):
    """One device, --jit_compile --jit_scope=call on the tiny model: the package's loop (--device_data by default
    then: XLA compiles each call's k steps) against the plain bare loop (no XLA: issue 21's reference), the bare
    loop on shuffled batches and the bare loop compiled whole by XLA. One JSON line per steps-per-call value."""
    strategy = tf.distribute.get_strategy()
    ks = [int(v) for v in args.steps_per_call.split(",")]
    for k in ks:
        times, env = {}, {}
        runs = {"package": lambda: package_step_seconds(strategy, k, args.epochs, env=env, jit=True,
                                                        jit_scope="call")[0],
                "bare": lambda: bare_step_seconds(strategy, k, args.epochs),
                "bare_shuffled": lambda: bare_step_seconds(strategy, k, args.epochs, shuffled=True),
                "bare_xla": lambda: bare_xla_step_seconds(k, args.epochs)}
        for _ in range(args.repeats):  # interleaved, best of each
            for name, fn in runs.items():
                seconds = fn()
                times[name] = min(times.get(name, seconds), seconds)
        print(json.dumps({
            "benchmark": "step_overhead_xla", "dataset": DATASET, "strategy": "one_device", "steps_per_call": k,
            "repeats": args.repeats, "package_loop": env["loop"], "package_device_data": env["device_data"],
            "package_jit_scope": env.get("jit_scope"), "package_steps_per_call": env["steps_per_execution"],
            "package_ms_per_step": round(1e3 * times["package"], 3), "bare_ms_per_step": round(1e3 * times["bare"], 3),
            "bare_shuffled_ms_per_step": round(1e3 * times["bare_shuffled"], 3),
            "bare_xla_ms_per_step": round(1e3 * times["bare_xla"], 3),
            "ratio": round(times["package"] / times["bare"], 2),
            "ratio_to_bare_xla": round(times["package"] / times["bare_xla"], 2)}), flush=True)
    return 0


def worker_main(args):
    """One process of the 2-worker cluster (TF_CONFIG on localhost ports): prints its seconds per step. Nothing
    touches TensorFlow before the cluster strategy exists (its rule)."""
    hosts = [f"localhost:{p}" for p in args.ports.split(",")]
    os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": args.worker}})
    chose = None
    if args.worker_loop.startswith("bare"):
        seconds = bare_step_seconds(tf.distribute.MultiWorkerMirroredStrategy(), args.k, args.epochs,
                                    metrics=args.worker_loop == "bare_metrics",
                                    shuffled=args.worker_loop == "bare_shuffled")
        used = args.k
    else:
        seconds, used, chose = package_step_seconds(None, args.k, args.epochs, cluster=True,
                                                    device_data=PATHS[args.worker_loop])
    print(json.dumps({"seconds": seconds, "steps_per_call": used, "device_data": chose}), flush=True)
    return 0


def cluster_step_seconds(loop, k, epochs):
    """(seconds per step, steps per call, device_data) of worker 0 of 2 local worker processes (the CPU proxy of a
    multi-host cluster)."""
    import socket
    import subprocess

    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("localhost", 0))
            ports.append(str(sock.getsockname()[1]))
    procs = [subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", str(i), "--ports", ",".join(ports),
                               "--worker_loop", loop, "--k", str(k), "--epochs", str(epochs)],
                              stdout=subprocess.PIPE, text=True) for i in range(2)]
    try:
        outs = [p.communicate(timeout=900)[0] for p in procs]
    finally:
        for p in procs:  # a hung collective: leave no worker behind
            if p.poll() is None:
                p.kill()
    if any(p.returncode for p in procs):
        raise RuntimeError(f"a {loop} worker failed (exit {[p.returncode for p in procs]}): {outs}")
    out = json.loads(outs[0].strip().splitlines()[-1])
    return out["seconds"], out["steps_per_call"], out["device_data"]


PRIME_STEPS = 397  # a prime number of steps per epoch: Fashion-MNIST's first 50,816 images at batch 128


def prime_epoch(args):
    """One device, an epoch of PRIME_STEPS steps (no divisor but 1): the CLI's default (the strategy.run loop, 32
    steps per call, a shorter last call) against Keras' fit, whose calls must divide the epoch (1 step per call),
    and the bare loop at 32 and at 1 step per call. One JSON line."""
    if DATASET != "fashion_mnist":
        raise SystemExit("--prime_epoch needs Debian's full Fashion-MNIST (apt-get install dataset-fashion-mnist)")
    strategy = tf.distribute.get_strategy()
    times, envs = {}, {}
    runs = {"default": lambda env: package_step_seconds(strategy, None, args.epochs, train_examples=PRIME_STEPS * BATCH,
                                                        env=env)[0],
            "fit": lambda env: package_step_seconds(strategy, None, args.epochs, loop="fit",
                                                    train_examples=PRIME_STEPS * BATCH, env=env)[0],
            "bare_32": lambda env: bare_step_seconds(strategy, 32, args.epochs),
            "bare_1": lambda env: bare_step_seconds(strategy, 1, args.epochs)}
    for _ in range(args.repeats):  # interleaved, best of each
        for name, fn in runs.items():
            env = envs.setdefault(name, {})
            seconds = fn(env)
            times[name] = min(times.get(name, seconds), seconds)
    row = {"benchmark": "step_overhead_prime_epoch", "dataset": DATASET, "strategy": "one_device",
           "train_examples": PRIME_STEPS * BATCH, "steps_per_epoch": PRIME_STEPS, "repeats": args.repeats,
           "default_loop": envs["default"]["loop"], "default_steps_per_call": envs["default"]["steps_per_execution"],
           "default_ms_per_step": round(1e3 * times["default"], 3),
           "fit_steps_per_call": envs["fit"]["steps_per_execution"], "fit_ms_per_step": round(1e3 * times["fit"], 3),
           "bare_32_ms_per_step": round(1e3 * times["bare_32"], 3),
           "bare_1_ms_per_step": round(1e3 * times["bare_1"], 3),
           "fit_over_default": round(times["fit"] / times["default"], 2),
           "default_over_bare_32": round(times["default"] / times["bare_32"], 2)}
    print(json.dumps(row), flush=True)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)  # a cluster worker process
    ap.add_argument("--ports", default="", help=argparse.SUPPRESS)
    ap.add_argument("--worker_loop", default="default", help=argparse.SUPPRESS)
    ap.add_argument("--k", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--steps_per_call", default="1,4,13,39", help="steps per compiled call (divisors of the epoch's steps: 468 or 39)")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="measurements of each loop, interleaved; the best counts")
    ap.add_argument("--out", default=None, help="also draw time per step vs steps per call there (PNG)")
    ap.add_argument("--strategies", default="one_device,mirrored_2_logical_cpus,multi_worker_2_processes",
                    help="which of one_device, mirrored_2_logical_cpus, multi_worker_2_processes to measure")
    ap.add_argument("--prime_epoch", action="store_true",
                    help=f"only the one-device epoch of {PRIME_STEPS} steps (a prime): the default loop against fit")
    ap.add_argument("--xla", action="store_true",
                    help="only one device with --jit_compile (the loop's whole call compiled) against the bare loops")
    args = ap.parse_args()
    if args.worker is not None:
        return worker_main(args)
    if args.prime_epoch:
        return prime_epoch(args)
    if args.xla:
        return xla(args)
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    ks = [int(v) for v in args.steps_per_call.split(",")]
    # one device as the CLI trains on one device (--strategy=none: TF's default strategy, no distribution wrapper);
    # the bare loop under the same strategy; the cluster in 2 processes of one CPU device each
    strategies = {"one_device": tf.distribute.get_strategy,
                  "mirrored_2_logical_cpus": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                  "multi_worker_2_processes": None}
    strategies = {name: strategies[name] for name in args.strategies.split(",")}
    rows = []
    for name, make in strategies.items():
        strategy = make and make()

        def measure(loop, k, epochs):  # (seconds per step, steps per call, device_data)
            if strategy is None:
                return cluster_step_seconds(loop, k, epochs)
            if loop.startswith("bare"):
                return bare_step_seconds(strategy, k, epochs, metrics=loop == "bare_metrics",
                                         shuffled=loop == "bare_shuffled"), k, None
            return package_step_seconds(strategy, k, epochs, device_data=PATHS[loop])

        default = "device_data" if measure("default", max(ks), 1)[2] else "tf_data"  # the path the CLI takes
        for k in ks:
            # each loop `repeats` times, interleaved (tf.data path, bare, bare with metrics, bare shuffled,
            # --device_data, again),
            # best of each: a drift of the machine's speed then biases no loop against another
            times, used = {}, {}
            for _ in range(args.repeats):
                for loop in ("tf_data", "bare", "bare_metrics", "bare_shuffled", "device_data"):
                    seconds, used[loop], _ = measure(loop, k, args.epochs)
                    times[loop] = min(times.get(loop, seconds), seconds)
            tf_data, bare, bare_metrics, shuffled, device = (
                times[n] for n in ("tf_data", "bare", "bare_metrics", "bare_shuffled", "device_data"))
            package = times[default]
            row = {"benchmark": "step_overhead", "dataset": DATASET, "strategy": name, "steps_per_call": k,
                   "package_steps_per_call": used[default], "repeats": args.repeats, "default_path": default,
                   "package_ms_per_step": round(1e3 * package, 3),
                   "bare_ms_per_step": round(1e3 * bare, 3), "ratio": round(package / bare, 2),
                   "bare_with_metrics_ms_per_step": round(1e3 * bare_metrics, 3),
                   "ratio_to_bare_with_metrics": round(package / bare_metrics, 2),
                   "bare_shuffled_ms_per_step": round(1e3 * shuffled, 3),
                   "ratio_to_bare_shuffled": round(package / shuffled, 2),
                   "package_tf_data_ms_per_step": round(1e3 * tf_data, 3),
                   "tf_data_ratio": round(tf_data / bare, 2),
                   "package_device_data_ms_per_step": round(1e3 * device, 3),
                   "device_data_ratio": round(device / bare, 2)}
            rows.append(row)
            print(json.dumps(row), flush=True)

    def worst(key, at=None):
        return max(r[key] for r in rows if at is None or r["steps_per_call"] == at)

    top = max(ks)
    print(json.dumps({"summary": "step_overhead", "target": "<= 1.15", "worst_ratio": worst("ratio"),
                      f"worst_ratio_at_{top}_steps_per_call": worst("ratio", top),
                      "worst_ratio_to_bare_with_metrics": worst("ratio_to_bare_with_metrics"),
                      f"worst_ratio_to_bare_with_metrics_at_{top}_steps_per_call":
                          worst("ratio_to_bare_with_metrics", top),
                      "worst_ratio_to_bare_shuffled": worst("ratio_to_bare_shuffled"),
                      f"worst_ratio_to_bare_shuffled_at_{top}_steps_per_call": worst("ratio_to_bare_shuffled", top),
                      "worst_tf_data_ratio": worst("tf_data_ratio"),
                      "worst_device_data_ratio": worst("device_data_ratio"),
                      "met": worst("ratio") <= 1.15, f"met_at_{top}_steps_per_call": worst("ratio", top) <= 1.15}))
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for i, name in enumerate(strategies):
            sel = [r for r in rows if r["strategy"] == name]
            ax.plot(ks, [r["package_tf_data_ms_per_step"] for r in sel], "o-", color=f"C{i}",
                    label=f"package --nodevice_data, {name}")
            ax.plot(ks, [r["bare_ms_per_step"] for r in sel], "s--", color=f"C{i}", label=f"bare loop, {name}")
            ax.plot(ks, [r["package_device_data_ms_per_step"] for r in sel], "^:", color=f"C{i}",
                    label=f"package --device_data, {name}")
        ax.set(xscale="log", xlabel="steps per compiled call", ylabel="ms per step (tiny model: overhead)",
               title="Per-step overhead, 2 CPU cores")
        ax.legend(fontsize=7)
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        fig.savefig(args.out, dpi=130, bbox_inches="tight")
    return 0


if __name__ == "__main__":
    sys.exit(main())
