#!/usr/bin/env bash
# GPU speed, in one go (aimed at < 8 minutes on one recent GPU): the four CIFAR-10 models (float32 and
# mixed_bfloat16, XLA on and off, one GPU and all GPUs) on the real in-memory pipeline, and Inception V3 on synthetic
# 299x299 batches, then BatchNorm's fused kernel against Keras' ops (benchmarks/batchnorm.py); one JSON line
# each, after a provenance line, into ${1:-docs/benchmarks}/gpu.jsonl.
# Multi-replica rows train in the package's compiled multi-step loop (strategy.run), XLA off there.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/benchmarks}
mkdir -p "$OUT"
{
  python - <<'PY'
import json, platform, subprocess, time
import tensorflow as tf, keras
gpus = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                      capture_output=True, text=True).stdout.strip().splitlines()
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"command": "benchmarks/gpu.sh", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "commit": commit, "python": platform.python_version(), "tensorflow": tf.__version__,
                  "keras": keras.__version__, "gpus": gpus}))
PY
  TF_CPP_MIN_LOG_LEVEL=3 timeout 900 python benchmarks/gpu_throughput.py "${@:2}"
  TF_CPP_MIN_LOG_LEVEL=3 timeout 120 python benchmarks/batchnorm.py  # fused vs Keras' BatchNorm (cuDNN here)
} | tee "$OUT/gpu.jsonl"
