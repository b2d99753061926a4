"""Results files -> the paper's figures (matplotlib). Reads results.json only; never re-trains.

Figure 1a: training loss vs thousand steps for true labels, random labels, shuffled pixels, random pixels, Gaussian.
Figure 1b: time to overfit (steps to 100% training accuracy) relative to p = 0, vs label corruption p, per model.
Figure 1c: test error vs label corruption p, per model.
Figure 2: test accuracy vs steps, with the cumulative best shaded (the potential gain of early stopping).
Runs are grouped by (dataset, model, training-set size) so only comparable runs share a curve; seeds are averaged.
"""

import collections
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rethink_tf.report import label_setting  # noqa: E402
from rethink_tf.results import first_at_accuracy  # noqa: E402

FIG1A_SERIES = ("none", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")
FIG1A_STYLES = {"none": "-", "random_labels": "-", "shuffled_pixels": "--", "random_pixels": "-", "gaussian": ":"}
FIG1A_LABELS = {"none": "true labels", "random_labels": "random labels", "shuffled_pixels": "shuffled pixels",
                "random_pixels": "random pixels", "gaussian": "gaussian"}


def _train_runs(results):
    return [r for r in results if r.get("kind", "train") == "train" and r.get("history")]


def _group_key(r):
    c = r["config"]
    return (c["dataset"], c["model"], c.get("train_examples"), bool(c.get("random_crop")),
            bool(c.get("augment")), bool(c.get("weight_decay")))


def _title(key):
    dataset, model, n = key[:3]
    return f"{model} on {dataset}" + (f" ({n:,} train)" if n else "")


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
    for ax, (key, series) in zip(axes[0], sorted(groups.items())):
        for kind in FIG1A_SERIES:
            for i, r in enumerate(series.get(kind, [])):
                steps = [h["step"] / 1000 for h in r["history"]]
                # Dashed/dotted styles keep coinciding curves visible (e.g. an MLP on shuffled vs true pixels).
                ax.plot(steps, [h["train_loss"] for h in r["history"]], label=FIG1A_LABELS[kind] if i == 0 else None,
                        color=f"C{FIG1A_SERIES.index(kind)}", ls=FIG1A_STYLES[kind], lw=2 if kind == "gaussian" else 1.5)
        ax.set(xlabel="thousand steps", ylabel="average loss", title=_title(key))
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.suptitle("Figure 1a: fitting random labels and random pixels")
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
    """Steps until the epoch's (running) training accuracy first reached `threshold`, from the history; or None.

    With threshold 1.0 this is metrics.steps_to_fit. A threshold such as 0.999 (at most 1 example in 1,000 wrong
    in that epoch) is less brittle on small subsets, where a handful of examples can take hundreds of epochs.
    """
    row = first_at_accuracy(result["history"], threshold)
    return row and row["step"]


def figure1bc(results, out_dir, fit_threshold=1.0):
    """Figure 1b (relative time to overfit) and 1c (test error) vs label corruption, one line per model."""
    groups = _corruption_curves(results)
    if not groups:
        return []
    fig, (ax_b, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    for i, (key, by_p) in enumerate(sorted(groups.items())):
        ps = sorted(by_p)
        steps = {p: [steps_to_accuracy(r, fit_threshold) for r in by_p[p]] for p in ps}
        base = [s for s in steps.get(0.0, []) if s]
        if base:
            fit_ps = [p for p in ps if all(steps[p])]
            rel = [np.mean(steps[p]) / np.mean(base) for p in fit_ps]
            ax_b.plot(fit_ps, rel, "o-", color=f"C{i}", label=_title(key))
            unfit = [p for p in ps if not all(steps[p])]
            if unfit:
                ax_b.plot(unfit, [1.0] * len(unfit), "x", color=f"C{i}", label=f"{key[1]}: did not fit")
        err = [100 * (1 - np.mean([r["metrics"]["test_accuracy"] for r in by_p[p]])) for p in ps]
        ax_c.plot(ps, err, "o-", color=f"C{i}", label=_title(key))
    crit = "100%" if fit_threshold >= 1.0 else f"{100 * fit_threshold:g}%"
    ax_b.set(xlabel="label corruption", ylabel=f"steps to {crit} train accuracy (relative to p = 0)",
             title="Figure 1b: convergence slowdown")
    ax_c.set(xlabel="label corruption", ylabel="test error (%)", title="Figure 1c: generalization error growth")
    ax_c.axhline(90, color="gray", ls=":", lw=1)
    ax_b.legend(fontsize=8)
    ax_c.legend(fontsize=8)
    return _save(fig, out_dir, "figure1bc")


def figure2(results, out_dir):
    """Test accuracy vs thousand steps with the cumulative-best area, one line per run."""
    runs = [r for r in _train_runs(results) if label_setting(r["config"])[0] == "none"
            and any("test_accuracy" in h for h in r["history"])]
    if not runs:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, r in enumerate(sorted(runs, key=lambda r: _group_key(r))):
        c = r["config"]
        steps = np.array([h["step"] / 1000 for h in r["history"]])
        acc = np.array([100 * h["test_accuracy"] for h in r["history"]])
        best = np.maximum.accumulate(acc)
        regs = [n for n, on in (("aug", c.get("augment") or c.get("imagenet_augment")),
                                ("crop", c.get("random_crop")), ("wd", c.get("weight_decay"))) if on]
        label = f"{c['model']} {c['dataset']}" + (f" +{'+'.join(regs)}" if regs else "")
        ax.plot(steps, acc, color=f"C{i}", label=label)
        ax.fill_between(steps, acc, best, color=f"C{i}", alpha=0.2)
    ax.set(xlabel="thousand steps", ylabel="test accuracy (%)",
           title="Figure 2: test accuracy, shaded up to the cumulative best")
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "figure2")


def all_figures(results, out_dir, fit_threshold=1.0):
    """Writes every figure the results allow; returns the paths written."""
    return figure1a(results, out_dir) + figure1bc(results, out_dir, fit_threshold) + figure2(results, out_dir)
