"""Results files -> a measured-vs-paper comparison (Markdown and CSV). Reads results.json only; never re-trains.

Each measured run is matched to the paper's number for the *same* experiment: model, label randomization, and
regularizers (random crop, weight decay, augmentation, dropout) must all agree, and for kernels the features and
ridge. What still differs from the paper's setup (dataset, subset sizes, epochs, early stop) is listed in the row's
"differences" column, so unlike is never silently compared with like. Runs with no paper counterpart are listed
too, with an empty paper column. Runs that differ only in their seeds (--seed, --corrupt_seed) are one row: the
mean, ± the standard deviation and n. Label-corruption curves (p = 0 and other p of one protocol) add Figure 1b's
rows: steps to fit relative to p = 0, beside the paper's 1.5-3.5x at p = 1 (read off its figure).
"""

import collections
import csv
import io
import json

import numpy as np

from rethink_tf import paper
from rethink_tf.config import (KERNEL_NON_IDENTITY_FIELDS, NON_IDENTITY_FIELDS, label_setting, nondefault_width,
                               resolved_config)
from rethink_tf.results import steps_to_accuracy

SEED_FIELDS = ("seed", "corrupt_seed", "run_name")

PAPER_DATASET = {"table1": "cifar10", "table4": "cifar10", "table2": "imagenet2012"}


def paper_setup(paper_row):
    """The recipe a paper row was trained with, as config fields (paper.RECIPES; [U]/[T] where the paper is silent).

    Table 2's rows without any regularizer had no label smoothing either (it is a regularizer); the others keep
    the TF inception package's 0.1 [T].
    """
    recipe = paper.RECIPES["inception_v3" if paper_row.table == "table2" else paper_row.model]
    smoothing = recipe.label_smoothing
    if paper_row.table == "table2" and not (paper_row.augment or paper_row.dropout or paper_row.weight_decay):
        smoothing = 0.0
    return {"optimizer": recipe.optimizer, "learning_rate": recipe.learning_rate,
            "lr_decay": paper_row.lr_decay or recipe.lr_decay,
            "label_smoothing": smoothing, "dtype_policy": "float32", "per_replica_batch": recipe.batch_size}

def _candidates(result):
    """Paper Results of the same experiment as a run (possibly on another dataset: that goes in differences)."""
    c = resolved_config(result["config"])
    if result.get("kind") == "kernel":
        if label_setting(c)[0] != "none":
            return []  # the paper reports kernels on true labels only
        features = {"none": "pixels"}.get(c["features"], c["features"])
        note_l2 = c.get("ridge", 0) > 0
        # The paper's kernel rows are MNIST and CIFAR-10; other 28×28 grayscale sets pair with MNIST (flagged).
        target = c["dataset"] if c["dataset"] in ("mnist", "cifar10") else "mnist"
        return [r for r in paper.RESULTS if r.table == "kernels" and r.model == f"kernel_{features}"
                and ("l2" in r.note) == note_l2 and r.dataset == target and r.metric in ("test_error", "norm")]
    corrupt, _ = label_setting(c)
    if corrupt not in ("none", "random_labels"):
        return []
    crop, wd = bool(c.get("random_crop")), bool(c.get("weight_decay"))
    if c["model"] == "inception_v3":
        return [r for r in paper.RESULTS if r.table == "table2" and r.corrupt == corrupt
                and r.augment == bool(c.get("imagenet_augment")) and r.dropout == bool(c.get("dropout"))
                and r.weight_decay == wd]
    aug = bool(c.get("augment"))
    table4 = [r for r in paper.RESULTS if r.table == "table4" and r.model == c["model"] and corrupt == "random_labels"
              and r.weight_decay == wd and r.random_crop == (crop and not aug) and r.augment == aug
              and (wd or crop or aug)]
    if table4:
        return table4
    return [r for r in paper.RESULTS if r.table == "table1" and r.model == c["model"] and r.corrupt == corrupt
            and r.random_crop == crop and r.weight_decay == wd and not aug]


def differences(result, paper_row):
    """Human-readable ways in which a run's setup differs from the paper's."""
    c, m = resolved_config(result["config"]), result["metrics"]
    out = []
    paper_ds = paper_row.dataset if paper_row else None
    if paper_ds and c["dataset"] != paper_ds:
        out.append(f"dataset {c['dataset']} (paper: {paper_ds})")
    elif not paper_ds and c["dataset"] not in ("cifar10", "imagenet2012", "mnist"):
        out.append(f"dataset {c['dataset']} (not used in the paper)")
    if c.get("train_examples"):
        out.append(f"{c['train_examples']:,} train examples")
    if c.get("test_examples"):
        out.append(f"{c['test_examples']:,} test examples")
    if result.get("kind") != "kernel":
        out.append(f"{m.get('epochs_trained')} epochs, batch {c.get('batch_size')}")
        if result.get("status") == "stopped_at_train_accuracy":
            out.append(f"stopped at the first epoch with ≥ {100 * (c.get('stop_at_train_accuracy') or 1.0):g}% "
                       "train accuracy")
        if c.get("weight_decay"):
            out.append(f"wd {c['weight_decay']:g} (paper: value not given)")
        if paper_row is not None:
            want = paper_setup(paper_row)
            have = {k: c.get(k) for k in want if k != "per_replica_batch"}
            replicas = result.get("env", {}).get("replicas", 1) or 1
            have["per_replica_batch"] = c.get("batch_size") and c["batch_size"] // replicas
            for k, v in want.items():
                if have[k] is not None and have[k] != v:
                    out.append(f"{k.replace('_', ' ')} {have[k]:g} (paper: {v:g})" if not isinstance(v, str)
                               else f"{k.replace('_', ' ')} {have[k]} (paper: {v})")
    else:
        out.append(f"{c['kernel']} kernel" + (f" gamma {c['gamma']:g}" if c["kernel"] in ("gaussian", "laplacian") else ""))
    if c.get("seed"):
        out.append(f"seed {c['seed']}")
    return "; ".join(out)


def _measured(result, metric):
    m = result["metrics"]
    if metric in ("test_error", "train_error"):
        return 100.0 * m[metric] if metric in m else None
    if metric == "norm":
        return m.get("norm")
    key = metric
    if metric.startswith("top5_"):  # paper "top5_test_accuracy" is our "test_top5_accuracy"
        key = metric[len("top5_"):].replace("accuracy", "top5_accuracy")
    value = m.get(key)
    return None if value is None else 100.0 * value


def _seedless(result):
    """The identity of a run without its seeds: runs equal in it are one experiment, repeated. Settings that say
    where or how fast a run went, or what else it recorded (--device_data, --extra_test, --measures, its run name),
    do not split an experiment; the fit threshold does (it defines the time to fit the row reports)."""
    where = KERNEL_NON_IDENTITY_FIELDS if result.get("kind") == "kernel" else NON_IDENTITY_FIELDS - {"fit_threshold"}
    c = {k: v for k, v in result["config"].items() if k not in SEED_FIELDS and k not in where}
    return json.dumps([result.get("kind", "train"), c], sort_keys=True, default=str)


def _run_names(runs):
    """The run folders' names of a table row, comma-separated."""
    return ", ".join(r.get("run_dir", "").rstrip("/").split("/")[-1] for r in runs)


def _combine(values):
    """(mean, std, n) of the measured values (None when none was measured)."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None, 0
    return float(np.mean(values)), float(np.std(values)), len(values)


def _seed_groups(results):
    groups = collections.defaultdict(list)
    for r in results:
        groups[_seedless(r)].append(r)
    return [sorted(g, key=lambda r: (r["config"].get("seed") or 0, r["config"].get("corrupt_seed") or 0))
            for _, g in sorted(groups.items())]


def comparison_rows(results):
    """One row per (experiment, metric): measured (mean ± std over seeds, n) beside the paper, difference,
    provenance, setup differences; then Figure 1b's slowdown rows."""
    rows = []
    for group in _seed_groups(results):
        r = group[0]
        c = r["config"]
        corrupt, p = label_setting(c)
        matches = _candidates(r)
        base = {"run": _run_names(group),
                "dataset": c["dataset"], "model": c.get("model") or f"kernel/{c.get('features')}",
                "corrupt": corrupt, "p": p}
        if not matches:
            metrics = (["train_error", "test_error", "norm"] if r.get("kind") == "kernel"
                       else ["train_accuracy", "test_accuracy"])
            for metric in metrics:
                mean, std, n = _combine(_measured(g, metric) for g in group)
                rows.append({**base, "table": "", "metric": metric, "measured": mean, "std": std, "n": n,
                             "paper": None, "difference": None, "tag": "", "differences": differences(r, None)})
            continue
        for pr in matches:
            mean, std, n = _combine(_measured(g, pr.metric) for g in group)
            diff = None if mean is None or pr.value is None else mean - pr.value
            rows.append({**base, "table": pr.table, "metric": pr.metric, "measured": mean, "std": std, "n": n,
                         "paper": pr.value if pr.value is not None else pr.note, "difference": diff,
                         "tag": pr.tag, "differences": differences(r, pr)})
    return rows + slowdown_rows(results) + test_error_rows(results)


def corruption_curves(results, key=None):
    """{curve: {p: [runs]}} of the label-corruption runs (true labels = p 0, random labels = p 1) that have a
    history, one curve per `key(run)` (default: the protocol, config.protocol_key) with at least two p values:
    the curves of Figures 1b/1c and of the table's Figure 1b rows."""
    from rethink_tf.config import protocol_key

    key = key or (lambda r: protocol_key(r["config"]))
    curves = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in results:
        if r.get("kind", "train") != "train" or not r.get("history"):
            continue
        kind, p = label_setting(r["config"])
        if kind in ("none", "labels", "random_labels"):
            curves[key(r)][p].append(r)
    return {k: v for k, v in curves.items() if len(v) >= 2}


def slowdown_rows(results):
    """Figure 1b in the table: for each label-corruption curve (runs of one protocol at p = 0 and other p), the
    steps to fit (at the runs' --fit_threshold) relative to p = 0, mean ± std over seeds; a p whose runs did not
    all fit is "not fitted" (no number is made up). The paper's 1.5-3.5x sits beside p = 1."""
    rows = []
    for _, by_p in sorted(corruption_curves(results).items()):
        if 0.0 not in by_p:
            continue
        first = by_p[0.0][0]
        c = first["config"]
        threshold = c.get("fit_threshold") or 1.0
        base_steps = [steps_to_accuracy(r, threshold) for r in by_p[0.0]]
        if not all(base_steps):
            continue
        for p in sorted(by_p):
            if p == 0.0:
                continue
            steps = [steps_to_accuracy(r, threshold) for r in by_p[p]]
            fitted = all(steps)
            mean, std, n = _combine([s / np.mean(base_steps) for s in steps] if fitted else [])
            low, high = paper.FIGURE1B_SLOWDOWN_AT_P1
            rows.append({"run": _run_names(by_p[p]),
                         "dataset": c["dataset"], "model": c["model"],
                         "corrupt": "random_labels" if p == 1.0 else "labels", "p": p, "table": "figure1b",
                         "metric": f"steps to {100 * threshold:g}% train acc. / p = 0",
                         "measured": mean, "std": std, "n": n,
                         "paper": f"{low:g}-{high:g} (read off the figure)" if p == 1.0 else None,
                         "difference": None, "tag": "S" if p == 1.0 else "",
                         "differences": differences(by_p[p][0], None)
                         + ("" if fitted else "; not fitted within budget")})
    return rows


def table1_unregularized(c):
    """Whether a CIFAR-10 config is Table 1's no-regularizer setting (the paper's model, widths and SGD recipe, no
    crop, augmentation, weight decay or dropout, no warm start): only then are Table 1's errors its reference."""
    return (c.get("dataset") == "cifar10" and not (c.get("random_crop") or c.get("augment") or c.get("weight_decay")
                                                   or c.get("dropout") or c.get("init_from"))
            and nondefault_width(c.get("width")) is None and c.get("optimizer") in (None, "sgd"))


def test_error_rows(results):
    """Figure 1c in the table: for each label-corruption curve, the clean test error (%) at each p, mean ± std over
    seeds. The paper gives Figure 1c's values only as a plot; beside p = 0 and p = 1 of its three CIFAR-10 models
    stand Table 1's no-regularizer test errors, which are the curve's end points."""
    rows = []
    for _, by_p in sorted(corruption_curves(results).items()):
        c = next(iter(by_p.values()))[0]["config"]
        anchors = paper.figure1c_anchors(c["model"]) if table1_unregularized(c) else None
        for p in sorted(by_p):
            mean, std, n = _combine([100 * (1 - r["metrics"]["test_accuracy"]) for r in by_p[p]])
            ref = anchors[0] if anchors and p == 0.0 else anchors[1] if anchors and p == 1.0 else None
            rows.append({"run": _run_names(by_p[p]),
                         "dataset": c["dataset"], "model": c["model"],
                         "corrupt": "none" if p == 0.0 else "random_labels" if p == 1.0 else "labels", "p": p,
                         "table": "figure1c", "metric": "test error (%)", "measured": mean, "std": std, "n": n,
                         "paper": ref, "difference": None if ref is None or mean is None else mean - ref,
                         "tag": "I (Table 1)" if ref is not None else "",
                         "differences": differences(by_p[p][0], None)})
    return rows


def _fmt(v):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _fmt_measured(row):
    """"84.19", or "84.19 ± 0.31 (n = 3)" where seeds were combined, or "not fitted"."""
    if row["measured"] is None:
        return "not fitted" if row.get("table") == "figure1b" else "—"
    if row.get("n", 1) > 1:
        return f"{row['measured']:.2f} ± {row['std']:.2f} (n = {row['n']})"
    return _fmt(row["measured"])


DISPLAY_COLUMNS = ("table", "model", "dataset", "labels", "metric", "measured", "paper", "measured − paper", "tag",
                   "differences from the paper's setup")


def display_cells(row):
    """A comparison row as the text of DISPLAY_COLUMNS (the Markdown table's and the HTML report's cells)."""
    labels = row["corrupt"] + (f" p={row['p']:g}" if row["corrupt"] in ("labels", "flip") or
                               row["corrupt"].startswith("partial_") else "")
    return [row["table"] or "—", row["model"], row["dataset"], labels, row["metric"], _fmt_measured(row),
            _fmt(row["paper"]), _fmt(row["difference"]), row["tag"] or "—", row["differences"]]


def to_markdown(rows):
    lines = ["| " + " | ".join(DISPLAY_COLUMNS) + " |", "|" + "---|" * len(DISPLAY_COLUMNS)]
    lines += ["| " + " | ".join(display_cells(r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def to_csv(rows):
    buf = io.StringIO()
    fields = ["run", "table", "model", "dataset", "corrupt", "p", "metric", "measured", "std", "n", "paper",
              "difference", "tag", "differences"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for r in rows:
        writer.writerow(r)
    return buf.getvalue()
