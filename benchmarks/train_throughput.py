"""Training throughput of every CIFAR-10 model through the real training path, against a PyTorch loop.

For each model: train images/s (train-only, the history's `images_per_s`: timed between the ends of an epoch's
first and last compiled call, so neither tracing nor validation counts), best of epochs 2..N, batch 128, 28×28×3,
SGD with momentum, through `rethink_tf.train.run` on generated CIFAR-10 binary files (the real input pipeline), and
with `--synthetic_data` one constant batch repeated (model only: the gap between the two is the input pipeline's
cost).

Reference: a plain PyTorch 2.13 loop over in-memory tensors on this machine class (2 cores):
mlp_1x512 18,300, mlp_3x512 9,100, small_alexnet 358, small_inception 61 images/s. Target: ratio >= 1.0.

    python benchmarks/train_throughput.py [--models mlp_1x512,small_alexnet] [--jit_compile both] [--epochs 3]

With XLA on, --jit_scope=call and --device_data (the CLI's default for the MLPs on one CPU device) XLA compiles each
call's steps whole (env.jit_scope "call"); `--device_data both` times the pipeline runs on both input paths,
`--jit_scope both` the runs with XLA on and --device_data both ways.

Prints one JSON line per (model, data, XLA setting, input path).
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines on a normal run)

console.quiet()

from conftest import write_cifar_binary  # noqa: E402  (writes the real CIFAR-10 binary format)

PYTORCH_IMAGES_PER_S = {"mlp_1x512": 18_300, "mlp_3x512": 9_100, "small_alexnet": 358, "small_inception": 61}
# steps per epoch measured: enough for a stable rate, few enough that the slow models finish in minutes
STEPS = {"mlp_1x512": 100, "mlp_3x512": 100, "small_alexnet": 12, "small_inception": 6}
BATCH = 128


def synthetic(datasets):
    """The same Datasets with train replaced by one constant batch repeated: the model's speed alone (no
    device_source: --device_data would train from the real set)."""
    import dataclasses

    import tensorflow as tf

    from rethink_tf.data import pipeline

    x, y = next(iter(datasets.train(0)))
    one = tf.data.Dataset.from_tensors((x, y))
    return dataclasses.replace(datasets, device_source=None, train=lambda first_epoch=0, first_step=0, shard=None:
                               pipeline._shard(one.repeat(), int(x.shape[0]), shard))


def measure(model, data_dir, workdir, epochs, jit, synthetic_data, dtype_policy="float32", strategy=None,
            batch=BATCH, device_data=None, jit_scope=None):
    """One run's train images/s (best epoch after the first) through rethink_tf.train.run; `strategy`: a
    tf.distribute strategy (None: one device); `jit`, `device_data`, `jit_scope`: --[no]jit_compile,
    --[no]device_data, --jit_scope (None: the CLI's default)."""
    from rethink_tf.config import DataConfig, TrainConfig
    from rethink_tf.data import pipeline
    from rethink_tf.train import run

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    cfg = TrainConfig(model=model, data=DataConfig(dataset="cifar10", data_dir=data_dir, test_examples=batch),
                      batch_size=batch, epochs=epochs, tensorboard=False, jit_compile=jit, dtype_policy=dtype_policy,
                      device_data=device_data, jit_scope=jit_scope,
                      run_name=f"{model}-{'synthetic' if synthetic_data else 'pipeline'}-{jit}"
                               f"-{dtype_policy}-{replicas}-{device_data}-{jit_scope}")
    datasets = None
    if synthetic_data:
        datasets = synthetic(pipeline.build(cfg.resolved().data, batch, epochs, num_replicas=replicas))
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own summary lines
        r = results_of(run(cfg, workdir, datasets=datasets, verbose=0, strategy=strategy))
    rates = [h["images_per_s"] for h in r["history"][1:]]
    best = max(rates)
    ref = PYTORCH_IMAGES_PER_S[model]
    return {"benchmark": "train_throughput", "model": model, "data": "synthetic" if synthetic_data else "pipeline",
            "dtype_policy": dtype_policy, "replicas": replicas, "loop": r["env"].get("loop"),
            "device_data": r["env"].get("device_data", device_data),
            "jit_compile": r["env"]["jit_compile"], "jit_scope": r["env"].get("jit_scope"),
            "steps_per_execution": r["env"].get("steps_per_execution", 1),
            "steps_per_epoch": r["metrics"]["steps_per_epoch"], "images_per_s": round(best, 1),
            "epochs_2_on": [round(v, 1) for v in rates], "pytorch_images_per_s": ref,
            "ratio_to_pytorch": round(best / ref, 3)}


def results_of(path):
    with open(path) as f:
        return json.load(f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(PYTORCH_IMAGES_PER_S))
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--jit_compile", default="both", choices=["off", "on", "both"])
    ap.add_argument("--data", default="both", choices=["pipeline", "synthetic", "both"])
    ap.add_argument("--device_data", default="both", choices=["default", "off", "on", "both"],
                    help="the pipeline runs' input path: the CLI's default, tf.data (off), --device_data (on) or "
                         "both (the synthetic batch has no device path: always the default there)")
    ap.add_argument("--jit_scope", default="default", choices=["default", "step", "call", "both"],
                    help="what XLA compiles in the runs with XLA on and --device_data: the default "
                         "(models.XLA_CALL_DEFAULTS), each step, the loop's whole call, or both")
    args = ap.parse_args()
    jits = {"off": [False], "on": [True], "both": [False, True]}[args.jit_compile]
    datas = {"pipeline": [False], "synthetic": [True], "both": [False, True]}[args.data]
    paths = {"default": [None], "off": [False], "on": [True], "both": [False, True]}[args.device_data]
    scopes = {"default": [None], "step": ["step"], "call": ["call"], "both": ["step", "call"]}[args.jit_scope]
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            if model not in PYTORCH_IMAGES_PER_S:
                print(f"error: unknown model {model!r}; known: {', '.join(PYTORCH_IMAGES_PER_S)}", file=sys.stderr)
                return 2
            data_dir = os.path.join(tmp, model)
            os.makedirs(data_dir)
            write_cifar_binary(data_dir, per_batch=STEPS[model] * BATCH // 5, test=BATCH)
            for synthetic_data in datas:
                for jit in jits:
                    for device_data in ([None] if synthetic_data else paths):
                        for scope in (scopes if jit and device_data is not False and not synthetic_data
                                      else [None]):
                            print(json.dumps(measure(model, data_dir, os.path.join(tmp, "runs"), args.epochs, jit,
                                                     synthetic_data, device_data=device_data, jit_scope=scope)),
                                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
