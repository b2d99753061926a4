"""`python -m rethink_tf.runs [--results=runs]`: what a workdir holds, one row per run.

    python -m rethink_tf.runs --results=runs/fig1
    python -m rethink_tf.runs --results='runs/*' --format=markdown
    python -m rethink_tf.runs --results=runs/fig1 --html=fig1.html   # one self-contained file: figures, tables

A run is any folder with a config.json or a results.json (training or §5 kernel). Its status is read from its files, never guessed:
"done" (results.json complete: completed, or stopped at its fit rule), "diverged at epoch k", "running (epoch k)"
(a live lock: another process trains it now), "killed at epoch k" (a checkpoint or history rows, no results: rerun
the same command to resume), "not started". Reading never touches a run: it is safe while runs are training.
"""

import argparse
import glob
import json
import os
import sys

from rethink_tf import console  # noqa: E402  (first: no TensorFlow log lines when the report draws figures)

console.quiet()

from rethink_tf import results  # noqa: E402

COLUMNS = ("run", "model", "dataset", "corruption", "seed", "epochs", "fitted at", "train acc", "test acc", "status")


def _read(path):
    try:
        with open(path) as f:
            value = json.load(f)
        return value if isinstance(value, dict) else None
    except (OSError, ValueError):
        return None


MARKERS = ("config.json", results.RESULTS)  # a run folder holds at least one of them


def run_dirs(patterns):
    """The run folders (those holding a config.json or a results.json) under run folders, folders of them, or
    globs."""
    if isinstance(patterns, str):
        patterns = [patterns]
    found = set()
    for pattern in patterns:
        for path in glob.glob(pattern) or [pattern]:
            if any(os.path.isfile(os.path.join(path, m)) for m in MARKERS):
                found.add(os.path.abspath(path))
            elif os.path.isdir(path):
                found.update(os.path.dirname(os.path.abspath(p)) for m in MARKERS
                             for p in glob.glob(os.path.join(path, "**", m), recursive=True))
    return sorted(found)


def corruption_label(config):
    """"labels p=0.4", "random_labels", "none" (true labels): the corruption a config trains on."""
    from rethink_tf.data.corruption import describe

    return describe(config.get("corrupt"), config.get("corrupt_prob"), config.get("noise_matrix"),
                    config.get("noise_std"), config.get("train_label_feature"))


def _history(run_dir):
    return results.read_history(run_dir) if os.path.exists(os.path.join(run_dir, results.HISTORY)) else []


def status(run_dir, history=None):
    """The run's state from its files (see the module docstring); `history`: its rows, when already read."""
    from rethink_tf.training import lock  # no TensorFlow: lock only reads files and PIDs

    r = _read(os.path.join(run_dir, results.RESULTS))
    history = _history(run_dir) if history is None else history
    last = max((row.get("epoch", 0) for row in history), default=0)
    if r is not None and results.valid_results(os.path.join(run_dir, results.RESULTS), r.get("kind", "train")):
        return "done" if r.get("status") != "diverged" else f"diverged at epoch {last}"
    if os.path.exists(os.path.join(run_dir, "diverged.json")):
        return f"diverged at epoch {last}"
    if lock.holder(run_dir) is not None:
        return f"running (epoch {last + 1})"
    if last or os.path.exists(os.path.join(run_dir, "checkpoint.weights.h5")):
        return f"killed at epoch {last + 1}" if last else "killed in epoch 1"
    return "not started"


def row(run_dir):
    """One listing row (COLUMNS) of a run folder."""
    r = _read(os.path.join(run_dir, results.RESULTS)) or {}
    config = _read(os.path.join(run_dir, "config.json")) or r.get("config") or {}
    metrics = r.get("metrics") if isinstance(r.get("metrics"), dict) else {}
    kernel = r.get("kind") == "kernel" or "kernel" in config
    pct = lambda v: "" if v is None else f"{100 * v:.2f}%"
    history = _history(run_dir)
    out = {"run": os.path.basename(run_dir), "dataset": config.get("dataset", ""),
           "corruption": corruption_label(config), "seed": config.get("seed", ""),
           "status": status(run_dir, history)}
    if kernel:
        out["model"] = f"kernel {config.get('kernel', '')}/{config.get('features', '')}"
        out["train acc"] = pct(None if metrics.get("train_error") is None else 1 - metrics["train_error"])
        out["test acc"] = pct(None if metrics.get("test_error") is None else 1 - metrics["test_error"])
        return {c: out.get(c, "") for c in COLUMNS}
    out["model"] = config.get("model", "")
    out["epochs"] = metrics.get("epochs_trained", max((h.get("epoch", 0) for h in history), default=0)) or ""
    if metrics:
        fitted = metrics.get("epochs_to_fit")
        threshold = metrics.get("fit_threshold", 1.0)
        out["fitted at"] = (f"epoch {fitted} (>= {100 * threshold:g}%)" if fitted else
                            f"not fitted (< {100 * threshold:g}%)")
        out["train acc"], out["test acc"] = pct(metrics.get("train_accuracy")), pct(metrics.get("test_accuracy"))
    elif history:
        out["train acc"] = pct(history[-1].get("train_accuracy"))
        out["test acc"] = pct(history[-1].get("test_accuracy"))
    return {c: out.get(c, "") for c in COLUMNS}


def table(rows, fmt="text"):
    """rows (dicts of COLUMNS) as an aligned text table, a Markdown table or CSV."""
    cells = [[str(r[c]) for c in COLUMNS] for r in rows]
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows([list(COLUMNS), *cells])
        return buf.getvalue()
    if fmt == "markdown":
        lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in cells]) + "\n"
    widths = [max(len(x) for x in col) for col in zip(COLUMNS, *cells)]
    fmt_line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths)).rstrip()
    return "\n".join([fmt_line(COLUMNS), fmt_line(["-" * w for w in widths])] + [fmt_line(c) for c in cells]) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m rethink_tf.runs",
                                 description="List the runs of a workdir: one row per run, with its status.")
    ap.add_argument("--results", default="runs",
                    help="comma-separated run folders, folders of runs, or globs (default: runs)")
    ap.add_argument("--format", choices=("text", "markdown", "csv"), default="text", help="output format")
    ap.add_argument("--html", default=None, metavar="PATH",
                    help="also write a self-contained HTML report there (figures embedded, the runs, the comparison "
                         "with the paper): one file to send to a colleague")
    args = ap.parse_args(argv)
    dirs = run_dirs([p for p in args.results.split(",") if p])
    if not dirs:
        print(f"error: no runs (folders with a config.json or results.json) under {args.results}", file=sys.stderr)
        return 2
    rows = [row(d) for d in dirs]
    sys.stdout.write(table(rows, args.format))
    if args.format == "text":
        counts = {}
        for r in rows:
            key = r["status"].split(" ")[0]
            counts[key] = counts.get(key, 0) + 1
        print(f"{len(rows)} run(s): " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())))
    if args.html:
        from rethink_tf.reporting import html

        print(f"report: {html.write(dirs, args.html, title=f'rethink_tf runs: {args.results}')}")
    return 0


def cli():
    """The console script (rethink-tf-reproduce / rethink-tf-runs)."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
