"""Peak RSS of a full CIFAR-10-sized run against the same run on a tiny training set.

Each run is its own process (peak RSS is per process): one epoch of `rethink_tf.train.run` on CIFAR-10 binary files
in the original format with 50,000 training images, and the same with 256, which measures what the model, the
optimizer and TensorFlow themselves take. Target: the difference, the data's cost, <= 1.5 GB.

    python benchmarks/memory.py [--model mlp_1x512] [--random_crop]

Prints one JSON line.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines on a normal run)

console.quiet()

from conftest import write_cifar_binary  # noqa: E402  (writes the real CIFAR-10 binary format)

ONE_RUN = r"""
import contextlib, io, json, resource, sys
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.train import run
data_dir, workdir, model, n, crop = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1"
cfg = TrainConfig(model=model, data=DataConfig(dataset="cifar10", data_dir=data_dir, train_examples=n,
                                               random_crop=crop), epochs=1, batch_size=128, tensorboard=False)
with contextlib.redirect_stdout(io.StringIO()):
    run(cfg, workdir, verbose=0)
print("RSS", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
"""


def peak_rss(data_dir, workdir, model, n, crop):
    proc = subprocess.run([sys.executable, "-c", ONE_RUN, data_dir, workdir, model, str(n), "1" if crop else "0"],
                          capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RSS ")]
    if not lines:
        raise SystemExit(f"error: the run failed: {proc.stderr[-2000:]}")
    return int(lines[0].split()[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mlp_1x512")
    ap.add_argument("--random_crop", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        write_cifar_binary(tmp, per_batch=10_000, test=10_000)
        full = peak_rss(tmp, os.path.join(tmp, "full"), args.model, 50_000, args.random_crop)
        tiny = peak_rss(tmp, os.path.join(tmp, "tiny"), args.model, 256, args.random_crop)
    gb = 2**30
    row = {"benchmark": "memory", "model": args.model, "random_crop": args.random_crop,
           "peak_rss_gb_50000": round(full / gb, 2), "peak_rss_gb_256": round(tiny / gb, 2),
           "data_cost_gb": round((full - tiny) / gb, 2), "target_gb": 1.5}
    row["met"] = row["data_cost_gb"] <= 1.5
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
