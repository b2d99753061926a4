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
import sys

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines on a normal run)

console.quiet()

from rethink_tf import reproduce  # noqa: E402  (the runner shared with python -m rethink_tf.reproduce)
from rethink_tf import runs as runs_lib  # noqa: E402
from rethink_tf.errors import UserError  # noqa: E402


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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="Flags after `--` are passed to every run (after its flagfile).")
    split = lambda s: [x for x in s.split(",") if x]
    ap.add_argument("--models", type=split, default=[], help="comma-separated models")
    ap.add_argument("--corruptions", type=split, default=[], help="comma-separated --corrupt kinds")
    ap.add_argument("--probs", type=lambda s: [float(x) for x in split(s)], default=[0.2, 0.4, 0.6, 0.8],
                    help="--corrupt_prob values of the 'labels' corruption (default 0.2,0.4,0.6,0.8)")
    ap.add_argument("--seeds", type=lambda s: [int(x) for x in split(s)], default=[0],
                    help="comma-separated --seed values (default 0)")
    ap.add_argument("--flagfiles", type=split, default=[], help="comma-separated globs of flagfiles")
    ap.add_argument("--workdir", default="runs/sweep", help="where the runs and their logs go")
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time, one GPU each")
    ap.add_argument("--dry_run", action="store_true", help="print the commands of the runs to do and stop")
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    args = ap.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    workdir = os.path.abspath(args.workdir)
    planned = [reproduce.Run("rethink_tf.train", tuple(a), " ".join(a[:len(a) - len(extra)]))
               for a in expand(args, extra)]
    if not planned:
        print("error: nothing to run: give --models and --corruptions, or --flagfiles", file=sys.stderr)
        return 2
    try:
        if args.dry_run:
            for r in planned:
                if not reproduce.done(reproduce.run_dir_of(r, workdir), r.program, r.argv):
                    print(" ".join(["python -m", r.program, *r.argv, f"--workdir={workdir}"]))
            return 0
        dirs, failed = reproduce.execute(planned, workdir, args.parallel)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(runs_lib.table([runs_lib.row(d) for d in dirs if os.path.isdir(d)]))
    unfitted = [d for d in dirs if "not fitted" in runs_lib.row(d)["fitted at"]] if dirs else []
    print(f"{len(planned) - len(failed)} of {len(planned)} runs finished, {len(failed)} failed"
          + (f"; {len(unfitted)} did not reach their fit threshold within their epochs" if unfitted else "")
          + f". Figures: python scripts/make_figures.py --results={workdir} --out=figures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
