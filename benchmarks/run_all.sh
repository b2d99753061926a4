#!/usr/bin/env bash
# Runs the speed and memory benchmarks one after another (2 CPU cores: step_overhead alone took 25 min on 2026-12-07;
# run nothing else meanwhile) and
# writes each one's output under docs/benchmarks/, after a first JSON line naming the command, the date, the code
# version, the library versions and the machine. README.md's benchmark numbers come from these files.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/benchmarks}
mkdir -p "$OUT"
header() {  # the provenance line of one output file
  python - "$1" <<'PY'
import json, os, platform, subprocess, sys, time
import psutil
try:
    import tensorflow as tf, keras
    versions = {"tensorflow": tf.__version__, "keras": keras.__version__}
except Exception:  # noqa: BLE001
    versions = {}
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
print(json.dumps({"command": sys.argv[1], "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                  "commit": commit, "python": platform.python_version(), **versions,
                  "machine": {"cpus": len(os.sched_getaffinity(0)), "memory_gib": round(psutil.virtual_memory().total / 2**30),
                              "processor": platform.processor() or platform.machine()}}))
PY
}
run() {  # name, command...
  local name=$1; shift
  echo "== $name: $*" >&2
  { header "$*" 2>/dev/null; TF_CPP_MIN_LOG_LEVEL=3 "$@"; } > "$OUT/$name.jsonl" 2> "$OUT/$name.stderr" \
    || echo "$name failed: see $OUT/$name.stderr" >&2
  [ -s "$OUT/$name.stderr" ] || rm -f "$OUT/$name.stderr"
}
run train_throughput python benchmarks/train_throughput.py
run train_throughput_jit_scope python benchmarks/train_throughput.py --models mlp_1x512,mlp_3x512,small_alexnet --jit_compile on --data pipeline --device_data on --jit_scope both --epochs 2
run pipeline python benchmarks/pipeline.py
run memory python benchmarks/memory.py
run memory_random_crop python benchmarks/memory.py --random_crop
run imagenet_pipeline python benchmarks/imagenet_pipeline.py
run theorem1 python benchmarks/theorem1.py
run lrn python benchmarks/lrn.py
run batchnorm python benchmarks/batchnorm.py
run step_overhead python benchmarks/step_overhead.py --out=docs/benchmarks/step_overhead.png
run step_overhead_prime_epoch python benchmarks/step_overhead.py --prime_epoch
run step_overhead_xla python benchmarks/step_overhead.py --xla
run vs_pytorch python benchmarks/vs_pytorch.py  # needs torch: python -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 numpy
run recording_overhead python benchmarks/recording_overhead.py
