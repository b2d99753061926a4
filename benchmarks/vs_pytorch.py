"""The four CIFAR-10 models through the package's training path against PyTorch twins, on this machine, side by side;
and, for the convnets, the arithmetic rate achieved against this machine's float32 GEMM peak.

    python benchmarks/vs_pytorch.py [--torch_python /path/to/venv/bin/python] [--models small_alexnet,...]

For each model, one after the other (nothing else should run): the package (rethink_tf.train.run, the CLI's path: generated
CIFAR-10 binary files, the in-memory pipeline, callbacks, the per-model XLA default) and benchmarks/torch_twin.py
(a plain PyTorch loop over in-memory tensors, run by --torch_python: an environment with torch, e.g. a venv where
`pip install torch==2.13.0` installed the CPU build). Both: batch 128, 28×28×3, SGD with momentum, images/s of the
best epoch after the first, train steps only. GFLOP/s: the model's forward multiply-adds × 2 (FLOPs) × 3 (forward +
backward: the backward pass computes the input and the weight gradients, each as costly as the forward) per image,
times images/s; the GEMM peak is the best of tf.matmul on 2048² float32 matrices (and torch.matmul) on all cores.
Issue 21's goals: package/PyTorch >= 1.0 for all four models; the convnets at >= 50% of the GEMM peak.
Prints one JSON line per model and a summary line.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from rethink_tf import console  # noqa: E402

console.quiet()

import train_throughput  # noqa: E402  (the package's measurement through run())

MODELS = ("mlp_1x512", "mlp_3x512", "small_alexnet", "small_inception")
TWIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_twin.py")


def forward_flops(model_name):
    """FLOPs (2 × multiply-adds) of one image's forward pass through the package's model: convolutions and dense
    layers (the rest, BN, pooling, LRN, ReLU, is a few percent and memory-bound)."""
    import keras

    from rethink_tf import models

    model = models.build(model_name, (28, 28, 3), 10)
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            k = layer.kernel.shape
            out = layer.output.shape
            total += 2 * out[1] * out[2] * k[0] * k[1] * k[2] * k[3]
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.kernel.shape[0] * layer.kernel.shape[1]
    return total


def gemm_peak_gflops(n=2048, repeats=10):
    """Best float32 GEMM rate of TensorFlow on this machine (all cores), GFLOP/s."""
    import tensorflow as tf

    a = tf.random.normal((n, n))
    b = tf.random.normal((n, n))
    tf.matmul(a, b).numpy()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def torch_gemm_peak(python, n=2048):
    code = ("import time, torch; a=torch.randn(%d,%d); b=torch.randn(%d,%d); a@b; best=0\n"
            "for _ in range(10):\n t=time.perf_counter(); a@b; best=max(best, 2*%d**3/(time.perf_counter()-t)/1e9)\n"
            "print(best)") % (n, n, n, n, n)
    out = subprocess.run([python, "-c", code], capture_output=True, text=True)
    return float(out.stdout.strip()) if out.returncode == 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--torch_python", default=os.environ.get("TORCH_PYTHON", "/tmp/torchenv/bin/python"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(args.torch_python):
        print(f"error: no python with torch at {args.torch_python}: python -m venv /tmp/torchenv && "
              "/tmp/torchenv/bin/pip install torch==2.13.0 numpy, or pass --torch_python", file=sys.stderr)
        return 2
    peak = gemm_peak_gflops()
    print(json.dumps({"benchmark": "gemm_peak", "tensorflow_gflops": round(peak, 1),
                      "torch_gflops": round(torch_gemm_peak(args.torch_python) or 0, 1)}), flush=True)
    worst, convnet_fraction = None, {}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            steps = train_throughput.STEPS[model]
            data_dir = os.path.join(tmp, model)
            os.makedirs(data_dir)
            train_throughput.write_cifar_binary(data_dir, per_batch=steps * train_throughput.BATCH // 5,
                                                test=train_throughput.BATCH)
            ours = train_throughput.measure(model, data_dir, os.path.join(tmp, "runs"), args.epochs,
                                            None, False)
            proc = subprocess.run([args.torch_python, TWIN, "--model", model, "--steps", str(steps), "--epochs",
                                   str(args.epochs)], capture_output=True, text=True)
            if proc.returncode:
                print(f"error: torch_twin.py failed: {proc.stderr[-800:]}", file=sys.stderr)
                return 1
            theirs = json.loads(proc.stdout.strip().splitlines()[-1])
            flops = 3 * forward_flops(model)
            row = {"benchmark": "vs_pytorch", "model": model, "images_per_s": ours["images_per_s"],
                   "epochs_2_on": ours["epochs_2_on"], "jit_compile": ours["jit_compile"],
                   "jit_scope": ours["jit_scope"], "loop": ours["loop"], "device_data": ours["device_data"],
                   "pytorch_images_per_s": theirs["images_per_s"], "pytorch_epochs": theirs["epochs"],
                   "pytorch_trainable_parameters": theirs["trainable_parameters"], "torch": theirs["torch"],
                   "ratio": round(ours["images_per_s"] / theirs["images_per_s"], 3),
                   "train_gflop_per_image": round(flops / 1e9, 4),
                   "gflops": round(ours["images_per_s"] * flops / 1e9, 1),
                   "pytorch_gflops": round(theirs["images_per_s"] * flops / 1e9, 1)}
            row["fraction_of_gemm_peak"] = round(row["gflops"] / peak, 3)
            print(json.dumps(row), flush=True)
            worst = row["ratio"] if worst is None else min(worst, row["ratio"])
            if "mlp" not in model:
                convnet_fraction[model] = row["fraction_of_gemm_peak"]
    print(json.dumps({"summary": "vs_pytorch", "worst_ratio": worst, "target_ratio": ">= 1.0",
                      "ratio_met": worst is not None and worst >= 1.0, "convnet_fraction_of_gemm_peak": convnet_fraction,
                      "target_fraction": ">= 0.5",
                      "fraction_met": bool(convnet_fraction) and min(convnet_fraction.values()) >= 0.5}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
