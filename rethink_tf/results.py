"""Results files: the only interface between training and reporting.

A run directory holds `config.json` (written first), `history.jsonl` (one JSON object per epoch, streamed) and
`results.json` (written atomically at the end) with `schema_version`, `config`, `metrics`, `history`, `env` and
`corruption`. Reports and figures read only these files; they never re-train.
"""

import glob
import json
import os
import platform
import tempfile

SCHEMA_VERSION = 1
FIT_THRESHOLDS = (0.99, 0.999, 1.0)  # training accuracies whose first epoch results.json records (Fig. 1b)
CONFIG, HISTORY, RESULTS, RESUMES = "config.json", "history.jsonl", "results.json", "resumes.jsonl"


def write_json(path, obj):
    """Writes JSON atomically: a temp file in the same folder, then os.replace (no half-written files)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True, default=_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _default(o):
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def lacks(record, config):
    """What a finished run's record lacks of what `config` (a TrainConfig) asks to be recorded without changing the
    training: "measures" (--measures) and the --extra_test sets not yet evaluated. A run adds them from its last
    checkpoint without training again."""
    out = ["measures"] if config.measures and "measures" not in record else []
    have = (record.get("metrics") or {}).get("extra_test") or {}
    return out + [n for n in config.data.extra_test_names() if n not in have]


def valid_results(path, kind="train"):
    """True when path is a complete results.json of a `kind` run (the keys a report reads are there): a torn or
    garbage file never counts as a finished run."""
    try:
        r = read_json(path)
    except (OSError, ValueError):
        return False
    return (isinstance(r, dict) and r.get("kind", "train") == kind and "schema_version" in r
            and isinstance(r.get("config"), dict) and isinstance(r.get("metrics"), dict)
            and (kind != "train" or isinstance(r.get("history"), list)))


def read_json(path):
    with open(path) as f:
        return json.load(f)


def append_history(run_dir, row):
    """Appends one epoch's record to history.jsonl and flushes it to disk."""
    _append_line(run_dir, HISTORY, row)


def append_resume(run_dir, record):
    """Logs one resume: the step it restarted from and the settings that changed (config.NON_IDENTITY_FIELDS)."""
    _append_line(run_dir, RESUMES, record)


def read_resumes(run_dir):
    return _read_lines(run_dir, RESUMES)


def _append_line(run_dir, name, row):
    with open(os.path.join(run_dir, name), "a") as f:
        f.write(json.dumps(row, sort_keys=True, default=_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _read_lines(run_dir, name):
    """The JSON rows of a .jsonl file. A row that does not parse (torn by a kill or a full disk during its append)
    is dropped with a warning naming it: never fatal, never dropped silently."""
    path = os.path.join(run_dir, name)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path, errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            if not isinstance(row, dict):
                print(f"warning: {path}: line {number} is torn or not a JSON object; dropped", flush=True)
                continue
            rows.append(row)
    return rows


def read_history(run_dir, max_epochs=None):
    """The per-epoch records of a run (the first max_epochs of them)."""
    rows = _read_lines(run_dir, HISTORY)
    return rows if max_epochs is None else [r for r in rows if isinstance(r.get("epoch"), int)
                                            and r["epoch"] <= max_epochs]


def first_at_accuracy(history, threshold=1.0):
    """The first history row whose (running) training accuracy reached `threshold`, or None.

    threshold 1.0 is metrics.epochs_to_fit / steps_to_fit; figures may use a lower one (steps_to_accuracy).
    """
    return next((h for h in history if h.get("train_accuracy", 0.0) >= threshold), None)


def steps_to_accuracy(result, threshold=1.0):
    """Steps until the epoch's (running) training accuracy first reached `threshold` in a results dict; or None.

    Read from metrics.steps_to_accuracy where training recorded that threshold (0.99, 0.999, 1.0), else from the
    history. A threshold such as 0.999 (at most 1 example in 1,000 wrong in that epoch) is less brittle on small
    subsets, where a handful of examples can take hundreds of epochs.
    """
    recorded = result.get("metrics", {}).get("steps_to_accuracy", {})
    if f"{threshold:g}" in recorded:
        return recorded[f"{threshold:g}"]
    row = first_at_accuracy(result.get("history") or [], threshold)
    return row and row["step"]


def truncate_history(run_dir, epochs):
    """Keeps the first `epochs` records (a resumed run drops epochs after its last checkpoint)."""
    rows = read_history(run_dir, epochs)
    write_history(run_dir, rows)
    return rows


def write_history(run_dir, rows):
    """Replaces history.jsonl with `rows`, atomically and fsynced."""
    path = os.path.join(run_dir, HISTORY)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r, sort_keys=True, default=_default) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def package_source(here=None):
    """{"rethink_tf": version, "rethink_tf_commit": the git commit of the package's source ("+changes" when its
    files differ from it), or None outside a git checkout of the package}: which code made a record, so that a
    number can be traced to the code that produced it (records written before a fix told from those after).
    `here`: the package's folder (default: this one). A package installed inside some other git repository (a
    virtualenv in a project) is not that repository's code: the checkout must hold the package at its top."""
    import subprocess

    from rethink_tf import __version__

    here = here or os.path.dirname(os.path.abspath(__file__))
    commit = None

    def git(*args):
        return subprocess.run(["git", "-C", here, *args], capture_output=True, text=True, timeout=10)

    try:
        top = git("rev-parse", "--show-toplevel")
        at_top = os.path.join(top.stdout.strip(), os.path.basename(here))  # where the checkout's package would be
        if top.returncode == 0 and os.path.isdir(at_top) and os.path.samefile(at_top, here):
            head = git("rev-parse", "--short", "HEAD")
            if head.returncode == 0 and head.stdout.strip():
                changed = git("diff", "--quiet", "HEAD", "--", here).returncode == 1
                commit = head.stdout.strip() + ("+changes" if changed else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return {"rethink_tf": __version__, "rethink_tf_commit": commit}


def environment():
    """Versions and devices, for the record (the package's own version and commit among them)."""
    env = {"python": platform.python_version(), "platform": platform.platform(), **package_source()}
    try:
        import keras
        import numpy
        import scipy
        import tensorflow as tf

        env.update(tensorflow=tf.__version__, keras=keras.__version__, numpy=numpy.__version__,
                   scipy=scipy.__version__, keras_backend=keras.backend.backend(),
                   devices=[d.name for d in tf.config.list_logical_devices()])
        build = tf.sysconfig.get_build_info()
        env.update(cuda=build.get("cuda_version"), cudnn=build.get("cudnn_version"))
    except ImportError:  # reporting machines may not have TF
        pass
    return env


def load_all(patterns):
    """Loads every results.json under the given run directories or glob patterns.

    Args:
      patterns: a string or list of strings: run directories, folders of run directories, or globs.

    Returns:
      A list of result dicts, each with an added "run_dir". Partial runs (no results.json) are skipped.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    found = set()
    for pattern in patterns:
        for path in glob.glob(pattern) or [pattern]:
            if os.path.isfile(path) and path.endswith(".json"):
                found.add(os.path.abspath(path))
            elif os.path.isdir(path):
                found.update(os.path.abspath(p) for p in glob.glob(os.path.join(path, "**", RESULTS), recursive=True))
    rows = []
    for path in sorted(found):
        r = read_json(path)
        r["run_dir"] = os.path.dirname(path)
        rows.append(r)
    return rows
