"""`python -m rethink_tf.reproduce EXPERIMENT`: a paper figure or table in one command.

    python -m rethink_tf.reproduce figure1 --dataset=fashion_mnist_5k --workdir=runs/fig1
    python -m rethink_tf.reproduce table1 --workdir=runs/table1 --parallel=4 -- --data_dir=/data/cifar10
    python -m rethink_tf.reproduce kernels --dry_run

It plans the runs of the experiment, runs what is missing one after another (or --parallel at a time, one GPU
each), printing progress (runs done / to do, elapsed, ETA) and each run's outcome, then writes into the workdir
the figures, the comparison with the paper (comparison.md / .csv), summary.md (every run's row, the commands) and
report.html (all of it in one self-contained file).
Rerunning the same command skips finished runs and resumes killed ones from their checkpoint, so an interrupted
reproduction continues where it stopped. Flags after `--` go to every run (after the experiment's own, so they
override them). scripts/sweep.py uses the same machinery for free-form grids.

Experiments (EXPERIMENTS): figure1 (Figure 1a-c: the five randomizations and the label-corruption grid for each
model), table1 (Table 1: the CIFAR-10 rows, one flagfile each), figure2 (Figure 2b), table2 (Table 2, ImageNet),
kernels (§5 kernel rows). Figure 1 runs on any dataset; on CIFAR-10 it uses the paper's three models and its
stop rule (the first epoch at 100% training accuracy), elsewhere MLP 1×512 and 99.9% (on a small subset exactly
100% can take hundreds of epochs more, docs/fashion_mnist_demo).
"""

import argparse
import dataclasses
import glob
import os
import subprocess
import sys
import time

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines on a normal run)

console.quiet()

from rethink_tf import runs as runs_lib  # noqa: E402
from rethink_tf.errors import UserError  # noqa: E402

PROBS = (0.2, 0.4, 0.6, 0.8)  # Figure 1b/1c's grid between true (p = 0) and random labels (p = 1)
RANDOMIZATIONS = ("none", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")  # Figure 1a


@dataclasses.dataclass(frozen=True)
class Run:
    """One planned run: the program (`rethink_tf.train` or `rethink_tf.linear_models`), its flags (without
    --workdir) and a short human label."""
    program: str
    argv: tuple
    label: str


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A paper experiment: what it reproduces, and its runs as flagfiles (globs under flags/) or, for Figure 1,
    a model × corruption grid."""
    description: str
    flagfiles: tuple = ()
    program: str = "rethink_tf.train"
    grid: bool = False


EXPERIMENTS = {
    "figure1": Experiment("Figure 1: training curves of the five randomizations (1a), time to overfit (1b) and "
                          "test error (1c) vs label corruption p", grid=True),
    "table1": Experiment("Table 1: CIFAR-10 train/test accuracy with and without regularizers, true and random "
                         "labels", flagfiles=("table1_*.flags",)),
    "figure2": Experiment("Figure 2b: test accuracy over training, small Inception with and without BatchNorm",
                          flagfiles=("fig2b_*.flags",)),
    "table2": Experiment("Table 2: Inception V3 on ImageNet, with and without regularizers, true and random "
                         "labels", flagfiles=("table2_*.flags",)),
    "kernels": Experiment("§5: kernel interpolation (Eq. 3) on pixels and features, true and random labels",
                          flagfiles=("kernel_*.flags",), program="rethink_tf.linear_models"),
}

# Figure 1's protocol per dataset: the paper's on CIFAR-10, a small-subset one elsewhere (see the docstring).
FIGURE1 = {"cifar10": {"models": ("small_inception", "small_alexnet", "mlp_1x512"), "fit": 1.0, "epochs": 200}}
FIGURE1_OTHER = {"models": ("mlp_1x512",), "fit": 0.999, "epochs": 300}


def _fmt_p(p):
    return f"{p:g}"


def plan(name, dataset=None, models=None, seeds=1, extra=()):
    """The runs of experiment `name` (seeds 0..seeds-1; each seed also seeds the corruption)."""
    if name not in EXPERIMENTS:
        raise UserError(f"unknown experiment {name!r}: one of {', '.join(EXPERIMENTS)}")
    exp = EXPERIMENTS[name]
    seed_flags = [(s, [f"--seed={s}", f"--corrupt_seed={s}"] if s else []) for s in range(seeds)]
    extra = list(extra) + ([f"--dataset={dataset}"] if dataset else [])
    planned = []
    if exp.grid:
        proto = FIGURE1.get(dataset or "cifar10", FIGURE1_OTHER)
        for model in models or proto["models"]:
            grid = [("none", None), *[("labels", p) for p in PROBS], *[(c, None) for c in RANDOMIZATIONS[1:]]]
            for (corrupt, p), (s, sf) in ((g, s) for g in grid for s in seed_flags):
                argv = ["--flagfile=" + os.path.join(_flagfiles(), "common_cifar10.flags"), f"--model={model}",
                        f"--corrupt={corrupt}", *([f"--corrupt_prob={_fmt_p(p)}"] if p is not None else []),
                        f"--epochs={proto['epochs']}", f"--stop_at_train_accuracy={proto['fit']}",
                        f"--fit_threshold={proto['fit']}", "--notensorboard", *sf, *extra]
                label = f"{model} {corrupt if p is None else f'labels p={_fmt_p(p)}'} seed {s}"
                planned.append(Run("rethink_tf.train", tuple(argv), label))
        return planned
    paths = sorted(p for pattern in exp.flagfiles for p in glob.glob(os.path.join(_flagfiles(), pattern)))
    for path in paths:
        stem = os.path.splitext(os.path.basename(path))[0]
        if models and exp.program == "rethink_tf.train" and _flag_in(path, "model") not in models:
            continue
        for s, sf in seed_flags:
            planned.append(Run(exp.program, (f"--flagfile={path}", *sf, *extra), f"{stem} seed {s}"))
    return planned


def _flagfiles():
    from rethink_tf import flags_lib

    return flags_lib.FLAGFILES


def _flag_in(path, flag):
    """The value a flagfile (and the flagfiles it includes) gives --flag, or None."""
    from rethink_tf import flags_lib

    values = [a.split("=", 1)[1] for a in flags_lib.expand_flagfiles([f"--flagfile={path}"])
              if a.startswith(f"--{flag}=")]
    return values[-1] if values else None


def config_of(program, argv, label=""):
    """The TrainConfig or KernelConfig a program makes of its arguments, parsed by the program's own flags."""
    from absl import flags

    from rethink_tf import flags_lib

    fv = flags.FlagValues()
    if program == "rethink_tf.train":
        flags_lib.define_train_flags(fv)
    else:
        flags_lib.define_kernel_flags(fv)
    try:
        fv(["prog", *flags_lib.expand_flagfiles(argv)])
    except (flags.Error, OSError) as e:  # a bad value, an unknown flag, a missing flagfile
        raise UserError(f"{label}: {str(e).splitlines()[0]}") from None
    if program == "rethink_tf.train":
        return flags_lib.config_from_flags(fv)
    return flags_lib.kernel_config_from_flags(fv)


def run_dir_of(run, workdir):
    """The folder a run writes, from its parsed flags (the programs' own naming)."""
    cfg = config_of(run.program, run.argv, run.label)
    return os.path.join(workdir, cfg.run_name or (cfg.resolved().name() if run.program == "rethink_tf.train"
                                                  else cfg.name()))


def done(run_dir, program, argv=()):
    """Whether a run folder holds a complete results.json of its program, with everything its arguments ask for
    (--measures, --extra_test: what the run then adds to a finished run without training, results.lacks)."""
    from rethink_tf import results

    path = os.path.join(run_dir, results.RESULTS)
    if not results.valid_results(path, "train" if program == "rethink_tf.train" else "kernel"):
        return False
    if program != "rethink_tf.train" or not argv:
        return True
    return not results.lacks(results.read_json(path), config_of(program, argv))


def _die_with_parent():
    """In the child, before it runs: ask Linux to SIGTERM it when this process dies, even by kill -9 (no orphaned
    training holding a run's lock). The child's SIGTERM handling saves a checkpoint and exits."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass  # not Linux: children outlive a killed parent there


def _last_line(path):
    try:
        with open(path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith(("error:", "interrupted"))]
    return (errors or lines or [""])[-1][:300]


def execute(planned, workdir, parallel=1, log=print):
    """Runs what is missing of `planned` in `workdir`, `parallel` at a time (CUDA_VISIBLE_DEVICES = slot when
    parallel > 1); each run's output goes to workdir/logs/<run>.log. Prints one line per started and finished run
    and the progress (done / to do, elapsed, ETA from the mean time of the runs finished so far).

    Returns:
      (run directories of all planned runs, list of (label, log path, last line) of the runs that failed).
    """
    dirs = [run_dir_of(r, workdir) for r in planned]
    todo = [(r, d) for r, d in zip(planned, dirs) if not done(d, r.program, r.argv)]
    log(f"{len(planned)} run(s) planned: {len(planned) - len(todo)} done, {len(todo)} to do; logs in "
        f"{os.path.join(workdir, 'logs')}")
    if not todo:
        return dirs, []
    os.makedirs(os.path.join(workdir, "logs"), exist_ok=True)
    start, durations, failed, running, queue = time.time(), [], [], {}, list(todo)
    finished = 0
    while queue or running:
        while queue and len(running) < parallel:
            run, run_dir = queue.pop(0)
            slot = next(i for i in range(parallel) if i not in [v[3] for v in running.values()])
            env = dict(os.environ, **({"CUDA_VISIBLE_DEVICES": str(slot)} if parallel > 1 else {}))
            log_path = os.path.join(workdir, "logs", os.path.basename(run_dir) + ".log")
            with open(log_path, "a") as out:
                proc = subprocess.Popen([sys.executable, "-m", run.program, *run.argv, f"--workdir={workdir}"],
                                        env=env, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
            running[proc] = (run, run_dir, time.time(), slot, log_path)
            log(f"start  [{finished + len(running)}/{len(todo)}] {run.label}")
        for proc in list(running):
            if proc.poll() is None:
                continue
            run, run_dir, began, _, log_path = running.pop(proc)
            finished += 1
            took = time.time() - began
            if proc.returncode == 0 and done(run_dir, run.program, run.argv):
                durations.append(took)
                r = runs_lib.row(run_dir)
                outcome = ", ".join(x for x in (r["fitted at"], r["train acc"] and f"train {r['train acc']}",
                                                r["test acc"] and f"test {r['test acc']}") if x)
                log(f"done   [{finished}/{len(todo)}] {run.label} in {console.duration(took)}: {outcome}")
            else:
                failed.append((run.label, log_path, _last_line(log_path)))
                log(f"FAILED [{finished}/{len(todo)}] {run.label} (rc {proc.returncode}): {failed[-1][2]} "
                    f"(log: {log_path})")
            left = len(queue) + len(running)
            eta = (f", ETA {console.duration(sum(durations) / len(durations) * left / parallel)}"
                   if durations and left else "")
            log(f"       {finished} of {len(todo)} finished, {left} to go, elapsed "
                f"{console.duration(time.time() - start)}{eta}")
        time.sleep(0.2)
    return dirs, failed


def report(name, workdir, dirs, commands, failed=(), fit_threshold=None):
    """Figures, the comparison with the paper and summary.md in workdir, from the results files only."""
    from rethink_tf import results
    from rethink_tf.reporting import compare
    from rethink_tf.reporting import figures as plots

    found = [results.read_json(os.path.join(d, results.RESULTS)) | {"run_dir": d} for d in dirs
             if os.path.exists(os.path.join(d, results.RESULTS)) and
             (results.valid_results(os.path.join(d, results.RESULTS)) or
              results.valid_results(os.path.join(d, results.RESULTS), "kernel"))]
    written = plots.all_figures(found, os.path.join(workdir, "figures"), fit_threshold) if found else []
    rows = compare.comparison_rows(found) if found else []
    with open(os.path.join(workdir, "comparison.md"), "w") as f:
        f.write(compare.to_markdown(rows) if rows else "no finished runs\n")
    with open(os.path.join(workdir, "comparison.csv"), "w") as f:
        f.write(compare.to_csv(rows) if rows else "")
    listing = runs_lib.table([runs_lib.row(d) for d in dirs if os.path.isdir(d)], "markdown")
    pngs = [p for p in written if p.endswith(".png")]
    lines = [f"# {EXPERIMENTS[name].description}", "",
             f"{len(found)} of {len(dirs)} planned runs finished"
             + (f"; {len(failed)} failed (see below)" if failed else "") + ".", "",
             "## Runs", "", listing, "## Figures", ""]
    lines += [f"![{os.path.basename(p)}]({os.path.relpath(p, workdir)})" for p in pngs] or ["none yet"]
    lines += ["", "## Measured beside the paper", "", "[comparison.md](comparison.md) ([CSV](comparison.csv))", ""]
    if failed:
        lines += ["## Failed", ""] + [f"- {label}: {line} ({path})" for label, path, line in failed] + [""]
    lines += ["## Commands", "", "```bash", *commands, "```", ""]
    with open(os.path.join(workdir, "summary.md"), "w") as f:
        f.write("\n".join(lines))
    from rethink_tf.reporting import html

    page = html.write([d for d in dirs if os.path.isdir(d)], os.path.join(workdir, "report.html"),
                      title=EXPERIMENTS[name].description, figures=written, comparison=rows)
    return [os.path.join(workdir, "summary.md"), page, os.path.join(workdir, "comparison.md"), *written]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(
        prog="python -m rethink_tf.reproduce", description="Reproduce one of the paper's figures or tables: plan "
        "its runs, run what is missing (resumable), then write figures, the comparison with the paper and a summary.",
        epilog="Flags after `--` are passed to every run, e.g. -- --data_dir=/data/cifar10 --epochs=50. "
               "Experiments: " + "; ".join(f"{k}: {v.description}" for k, v in EXPERIMENTS.items()))
    ap.add_argument("experiment", choices=sorted(EXPERIMENTS), help="what to reproduce")
    ap.add_argument("--workdir", default=None, help="where runs, figures and the summary go (default: runs/EXPERIMENT)")
    ap.add_argument("--dataset", default=None, help="train on this dataset instead of the flagfiles' (e.g. "
                    "fashion_mnist_5k, built in; figure1 then uses MLP 1x512 and a 99.9%% fit rule)")
    ap.add_argument("--models", default=None, help="comma-separated models to keep (default: the experiment's)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds 0..N-1 per run (init, order and corruption); "
                    "figures and tables then show mean ± std over them (default 1)")
    ap.add_argument("--parallel", type=int, default=1, help="runs at a time, one GPU each (CUDA_VISIBLE_DEVICES)")
    ap.add_argument("--dry_run", action="store_true", help="print the plan (done / to do, commands) and stop")
    args = ap.parse_args(own)
    workdir = os.path.abspath(args.workdir or os.path.join("runs", args.experiment))
    models = [m for m in (args.models or "").split(",") if m] or None
    try:
        if args.seeds < 1 or args.parallel < 1:
            raise UserError("--seeds and --parallel must be at least 1")
        planned = plan(args.experiment, args.dataset, models, args.seeds, extra)
        if not planned:
            raise UserError(f"{args.experiment}: no runs match --models={args.models}")
        commands = [" ".join(["python -m", r.program, *r.argv, f"--workdir={workdir}"]) for r in planned]
        if args.dry_run:
            for r, cmd in zip(planned, commands):
                finished = done(run_dir_of(r, workdir), r.program, r.argv)
                print(f"{'done' if finished else 'to do'}  {cmd}")
            return 0
        start = time.time()
        dirs, failed = execute(planned, workdir, args.parallel)
        fit = next((float(a.split("=", 1)[1]) for a in planned[0].argv if a.startswith("--fit_threshold=")), None)
        written = report(args.experiment, workdir, dirs, commands, failed, fit)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to continue (finished runs are kept, killed ones resume)",
              file=sys.stderr)
        return 130
    print(f"{args.experiment}: {len(planned) - len(failed)} of {len(planned)} runs finished; this command took "
          f"{console.duration(time.time() - start)}; summary: {written[0]}")
    for path in written[1:]:
        if not path.endswith(".pdf"):
            print(f"  {path}")
    return 1 if failed else 0


def cli():
    """The console script (rethink-tf-reproduce / rethink-tf-runs)."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
