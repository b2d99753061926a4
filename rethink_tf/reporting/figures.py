"""Results files -> the paper's figures (matplotlib). Reads results.json only; never re-trains.

Figure 1a: training loss vs thousand steps for true labels, random labels, shuffled pixels, random pixels, Gaussian.
Figure 1b: time to overfit (steps to 100% training accuracy) relative to p = 0, vs label corruption p, per model.
Figure 1c: test error vs label corruption p, per model.
Figure 2: test accuracy vs steps, with the cumulative best shaded (the potential gain of early stopping).
Memorization (not in the paper): training accuracy on the changed vs the intact labels per epoch, for 0 < p < 1.
Runs are grouped by *protocol* (config.protocol_key: the whole run identity without seeds and corruption: model,
dataset, subset, epochs, stop rule, lr, decay, batch, regularizers, dtype, ...), so only runs trained the same way
share a panel or a curve; Figures 1b and 1c average the seeds of a point (1a, 2 and the memorization figure
draw each run). A Table 1 run of 100 epochs and a Figure 1 run stopped at fit are
different protocols even when both have true labels, and never share a point.
"""

import collections
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rethink_tf.config import label_setting, protocol_key  # noqa: E402
from rethink_tf.results import FIT_THRESHOLDS, first_at_accuracy  # noqa: E402

FIG1A_SERIES = ("none", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")
FIG1A_STYLES = {"none": "-", "random_labels": "-", "shuffled_pixels": "--", "random_pixels": "-", "gaussian": ":"}
FIG1A_LABELS = {"none": "true labels", "random_labels": "random labels", "shuffled_pixels": "shuffled pixels",
                "random_pixels": "random pixels", "gaussian": "gaussian"}


def _train_runs(results):
    return [r for r in results if r.get("kind", "train") == "train" and r.get("history")]


def _group_key(r):
    """(readable title, protocol): sorting by it keeps figures stable; equality is protocol equality."""
    return (_title(r["config"]), protocol_key(r["config"]))


def _labels(keys):
    """{group key: title}, with a short protocol hash where two protocols share a readable title."""
    import hashlib

    count = collections.Counter(k[0] for k in keys)
    return {k: k[0] + (f" [protocol {hashlib.sha256(k[1].encode()).hexdigest()[:6]}]" if count[k[0]] > 1 else "")
            for k in keys}


def _title(c):
    """A readable name of a run's protocol: model, dataset, subset, training length and regularizers."""
    n = c.get("train_examples")
    head = f"{c['model']} on {c['dataset']}" + (f" ({n:,} train)" if n else "")
    parts = []
    stop = c.get("stop_at_train_accuracy")
    parts.append(f"≤{c.get('epochs')} ep, stop at {100 * stop:g}%" if stop is not None else f"{c.get('epochs')} ep")
    regs = [tag for tag, on in (("crop", c.get("random_crop")), ("aug", c.get("augment") or c.get("imagenet_augment")),
                                ("wd", c.get("weight_decay"))) if on]
    if regs:
        parts.append("+".join(regs))
    return head + "\n" + ", ".join(parts)  # two lines: panel titles and legends stay narrow


def _save(fig, out_dir, name):
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = os.path.join(out_dir, f"{name}.{ext}")
        fig.savefig(path, dpi=130, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


def figure1a(results, out_dir):
    """Training loss vs thousand steps, one panel per comparable group, one line per randomization."""
    groups = collections.defaultdict(dict)
    for r in _train_runs(results):
        kind, p = label_setting(r["config"])
        if kind in FIG1A_SERIES:
            groups[_group_key(r)].setdefault(kind, []).append(r)
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    if not groups:
        return []
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4), squeeze=False)
    labels = _labels(groups)
    for ax, (key, series) in zip(axes[0], sorted(groups.items())):
        for kind in FIG1A_SERIES:
            for i, r in enumerate(series.get(kind, [])):
                steps = [h["step"] / 1000 for h in r["history"]]
                # Dashed/dotted styles keep coinciding curves visible (e.g. an MLP on shuffled vs true pixels).
                ax.plot(steps, [h["train_loss"] for h in r["history"]], label=FIG1A_LABELS[kind] if i == 0 else None,
                        color=f"C{FIG1A_SERIES.index(kind)}", ls=FIG1A_STYLES[kind], lw=2 if kind == "gaussian" else 1.5)
        ax.set(xlabel="thousand steps", ylabel="average loss")
        ax.set_title(labels[key], fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.suptitle("Figure 1a: fitting random labels and random pixels", y=1.04)
    return _save(fig, out_dir, "figure1a")


def _corruption_curves(results):
    """{group: {p: [runs]}} for label-corruption sweeps (true labels = p 0, random labels = p 1)."""
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in _train_runs(results):
        kind, p = label_setting(r["config"])
        if kind in ("none", "labels", "random_labels"):
            groups[_group_key(r)][p].append(r)
    return {k: v for k, v in groups.items() if len(v) >= 2}


def steps_to_accuracy(result, threshold=1.0):
    """Steps until the epoch's (running) training accuracy first reached `threshold`; or None.

    Read from metrics.steps_to_accuracy where training recorded that threshold (0.99, 0.999, 1.0), else from the
    history. A threshold such as 0.999 (at most 1 example in 1,000 wrong in that epoch) is less brittle on small
    subsets, where a handful of examples can take hundreds of epochs.
    """
    recorded = result.get("metrics", {}).get("steps_to_accuracy", {})
    if f"{threshold:g}" in recorded:
        return recorded[f"{threshold:g}"]
    row = first_at_accuracy(result["history"], threshold)
    return row and row["step"]


def _fit_threshold_of(runs, requested):
    """The requested threshold if every run reached it, else the strictest recorded one they all reached."""
    for t in [requested] + sorted((t for t in FIT_THRESHOLDS if t < requested), reverse=True):
        if all(steps_to_accuracy(r, t) for r in runs):
            return t
    return None


def figure1bc(results, out_dir, fit_threshold=None):
    """Figure 1b (relative time to overfit) and 1c (test error) vs label corruption, one line per protocol.

    fit_threshold None uses the runs' own --fit_threshold (the one their epochs_to_fit was computed with). When a
    run of a curve never reached it (a run that ended at 99.82%), the whole curve falls back to the strictest of
    99.9% / 99% that all its runs reached, and the legend says so: no point goes missing and no curve mixes criteria.
    """
    groups = _corruption_curves(results)
    if not groups:
        return []
    fig, (ax_b, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    used, labels = set(), _labels(groups)
    for i, (key, by_p) in enumerate(sorted(groups.items())):
        ps = sorted(by_p)
        runs = [r for p in ps for r in by_p[p]]
        requested = fit_threshold if fit_threshold is not None else runs[0]["config"].get("fit_threshold", 1.0)
        threshold = _fit_threshold_of(runs, requested)
        if 0.0 in by_p and threshold is not None:
            used.add(threshold)
            steps = {p: [steps_to_accuracy(r, threshold) for r in by_p[p]] for p in ps}
            rel = [np.mean(steps[p]) / np.mean(steps[0.0]) for p in ps]
            note = ("" if threshold == requested
                    else f" [fit = {100 * threshold:g}%: not all reached {100 * requested:g}%]")
            ax_b.plot(ps, rel, "o-", color=f"C{i}", label=labels[key] + note)
        elif 0.0 in by_p:  # some run never reached even 99%: mark the curve rather than drop it silently
            ax_b.plot(ps, [1.0] * len(ps), "x", color=f"C{i}", label=f"{labels[key]}: not all runs reached 99%")
        err = [100 * (1 - np.mean([r["metrics"]["test_accuracy"] for r in by_p[p]])) for p in ps]
        ax_c.plot(ps, err, "o-", color=f"C{i}", label=labels[key])
    crit = " / ".join(f"{100 * t:g}%" for t in sorted(used, reverse=True)) or "100%"
    ax_b.set(xlabel="label corruption", ylabel=f"steps to {crit} train accuracy (relative to p = 0)",
             title="Figure 1b: convergence slowdown")
    ax_c.set(xlabel="label corruption", ylabel="test error (%)", title="Figure 1c: generalization error growth")
    ax_c.axhline(90, color="gray", ls=":", lw=1)
    ax_b.legend(fontsize=7)
    ax_c.legend(fontsize=7)
    return _save(fig, out_dir, "figure1bc")


def figure2(results, out_dir):
    """Test accuracy vs thousand steps with the cumulative-best area, one line per run."""
    runs = [r for r in _train_runs(results) if label_setting(r["config"])[0] == "none"
            and any("test_accuracy" in h for h in r["history"])]
    if not runs:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(sorted(runs, key=lambda r: _group_key(r))):
        steps = np.array([h["step"] / 1000 for h in r["history"]])
        acc = np.array([100 * h["test_accuracy"] for h in r["history"]])
        best = np.maximum.accumulate(acc)
        label = _title(r["config"])
        ax.plot(steps, acc, color=f"C{i}", label=label)
        ax.fill_between(steps, acc, best, color=f"C{i}", alpha=0.2)
    ax.set(xlabel="thousand steps", ylabel="test accuracy (%)",
           title="Figure 2: test accuracy, shaded up to the cumulative best")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "figure2")


def memorization(results, out_dir):
    """Training accuracy on the examples whose label was changed vs those left intact, per epoch (0 < p < 1)."""
    runs = [r for r in _train_runs(results) if "train_accuracy_changed" in r["history"][0]]
    if not runs:
        return []
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for i, r in enumerate(sorted(runs, key=lambda r: (_group_key(r), r["config"].get("corrupt_prob")))):
        epochs = [h["epoch"] for h in r["history"]]
        p = r["config"].get("corrupt_prob")
        label = _title(r["config"]).replace("\n", ", ") + f", p = {p:g}"
        ax.plot(epochs, [100 * h["train_accuracy_intact"] for h in r["history"]], "-", color=f"C{i}",
                label=f"{label}: intact labels")
        ax.plot(epochs, [100 * h["train_accuracy_changed"] for h in r["history"]], "--", color=f"C{i}",
                label=f"{label}: changed labels")
    ax.set(xlabel="epoch", ylabel="training accuracy on the labels trained on (%)",
           title="Memorization: intact vs changed labels")
    ax.set_ylim(0, 101)
    ax.legend(fontsize=7)
    return _save(fig, out_dir, "memorization")


def all_figures(results, out_dir, fit_threshold=None):
    """Writes every figure the results allow; returns the paths written."""
    return (figure1a(results, out_dir) + figure1bc(results, out_dir, fit_threshold) + figure2(results, out_dir)
            + memorization(results, out_dir))
