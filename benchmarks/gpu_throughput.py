"""Training throughput on GPUs: the four CIFAR-10 models (float32 and mixed_bfloat16, XLA on and off, one GPU and
all of them) through rethink_tf.train.run on the real in-memory pipeline, and Inception V3 on synthetic 299×299
batches (the model alone: one constant batch repeated). One JSON line per configuration. benchmarks/gpu.sh runs it.

    python benchmarks/gpu_throughput.py [--models ...] [--epochs 3] [--steps 50] [--inception_v3_batch 64]

--device_data (the training set on each GPU, batches made inside the compiled step) is measured on and off for the
CIFAR models in float32 with XLA off (the GPU default).
"""

import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rethink_tf import console  # noqa: E402

console.quiet()

import train_throughput  # noqa: E402


def inception_v3_synthetic(workdir, epochs, steps, batch, dtype_policy, jit, strategy):
    """Inception V3 (Table 2's model) on one constant 299×299×3 batch repeated: images/s of the model alone."""
    import tensorflow as tf

    from rethink_tf import results
    from rethink_tf.config import DataConfig, TrainConfig
    from rethink_tf.data import pipeline
    from rethink_tf.train import run

    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    x = tf.random.uniform((batch, 299, 299, 3), -1.0, 1.0)
    y = tf.random.uniform((batch,), 0, 1000, tf.int64)
    one = tf.data.Dataset.from_tensors((x, y))
    small = one.take(1)
    datasets = pipeline.Datasets(
        train=lambda first_epoch=0, first_step=0, shard=None: pipeline._shard(one.repeat(), batch, shard),
        train_eval=small, test=small, steps_per_epoch=steps, train_size=steps * batch, test_size=batch,
        input_shape=(299, 299, 3), num_classes=1000, corruption=None, summary={"data_fingerprint": "synthetic"})
    cfg = TrainConfig(model="inception_v3", epochs=epochs, batch_size=batch, tensorboard=False, jit_compile=jit,
                      dtype_policy=dtype_policy, lr_decay_examples=steps * batch * 2,
                      data=DataConfig(dataset="imagenet2012"),
                      run_name=f"inception_v3-{dtype_policy}-{'xla' if jit else 'noxla'}-{replicas}")
    with contextlib.redirect_stdout(io.StringIO()):  # the run's own start and summary lines
        path = run(cfg, workdir, datasets=datasets, verbose=0, strategy=strategy)
    r = results.read_json(path)
    rates = [h["images_per_s"] for h in r["history"][1:]]
    return {"benchmark": "gpu_throughput", "model": "inception_v3", "data": "synthetic 299x299", "batch": batch,
            "dtype_policy": dtype_policy, "jit_compile": r["env"]["jit_compile"], "replicas": replicas,
            "loop": r["env"].get("loop"), "steps_per_execution": r["env"].get("steps_per_execution"),
            "images_per_s": round(max(rates), 1), "epochs_2_on": [round(v, 1) for v in rates]}


def main():
    import tensorflow as tf

    from rethink_tf.training import distribute

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp_1x512,mlp_3x512,small_alexnet,small_inception,inception_v3")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--steps", type=int, default=50, help="steps per epoch of the CIFAR models")
    ap.add_argument("--inception_v3_batch", type=int, default=64, help="global batch (per step) of Inception V3")
    ap.add_argument("--v3_steps", type=int, default=10, help="steps per epoch of Inception V3")
    args = ap.parse_args()
    gpus = len(tf.config.list_physical_devices("GPU"))
    print(json.dumps({"benchmark": "gpu_throughput", "gpus": gpus,
                      "devices": [d.name for d in tf.config.list_logical_devices("GPU")]}), flush=True)
    strategies = {1: None}
    if gpus > 1:
        strategies[gpus] = distribute.get_strategy("mirrored", gpus, "auto")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = os.path.join(tmp, "cifar")
        os.makedirs(data_dir)
        train_throughput.write_cifar_binary(data_dir, per_batch=args.steps * train_throughput.BATCH // 5,
                                            test=train_throughput.BATCH)
        for model in args.models.split(","):
            for n, strategy in strategies.items():
                settings = [(dtype, jit, False) for dtype in ("float32", "mixed_bfloat16") for jit in (False, True)]
                if model != "inception_v3":
                    settings.append(("float32", False, True))  # --device_data
                for dtype, jit, device_data in settings:
                    start = time.perf_counter()
                    try:
                        if model == "inception_v3":
                            row = inception_v3_synthetic(os.path.join(tmp, "runs"), args.epochs, args.v3_steps,
                                                         args.inception_v3_batch, dtype, jit, strategy)
                        else:
                            row = train_throughput.measure(model, data_dir, os.path.join(tmp, "runs"),
                                                           args.epochs, jit, False, dtype, strategy,
                                                           device_data=device_data)
                    except Exception as e:  # noqa: BLE001 (one failed configuration must not end the sweep)
                        row = {"benchmark": "gpu_throughput", "model": model, "dtype_policy": dtype,
                               "jit_compile": jit, "device_data": device_data, "replicas": n,
                               "error": f"{type(e).__name__}: {str(e)[:300]}"}
                    row["wall_s"] = round(time.perf_counter() - start, 1)
                    print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
