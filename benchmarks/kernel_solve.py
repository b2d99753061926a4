"""Kernel interpolation at CIFAR-10 scale on this machine: n = 50,000.

Two settings:
* --features=none (default): the first n Fashion-MNIST training images (Debian's dataset-fashion-mnist; pixels /
  255, d = 784) and the 10,000 test images, Gaussian kernel γ = 0.02; synthetic 784-dim data if Fashion-MNIST is
  absent. float64 would need 20 GB for K alone, so the default is a float32 Cholesky (10 GB) with float64 iterative
  refinement. Target: <= 8 minutes, peak RSS <= 12 GB, relative residual <= 1e-3 on 2 cores / 24 GB.
* --features=random_conv: the paper's CIFAR-10 setting (flags/kernel_cifar10_random_conv.flags): 50,000 train and
  10,000 test CIFAR-shaped images (random uint8 here: CIFAR-10 cannot be downloaded on this machine), 32,000 random
  5×5 filters, 128,000 features, linear kernel accumulated over filter chunks. Memory does not depend on the filter
  count (K tiles, factor, K_test), so --num_filters smaller than 32,000 measures the full-size peak RSS; feature and
  Gram time is linear in the filters and is extrapolated to --paper_filters (reported as such, never as measured).

    python benchmarks/kernel_solve.py [--n 50000] [--precision float32]
    python benchmarks/kernel_solve.py --features=random_conv --num_filters=32000

Prints progress and one JSON line with the timings, residual, errors and peak RSS.
"""

import argparse
import json
import os
import resource
import time

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines on a normal run)

console.quiet()

import numpy as np

from rethink_tf.linear import features
from rethink_tf.config import KernelConfig
from rethink_tf.linear import experiment as lm
from rethink_tf.data import sources


def _rss_gb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def pixels(args, start, log):
    if os.path.isdir(sources.DEFAULT_DIRS["fashion_mnist"]):
        train = sources.load("fashion_mnist", "train", num_examples=args.n)
        test = sources.load("fashion_mnist", "test")
        x, y = features.feature_map(train.arrays["image"], "none"), train.arrays["label"]
        xt, yt = features.feature_map(test.arrays["image"], "none"), test.arrays["label"]
        data = "fashion_mnist"
    else:
        rng = np.random.default_rng(0)
        x, xt = rng.random((args.n, 784)), rng.random((10_000, 784))
        y, yt = rng.integers(0, 10, args.n), rng.integers(0, 10, 10_000)
        data = "synthetic"
    cfg = KernelConfig(kernel="gaussian", gamma=args.gamma, precision=args.precision)
    t = time.perf_counter()
    metrics, info = lm.fit_and_evaluate(cfg, x, y, xt, yt, log=log)
    row = {"benchmark": "kernel_solve", "data": data, "n": args.n, "precision": info["precision"],
           "gram_seconds": round(info["gram_seconds"], 1), "factor_seconds": round(info["factor_seconds"], 1),
           "solve_seconds": round(info["solve_seconds"], 1), "total_seconds": round(metrics["seconds"], 1),
           "refine_iterations": info["refine_iterations"], "jitter": info["jitter"],
           "residual": metrics["residual"], "train_error": metrics["train_error"], "test_error": metrics["test_error"],
           "norm": metrics["norm"], "peak_rss_gb": _rss_gb(), "load_seconds": round(t - start, 1)}
    row["met"] = row["total_seconds"] <= 480 and row["peak_rss_gb"] <= 12 and row["residual"] <= 1e-3
    return row


def random_conv(args, log):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.n, 32, 32, 3), dtype=np.uint8)
    test_images = rng.integers(0, 256, (args.n_test, 32, 32, 3), dtype=np.uint8)
    labels, test_labels = rng.integers(0, 10, args.n), rng.integers(0, 10, args.n_test)
    cfg = KernelConfig(dataset="cifar10", kernel="linear", features="random_conv", num_filters=args.num_filters,
                          precision=args.precision)
    chunks = zip(features.random_conv_chunks(images, args.num_filters),
                 features.random_conv_chunks(test_images, args.num_filters))
    metrics, info = lm.fit_and_evaluate_chunked(cfg, chunks, args.n, args.n_test, labels, test_labels, log=log)
    feat = info["features_and_gram_seconds"]
    solve = metrics["seconds"] - feat
    scale = args.paper_filters / args.num_filters
    return {"benchmark": "kernel_solve_random_conv", "data": "cifar_shaped_random_uint8", "n": args.n,
            "n_test": args.n_test, "num_filters": args.num_filters, "dim": metrics["dim"],
            "precision": info["precision"], "features_and_gram_seconds": round(feat, 1),
            "factor_seconds": round(info["factor_seconds"], 1), "solve_and_refine_seconds": round(solve, 1),
            "total_seconds": round(metrics["seconds"], 1),
            "extrapolated_total_seconds_at_paper_filters": round(feat * scale + solve, 1),
            "paper_filters": args.paper_filters, "refine_iterations": info["refine_iterations"],
            "residual": metrics["residual"], "train_error": metrics["train_error"],
            "test_error": metrics["test_error"], "warnings": info["warnings"], "peak_rss_gb": _rss_gb()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", default="none", choices=["none", "random_conv"])
    ap.add_argument("--n", type=int, default=50_000)
    ap.add_argument("--n_test", type=int, default=10_000)
    ap.add_argument("--precision", default="float32", choices=["auto", "float32", "float64"])
    ap.add_argument("--gamma", type=float, default=0.02)
    ap.add_argument("--num_filters", type=int, default=32_000)
    ap.add_argument("--paper_filters", type=int, default=32_000)
    args = ap.parse_args()
    start = time.perf_counter()
    log = lambda m: print(f"[{time.perf_counter() - start:7.1f}s] {m}", flush=True)
    row = random_conv(args, log) if args.features == "random_conv" else pixels(args, start, log)
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
