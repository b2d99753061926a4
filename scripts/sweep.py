"""Expand model × corruption × p × seed into training runs; skip finished ones; run them one after another or N at
a time on N GPUs. Restartable: re-running the same command skips runs with a results.json and resumes killed runs
from their last epoch checkpoint.

    python scripts/sweep.py --models=mlp_1x512,small_alexnet --corruptions=none,labels,random_labels \
        --probs=0.2,0.4,0.6,0.8 --seeds=0 --workdir=runs/sweep -- --dataset=fashion_mnist --train_examples=5000
    python scripts/sweep.py --flagfiles='flags/fig1bc_*.flags' --workdir=runs/fig1 -- --data_dir=/data/cifar

Flags after `--` are passed to every run (after the flagfile, so they override it). `--parallel=N` runs N at a
time with CUDA_VISIBLE_DEVICES set to 0..N-1 (one GPU each); `--dry_run` prints the commands.
"""

import argparse
import glob
import itertools
import os
import subprocess
import sys
import time

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines on a normal run)

console.quiet()

from absl import flags

from rethink_tf import flags_lib, results


def _die_with_parent():
    """In the child, before it runs: ask Linux to SIGTERM it when this sweep dies, even by kill -9 (no orphaned
    training holding a run's lock). The child's SIGTERM handling saves a checkpoint and exits."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: children outlive a killed sweep there


def expand(args, extra):
    """The list of argv lists (without the `python -m rethink_tf.train` prefix) a sweep runs."""
    runs = []
    for path in sorted(itertools.chain.from_iterable(glob.glob(p) for p in args.flagfiles)):
        for seed in args.seeds:
            runs.append([f"--flagfile={path}", f"--seed={seed}", *extra])
    for model, corrupt, seed in itertools.product(args.models, args.corruptions, args.seeds):
        probs = args.probs if corrupt == "labels" else [None]
        for p in probs:
            argv = [f"--model={model}", f"--corrupt={corrupt}", f"--seed={seed}"]
            if p is not None:
                argv.append(f"--corrupt_prob={p}")
            runs.append(argv + extra)
    return runs


def run_dir_of(argv, workdir):
    """The run directory a command will write, from its parsed flags (same naming as the trainer)."""
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["train", *argv])
    return os.path.join(workdir, flags_lib.config_from_flags(fv).resolved().name())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    split = lambda s: [x for x in s.split(",") if x]
    ap.add_argument("--models", type=split, default=[])
    ap.add_argument("--corruptions", type=split, default=[])
    ap.add_argument("--probs", type=lambda s: [float(x) for x in split(s)], default=[0.2, 0.4, 0.6, 0.8])
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in split(s)], default=[0])
    ap.add_argument("--flagfiles", type=split, default=[], help="comma-separated globs of flagfiles")
    ap.add_argument("--workdir", default="runs/sweep")
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time, one GPU each")
    ap.add_argument("--dry_run", action="store_true")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    commands = []
    for run_argv in expand(args, extra):
        full = [*run_argv, f"--workdir={args.workdir}"]
        run_dir = run_dir_of(full, args.workdir)
        if results.valid_results(os.path.join(run_dir, results.RESULTS)):  # a torn file is rewritten by the run
            print(f"done     {run_dir}", flush=True)
            continue
        commands.append(([sys.executable, "-m", "rethink_tf.train", *full], run_dir))
    print(f"{len(commands)} run(s) to do", flush=True)
    if args.dry_run:
        for cmd, _ in commands:
            print(" ".join(cmd[1:]))
        return 0
    failed, running, queue = [], {}, list(commands)
    while queue or running:
        while queue and len(running) < args.parallel:
            cmd, run_dir = queue.pop(0)
            slot = next(i for i in range(args.parallel) if i not in running.values())
            env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": str(slot)} if args.parallel > 1 else {}))
            os.makedirs(args.workdir, exist_ok=True)
            log = open(os.path.join(args.workdir, os.path.basename(run_dir) + ".log"), "a")
            print(f"start    {run_dir}", flush=True)
            running[subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     preexec_fn=_die_with_parent)] = slot
        for proc in list(running):
            if proc.poll() is not None:
                del running[proc]
                if proc.returncode:
                    failed.append(" ".join(proc.args[3:]))
                    print(f"FAILED   rc={proc.returncode}: {' '.join(proc.args[3:])}", flush=True)
        time.sleep(0.5)
    print(f"{len(commands) - len(failed)} finished, {len(failed)} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
