"""Theorem 1's construction (rethink_tf.theory) on random labels: its worst fit error in float64 and its time.

    python benchmarks/theorem1.py

The points are standard normal in d = 20 (n = 1,000 and 3,000) and CIFAR-shaped random pixels / 255 in d = 3,072
(n = 50,000), the labels random in 0..9 (seeds fixed). The error grows with n because the triangular system is
ill-conditioned; rounding the network's outputs still gives every label back (checked and reported). One JSON line
per size.
"""

import json
import time

import numpy as np

from rethink_tf import console

console.quiet()

from rethink_tf import theory  # noqa: E402


def main():
    for n, d, kind in ((1_000, 20, "normal"), (3_000, 20, "normal"), (50_000, 3_072, "cifar_pixels")):
        rng = np.random.default_rng(0)
        z = (rng.standard_normal((n, d)) if kind == "normal"
             else rng.integers(0, 256, (n, d), dtype=np.uint8).astype(np.float64) / 255.0)
        labels = rng.integers(0, 10, n)
        start = time.perf_counter()
        theory.construct(z, labels.astype(float))
        seconds = time.perf_counter() - start
        model = theory.build_network(z, labels.astype(float))
        err = theory.fit_error(model, z, labels)
        pred = np.concatenate([np.asarray(model(z[i:i + 4096]))[:, 0] for i in range(0, n, 4096)])
        print(json.dumps({"benchmark": "theorem1", "n": n, "d": d, "points": kind, "weights": model.count_params(),
                          "max_fit_error": float(f"{err:.3g}"), "construction_seconds": round(seconds, 3),
                          "labels_exact_after_rounding": bool(np.all(np.rint(pred).astype(int) == labels))}),
              flush=True)


if __name__ == "__main__":
    main()
