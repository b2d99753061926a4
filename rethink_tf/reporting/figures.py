"""Results files -> the paper's figures (matplotlib). Reads results.json only; never re-trains.

Figure 1a: training loss vs thousand steps for true labels, random labels, shuffled pixels, random pixels, Gaussian.
Figure 1b: time to overfit (steps to 100% training accuracy) relative to p = 0, vs label corruption p, per model.
Figure 1c: test error vs label corruption p, per model.
Figure 2: test accuracy vs steps, with the cumulative best shaded (the potential gain of early stopping).
Memorization (not in the paper): training accuracy on the changed vs the intact labels per epoch, for 0 < p < 1.
Dynamics (not in the paper; --per_example): memorized / original / other on the changed examples per epoch, and
forgetting events of intact vs changed examples.
Width sweep (not in the paper; --width): train/test error against parameters per p, and per epoch.
Kernels vs p (not in the paper): kernel interpolants' norm and test error against label corruption p.
Measures (not in the paper; --measures): complexity measures of the trained networks against label corruption p.
Runs are grouped by *protocol* (config.protocol_key: the whole run identity without seeds and corruption: model,
dataset, subset, epochs, stop rule, lr, decay, batch, regularizers, dtype, ...), so only runs trained the same way
share a panel or a curve; Figures 1b and 1c average the seeds of a point (1a, 2 and the memorization figure
draw each run). A Table 1 run of 100 epochs and a Figure 1 run stopped at fit are
different protocols even when both have true labels, and never share a point.
"""

import collections
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rethink_tf import dynamics as dynamics_lib  # noqa: E402
from rethink_tf import measures as measures_lib  # noqa: E402
from rethink_tf import paper  # noqa: E402
from rethink_tf.data import corruption as corruption_lib  # noqa: E402
from rethink_tf.runs import corruption_label  # noqa: E402
from rethink_tf.reporting import compare  # noqa: E402
from rethink_tf.config import KERNEL_NON_IDENTITY_FIELDS, label_setting, protocol_key  # noqa: E402
from rethink_tf.results import FIT_THRESHOLDS, steps_to_accuracy  # noqa: E402  (steps_to_accuracy: re-exported)

FIG1A_SERIES = ("none", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")
FIG1A_STYLES = {"none": "-", "random_labels": "-", "shuffled_pixels": "--", "random_pixels": "-", "gaussian": ":"}
FIG1A_MARKERS = {"none": "o", "random_labels": "s", "shuffled_pixels": "^", "random_pixels": "v", "gaussian": "D"}
FIG1A_LABELS = {"none": "true labels", "random_labels": "random labels", "shuffled_pixels": "shuffled pixels",
                "random_pixels": "random pixels", "gaussian": "gaussian"}


def _train_runs(results):
    return [r for r in results if r.get("kind", "train") == "train" and r.get("history")]


def _group_key(r):
    """(readable title, protocol): sorting by it keeps figures stable; equality is protocol equality."""
    return (_title(r["config"], r.get("display")), protocol_key(r["config"]))


def _labels(keys):
    """{group key: title}, with a short protocol hash where two protocols share a readable title."""
    import hashlib

    count = collections.Counter(k[0] for k in keys)
    return {k: k[0] + (f" [protocol {hashlib.sha256(k[1].encode()).hexdigest()[:6]}]" if count[k[0]] > 1 else "")
            for k in keys}


def stop_rule(c):
    """The stop rule of a config in plain words."""
    stop = c.get("stop_at_train_accuracy")
    if stop is None:
        return f"{c.get('epochs')} epochs"
    return f"≤ {c.get('epochs')} epochs, stopped at the first epoch with ≥ {100 * stop:g}% train acc."


def _title(c, display=None):
    """A readable name of a run's protocol: model, dataset, subset, training length and stop rule, regularizers.
    `display`: a results file's display names ({"dataset": ..., "model": ...}, randomization_test's data_name and
    name), shown instead of the identity's "user:<fingerprint>"."""
    n = c.get("train_examples")
    display = display or {}
    head = f"{display.get('model', c['model'])} on {display.get('dataset', c['dataset'])}" + (
        f" ({n:,} train)" if n else "")
    parts = [stop_rule(c)]
    regs = [tag for tag, on in (("crop", c.get("random_crop")), ("aug", c.get("augment") or c.get("imagenet_augment")),
                                ("wd", c.get("weight_decay"))) if on]
    if regs:
        parts.append("+".join(regs))
    return head + "\n" + ", ".join(parts)  # two lines: panel titles and legends stay narrow


def _seeds(runs):
    """" (n = 3 seeds, mean ± std)" where runs of several seeds are combined, else ""."""
    n = len({(r["config"].get("seed"), r["config"].get("corrupt_seed")) for r in runs})
    return f" (n = {n} seeds, mean ± std)" if n > 1 else ""


def _num_classes(r):
    hist = r.get("corruption", {}).get("test_labels", {}).get("class_histogram")
    return len(hist) if hist else 10


def _save(fig, out_dir, name):
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = os.path.join(out_dir, f"{name}.{ext}")
        fig.savefig(path, dpi=130, bbox_inches="tight")
        paths.append(path)
    plt.close(fig)
    return paths


COINCIDE = 0.02  # curves closer than 2% of the loss range everywhere are drawn on top of each other


def coinciding(series):
    """{kind: kind it coincides with}: series whose loss curves have the same length and stay within COINCIDE of
    the loss range of each other (e.g. an MLP's shuffled pixels and true labels: a fixed permutation of the inputs
    is absorbed by the first layer). Drawn on top of each other, one would hide the other; the legend says so."""
    out = {}
    kinds = [k for k in FIG1A_SERIES if series.get(k)]
    for i, a in enumerate(kinds):
        for b in kinds[:i]:
            la = np.array([h["train_loss"] for h in series[a][0]["history"]])
            lb = np.array([h["train_loss"] for h in series[b][0]["history"]])
            if b not in out and len(la) == len(lb) and np.all(np.isfinite(la)) and np.all(np.isfinite(lb)):
                span = max(la.max(), lb.max()) - min(la.min(), lb.min())
                if np.max(np.abs(la - lb)) <= COINCIDE * max(span, 1e-12):
                    out[a] = b
                    break
    return out


def figure1a(results, out_dir):
    """Training loss vs thousand steps, one panel per protocol, one line per randomization (each seed drawn).

    Distinct colours, line styles and markers per randomization; coinciding curves are named in the legend; when
    one series ends more than 10x earlier than another (random pixels vs random labels on an MLP) the step axis is
    logarithmic, so the short curves are not squeezed into a spike at zero (the panel says so).
    """
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
        same = coinciding(series)
        ends = [r["history"][-1]["step"] for runs in series.values() for r in runs]
        log_x = max(ends) > 10 * min(ends)
        for kind in FIG1A_SERIES:
            for i, r in enumerate(series.get(kind, [])):
                steps = [h["step"] / 1000 for h in r["history"]]
                label = None
                if i == 0:
                    label = FIG1A_LABELS[kind] + _seeds(series[kind])
                    if kind in same:
                        label += f" (coincides with {FIG1A_LABELS[same[kind]]} within {100 * COINCIDE:g}%)"
                ax.plot(steps, [h["train_loss"] for h in r["history"]], label=label,
                        color=f"C{FIG1A_SERIES.index(kind)}", ls=FIG1A_STYLES[kind], lw=2 if kind == "gaussian" else 1.5,
                        marker=FIG1A_MARKERS[kind], markevery=max(1, len(steps) // 8), ms=4,
                        mfc="none" if kind in same else None)
        ax.set(xlabel="thousand steps" + (" (log scale)" if log_x else ""), ylabel="average training loss")
        if log_x:
            ax.set_xscale("log")
        ax.set_title(labels[key], fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
    fig.suptitle("Figure 1a: fitting random labels and random pixels", y=1.04)
    return _save(fig, out_dir, "figure1a")


def _corruption_curves(results):
    """{group: {p: [runs]}} for label-corruption sweeps (compare.corruption_curves, keyed for the figures)."""
    return compare.corruption_curves(results, key=_group_key)


def _fit_threshold_of(runs, requested):
    """The requested threshold if every run reached it, else the strictest recorded one they all reached."""
    for t in [requested] + sorted((t for t in FIT_THRESHOLDS if t < requested), reverse=True):
        if all(steps_to_accuracy(r, t) for r in runs):
            return t
    return None


def _line_style(n_points):
    """Points joined by a line only from three measured values on: two points and a line suggest a trend."""
    return "o-" if n_points >= 3 else "o"


def figure1bc(results, out_dir, fit_threshold=None):
    """Figure 1b (relative time to overfit) and 1c (test error) vs label corruption, one curve per protocol.

    fit_threshold None uses the runs' own --fit_threshold (the one their epochs_to_fit was computed with). When a
    run of a curve never reached it (a run that ended at 99.82%), the whole curve falls back to the strictest of
    99.9% / 99% that all its runs reached, and the legend says so: no curve mixes criteria. A value that was not
    measured is never plotted: a p whose runs did not all fit within their budget has no 1b point, and the panel
    lists it as "not fitted within budget". Seeds of a point are averaged, with ± 1 std bars and n in the legend.
    The paper's values are drawn beside, marked as such: 1b's slowdown range at p = 1 read off its figure, and 1c's
    end points from Table 1 (CIFAR-10 runs of Figure 1's three models).
    """
    groups = _corruption_curves(results)
    if not groups:
        return []
    fig, (ax_b, ax_c) = plt.subplots(1, 2, figsize=(12, 4.5))
    used, labels, unfitted, paper_c = set(), _labels(groups), [], False
    for i, (key, by_p) in enumerate(sorted(groups.items())):
        ps = sorted(by_p)
        runs = [r for p in ps for r in by_p[p]]
        name = labels[key].replace("\n", _seeds(runs) + "\n")  # model and data, then the stop rule in words
        requested = fit_threshold if fit_threshold is not None else runs[0]["config"].get("fit_threshold", 1.0)
        threshold = _fit_threshold_of(runs, requested)
        note = "" if threshold in (None, requested) else f" [fit at {100 * threshold:g}%: not all reached {100 * requested:g}%]"
        t = threshold if threshold is not None else requested
        steps = {p: [steps_to_accuracy(r, t) for r in by_p[p]] for p in ps}
        fitted = [p for p in ps if all(steps[p])]
        missing = [p for p in ps if p not in fitted]
        if missing:
            unfitted.append(f"{labels[key].split(chr(10))[0]}: p = {', '.join(f'{p:g}' for p in missing)}")
        if 0.0 in fitted:
            used.add(t)
            base = np.mean(steps[0.0])
            rel = [np.mean(steps[p]) / base for p in fitted]
            err = [np.std(steps[p]) / base for p in fitted]
            ax_b.errorbar(fitted, rel, yerr=err if _seeds(runs) else None, fmt=_line_style(len(fitted)),
                          color=f"C{i}", capsize=3, label=name + note)
        acc = {p: [100 * (1 - r["metrics"]["test_accuracy"]) for r in by_p[p]] for p in ps}
        ax_c.errorbar(ps, [np.mean(acc[p]) for p in ps], yerr=[np.std(acc[p]) for p in ps] if _seeds(runs) else None,
                      fmt=_line_style(len(ps)), color=f"C{i}", capsize=3, label=name)
        config = runs[0]["config"]
        anchors = paper.figure1c_anchors(config["model"]) if compare.table1_unregularized(config) else None
        if anchors:
            paper_c = True
            ax_c.plot([0, 1], anchors, "D--", color=f"C{i}", mfc="none", lw=0.8,
                      label=f"paper, {config['model']} (CIFAR-10, Table 1 end points)")
    low, high = paper.FIGURE1B_SLOWDOWN_AT_P1
    ax_b.errorbar([1.0], [(low + high) / 2], yerr=[[(high - low) / 2], [(high - low) / 2]], fmt="none",
                  ecolor="gray", elinewidth=6, alpha=0.35,
                  label=f"paper (CIFAR-10, read off Fig. 1b): {low:g}-{high:g}x at p = 1")
    crit = " / ".join(f"{100 * t:g}%" for t in sorted(used, reverse=True)) or f"{100 * (fit_threshold or 1.0):g}%"
    ax_b.set(xlabel="label corruption p", ylabel="steps to fit, relative to p = 0",
             title=f"Figure 1b: convergence slowdown\nfit = the first epoch with ≥ {crit} training accuracy")
    if unfitted:
        ax_b.text(0.02, 0.98, "not fitted within budget (no point drawn):\n" + "\n".join(unfitted),
                  transform=ax_b.transAxes, va="top", fontsize=7, color="firebrick")
    chance = 100 * (1 - 1 / _num_classes(next(iter(next(iter(groups.values())).values()))[0]))
    ax_c.axhline(chance, color="gray", ls=":", lw=1, label=f"chance ({chance:g}% error)")
    ax_c.set(xlabel="label corruption p", ylabel="test error (%)",
             title="Figure 1c: generalization error growth" + ("" if paper_c else "\n(the paper's values are CIFAR-10: "
                                                                 "not drawn for other data)"))
    for ax in (ax_b, ax_c):
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15))
    return _save(fig, out_dir, "figure1bc")


def figure2(results, out_dir):
    """Test accuracy vs thousand steps with the cumulative best shaded, one panel per protocol (true labels), one
    line per seed; the y-axis is zoomed to the part after the first tenth of training, so the shaded early-stopping
    gain stays visible, and the legend sits outside the plot."""
    runs = [r for r in _train_runs(results) if label_setting(r["config"])[0] == "none"
            and any("test_accuracy" in h for h in r["history"])]
    if not runs:
        return []
    groups = collections.defaultdict(list)
    for r in runs:
        groups[_group_key(r)].append(r)
    labels = _labels(groups)
    fig, axes = plt.subplots(1, len(groups), figsize=(6.5 * len(groups), 4), squeeze=False)
    for ax, (key, members) in zip(axes[0], sorted(groups.items())):
        lows, highs = [], []
        for i, r in enumerate(sorted(members, key=lambda r: (r["config"].get("seed", 0), r["config"].get("corrupt_seed", 0)))):
            steps = np.array([h["step"] / 1000 for h in r["history"]])
            acc = np.array([100 * h.get("test_accuracy", np.nan) for h in r["history"]])
            best = np.fmax.accumulate(acc)
            c = r["config"]
            ax.plot(steps, acc, color=f"C{i}", label=f"seed {c.get('seed', 0)}, true labels (final {acc[-1]:.1f}%, "
                                                       f"best {np.nanmax(acc):.1f}%)")
            ax.fill_between(steps, acc, best, color=f"C{i}", alpha=0.3)
            tail = acc[len(acc) // 10:]
            lows.append(np.nanmin(tail) if len(tail) else np.nanmin(acc))
            highs.append(np.nanmax(best))
        span = max(highs) - min(lows)
        ax.set_ylim(min(lows) - 0.1 * span - 0.5, max(highs) + 0.1 * span + 0.5)
        ax.set(xlabel="thousand steps", ylabel="test accuracy (%)")
        ax.set_title(labels[key], fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.15))
    fig.suptitle("Figure 2: test accuracy, shaded up to the cumulative best (the gain early stopping could give)",
                 y=1.04)
    return _save(fig, out_dir, "figure2")


def memorization(results, out_dir):
    """Per run with 0 < p < 1: training accuracy on the examples whose label was changed and on those left intact,
    and the clean test accuracy, per epoch (not a figure of the paper). One panel per run, its protocol in the
    title."""
    runs = [r for r in _train_runs(results) if "train_accuracy_changed" in r["history"][0]]
    if not runs:
        return []
    runs = sorted(runs, key=lambda r: (_group_key(r), r["config"].get("corrupt_prob"), r["config"].get("seed", 0)))
    cols = min(len(runs), 3)
    rows = -(-len(runs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 4.4 * rows), squeeze=False, constrained_layout=True)
    for ax, r in zip(axes.flat, runs):
        epochs = [h["epoch"] for h in r["history"]]
        c = r["config"]
        ax.plot(epochs, [100 * h["train_accuracy_intact"] for h in r["history"]], "-", color="C0", label="intact labels")
        ax.plot(epochs, [100 * h["train_accuracy_changed"] for h in r["history"]], "--", color="C3",
                label="changed labels")
        ax.plot(epochs, [100 * h.get("test_accuracy", np.nan) for h in r["history"]], ":", color="k",
                label="test (clean labels)")
        ax.set(xlabel="epoch", ylabel="accuracy (%)", ylim=(0, 101))
        ax.set_title(_title(c, r.get("display")) + f"\n{_corruption(c)}, seed {c.get('seed', 0)}", fontsize=8)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(runs):]:
        ax.axis("off")
    fig.suptitle("Memorization: training accuracy on the intact and the changed labels (on the labels trained on)")
    return _save(fig, out_dir, "memorization")


def _corruption(c):
    return corruption_label(c).replace(" p=", " p = ").replace(" σ=", " σ = ")


def dynamics(results, out_dir):
    """Per run recorded with --per_example (beyond the paper): for the examples whose label was changed, the
    fractions predicting the label trained on (memorized), their original label, or another class, per epoch (the
    curves of the noisy-label literature); and the histogram of forgetting events (Toneva et al. 2019) of intact
    vs changed examples, from the run's per_example.npz. One row of two panels per run."""
    runs = [r for r in _train_runs(results) if r.get("per_example", {}).get("epochs")]
    if not runs:
        return []
    runs = sorted(runs, key=lambda r: (_group_key(r), r["config"].get("corrupt_prob") or 0, r["config"].get("seed", 0)))
    fig, axes = plt.subplots(len(runs), 2, figsize=(11, 3.8 * len(runs)), squeeze=False, constrained_layout=True)
    for (left, right), r in zip(axes, runs):
        pe, c = r["per_example"], r["config"]
        title = _title(c, r.get("display")) + f"\n{_corruption(c)}, seed {c.get('seed', 0)}"
        curves = pe.get("changed_curves")
        if curves:
            epochs = pe["epochs"]
            left.stackplot(epochs, [100 * np.asarray(curves[k]) for k in ("memorized", "predicts_original", "other")],
                           labels=["predicts the label trained on (memorized)", "predicts its original label",
                                   "predicts another class"], colors=["C3", "C0", "0.75"], alpha=0.85)
            left.set(xlabel="epoch", ylabel=f"% of the {pe['changed']['examples']:,} changed examples",
                     ylim=(0, 100), xlim=(epochs[0], epochs[-1]) if len(epochs) > 1 else None)
            left.legend(fontsize=7, loc="center right")
        else:
            left.text(0.5, 0.5, "no label was changed: nothing to memorize", ha="center", va="center",
                      transform=left.transAxes)
            left.set_axis_off()
        left.set_title(title, fontsize=8)
        arrays = dynamics_lib.read_export(r["run_dir"]) if r.get("run_dir") and os.path.exists(
            os.path.join(r["run_dir"], dynamics_lib.EXPORT)) else None
        if arrays is None:
            right.text(0.5, 0.5, f"{dynamics_lib.EXPORT} not found beside results.json", ha="center", va="center",
                       transform=right.transAxes)
            right.set_axis_off()
            continue
        forgets, changed = arrays["forgetting_events"], arrays["changed"]
        never = arrays["first_learned_epoch"] == 0
        bins = np.arange(0, max(1, int(forgets.max())) + 2) - 0.5
        for sel, name, color in ((~changed, "intact", "C0"), (changed, "changed", "C3")):
            if sel.any():
                right.hist(forgets[sel & ~never], bins=bins, density=True, alpha=0.55, color=color,
                           label=f"{name} labels (n = {int(sel.sum()):,}; {100 * np.mean(never[sel]):.1f}% never "
                                 "learned, not counted)")
        right.set(xlabel="forgetting events (correct at one epoch, wrong at the next)", ylabel="fraction of examples")
        right.set_title(f"forgetting per example over {len(pe['epochs'])} recorded epochs", fontsize=8)
        right.legend(fontsize=7)
    fig.suptitle("Per-example dynamics (beyond the paper: Arpit et al. 2017, Toneva et al. 2019)")
    return _save(fig, out_dir, "dynamics")


def measures_vs_p(results, out_dir):
    """Complexity measures (--measures, beyond the paper) against label corruption p, one curve per protocol (seeds
    averaged, ± 1 std): the analysis of Bartlett et al. 2017, Neyshabur et al. 2017 and Novak et al. 2018, who ask
    which measure grows with p as the test error does (Figure 1c), i.e. which one tells memorization apart."""
    groups = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in _train_runs(results):
        kind, p = label_setting(r["config"])
        if r.get("measures") and kind in ("none", "labels", "random_labels"):
            groups[_group_key(r)][p].append(r)
    if not groups:
        return []
    names = list(measures_lib.SCALARS)
    cols = 3
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False, constrained_layout=True)
    labels = _labels(groups)
    for ax, name in zip(axes.flat, names):
        for i, (key, by_p) in enumerate(sorted(groups.items())):
            ps = [p for p in sorted(by_p) if all(measures_lib.scalar(r["measures"], name) is not None
                                                 for r in by_p[p])]
            if not ps:
                continue
            values = {p: [measures_lib.scalar(r["measures"], name) for r in by_p[p]] for p in ps}
            runs = [r for p in ps for r in by_p[p]]
            ax.errorbar(ps, [np.mean(values[p]) for p in ps],
                        yerr=[np.std(values[p]) for p in ps] if _seeds(runs) else None, fmt=_line_style(len(ps)),
                        color=f"C{i}", capsize=3, label=labels[key].replace("\n", _seeds(runs) + "\n"))
        ax.set(xlabel="label corruption p", ylabel=measures_lib.SCALARS[name], xlim=(-0.05, 1.05))
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.2))
    fig.suptitle("Complexity measures of the trained networks against label corruption (beyond the paper; "
                 "rethink_tf.measures)")
    return _save(fig, out_dir, "measures")


def _width_protocol(r):
    """The protocol without the width: the runs of one capacity sweep."""
    proto = json.loads(protocol_key(r["config"]))
    proto.pop("width", None)
    return json.dumps(proto, sort_keys=True)


def width_sweep(results, out_dir):
    """Capacity sweeps (--width, beyond the paper): final train and test error against the trainable parameter
    count, one curve per label corruption p (model-wise double descent, Nakkiran et al. 2020: the test error may
    peak where the model can just fit the noisy training set), and the test error per epoch of the widest model
    per p (epoch-wise). One row per protocol with at least two widths."""
    groups = collections.defaultdict(list)
    for r in _train_runs(results):
        kind, p = label_setting(r["config"])
        if kind in ("none", "labels", "random_labels", "flip"):
            groups[_width_protocol(r)].append(r)
    groups = {k: v for k, v in groups.items() if len({r["config"].get("width") or 1.0 for r in v}) >= 2}
    if not groups:
        return []
    fig, axes = plt.subplots(len(groups), 2, figsize=(12, 4.4 * len(groups)), squeeze=False, constrained_layout=True)
    for (left, right), (_, runs) in zip(axes, sorted(groups.items())):
        by_p = collections.defaultdict(lambda: collections.defaultdict(list))
        for r in runs:
            by_p[_corruption(r["config"])][r["metrics"]["trainable_parameters"]].append(r)
        for i, (corr, by_n) in enumerate(sorted(by_p.items())):
            ns = sorted(by_n)
            for key, marker, line, what in (("test_accuracy", "o", "-", "test"), ("train_accuracy", "s", "--", "train")):
                err = {n: [100 * (1 - r["metrics"][key]) for r in by_n[n]] for n in ns}
                left.errorbar(ns, [np.mean(err[n]) for n in ns], yerr=[np.std(err[n]) for n in ns]
                              if _seeds([r for n in ns for r in by_n[n]]) else None,
                              fmt=marker + (line if len(ns) >= 3 else ""), color=f"C{i}", capsize=3,
                              mfc="none" if what == "train" else None, label=f"{what} error, {corr}")
            widest = by_n[ns[-1]][0]
            hist = widest["history"]
            right.plot([h["epoch"] for h in hist], [100 * (1 - h.get("test_accuracy", np.nan)) for h in hist], "-",
                       color=f"C{i}", label=f"{corr}, width {widest['config'].get('width') or 1.0:g}")
        left.set(xscale="log", xlabel="trainable parameters", ylabel="error (%) on the labels trained on (train) / "
                 "clean (test)")
        first = runs[0]
        left.set_title(_title(first["config"], first.get("display")).split("\n")[0] + " at several widths\n"
                       + stop_rule(first["config"]), fontsize=8)
        right.set(xlabel="epoch", ylabel="test error (%)", title="test error per epoch, widest model per corruption")
        for ax in (left, right):
            ax.legend(fontsize=7)
    fig.suptitle("Capacity sweep (beyond the paper): model-wise and epoch-wise double descent (Nakkiran et al. 2020)")
    return _save(fig, out_dir, "width_sweep")


def kernels_vs_p(results, out_dir):
    """Kernel interpolation (§5) against label corruption p (beyond the paper, which solves true labels only):
    the RKHS norm of the interpolant and the test error, one curve per kernel and features (Gaussian beside
    Laplacian: Belkin et al. 2018's kernel analogue of Figure 1c). Drawn for curves with at least two p values."""
    within = {"corrupt", "corrupt_prob", "corrupt_seed", "seed"}  # what a curve's points and seeds differ in
    curves = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in results:
        if r.get("kind") != "kernel" or "metrics" not in r:
            continue
        c = r["config"]
        kind, p = label_setting(c)
        if kind not in ("none", "labels", "random_labels"):
            continue
        name = (f"{c['kernel']}" + (f" γ={c['gamma']:g}" if c["kernel"] in ("gaussian", "laplacian") else "")
                + (f", {c['features']} features" if c.get("features", "none") != "none" else ", pixels")
                + f", {c['dataset']}"
                + (f" ({c['train_examples']:,} train)" if c.get("train_examples") else ""))
        protocol = json.dumps({k: v for k, v in c.items() if k not in KERNEL_NON_IDENTITY_FIELDS | within},
                              sort_keys=True, default=str)
        curves[(name, protocol)][p].append(r)
    curves = {k: v for k, v in curves.items() if len(v) >= 2}
    if not curves:
        return []
    labels = _labels(curves)  # a short protocol hash where two curves share a readable name
    fig, (ax_n, ax_e) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for i, (key, by_p) in enumerate(sorted(curves.items())):
        name = labels[key]
        ps = sorted(by_p)
        for ax, key, scale in ((ax_n, "norm", 1.0), (ax_e, "test_error", 100.0)):
            values = {p: [scale * r["metrics"][key] for r in by_p[p]] for p in ps}
            seeds = max(len(v) for v in values.values()) > 1
            ax.errorbar(ps, [np.mean(values[p]) for p in ps], yerr=[np.std(values[p]) for p in ps] if seeds else None,
                        fmt=_line_style(len(ps)), color=f"C{i}", capsize=3, label=name)
    ax_n.set(xlabel="label corruption p", ylabel="RKHS norm of the interpolant", title="norm of the interpolating "
             "solution")
    ax_e.set(xlabel="label corruption p", ylabel="test error (%)", title="test error (clean test labels)")
    ax_n.legend(fontsize=7)
    fig.suptitle("Kernel interpolation against label noise (beyond the paper: Belkin, Ma, Mandal 2018)")
    return _save(fig, out_dir, "kernels_vs_p")


def _pixel_series(results):
    """{(x label, series name, group key): {amount: [runs]}}: the pixel-side analogues of Figure 1b/1c's label p.
    Arpit et al.'s mixtures: a pixel kind on a fraction p of the images (p = 0: the protocol's clean runs, p = 1: the
    kind on every image, the paper's); additive Gaussian noise of σ on every image (σ = 0: the clean runs)."""
    fraction = "fraction of images corrupted"
    clean = collections.defaultdict(list)
    series = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in _train_runs(results):
        c = r["config"]
        kind, p = label_setting(c)
        if kind == "none" and not c.get("corrupt_prob"):
            clean[_group_key(r)].append(r)
        elif c.get("corrupt") in corruption_lib.PIXEL_KINDS:
            partial = kind.startswith("partial_")
            if kind == "additive_gaussian":  # every image: a point of the σ row
                series[("noise σ added to every pixel value ([0, 1] units)", "additive Gaussian", _group_key(r))][
                    c["noise_std"]].append(r)
            name = c["corrupt"] + ("" if c.get("noise_std") is None else f" σ = {c['noise_std']:g}")
            series[(fraction, name.replace("_", " "), _group_key(r))][p if partial else 1.0].append(r)
    for (_, _, group), by_x in series.items():
        if clean.get(group):
            by_x[0.0] = clean[group]
    # an additive-noise mixture series is drawn only where some run noised a fraction of the images
    return {k: v for k, v in series.items() if len(v) >= 2 and not (
        k[0] == fraction and k[1].startswith("additive") and set(v) <= {0.0, 1.0})}


def pixel_noise(results, out_dir):
    """The pixel-side analogue of Figure 1b/1c (beyond the paper): test error and steps to fit against the amount
    of pixel noise, mean ± std over seeds; one row per x axis (fraction of corrupted images, Arpit et al. 2017's
    mixtures; σ of additive noise, Toneva et al. 2019). Test images carry the same kind of noise (the paper's rule
    for pixel corruptions). A point whose runs did not all fit is not drawn on the right and is listed."""
    series = _pixel_series(results)
    if not series:
        return []
    axes_of = sorted({k[0] for k in series})
    fig, axes = plt.subplots(len(axes_of), 2, figsize=(12, 4.4 * len(axes_of)), squeeze=False,
                             constrained_layout=True)
    labels = _labels({k[2] for k in series})
    for (left, right), xlabel in zip(axes, axes_of):
        unfitted = []
        for i, key in enumerate(sorted(k for k in series if k[0] == xlabel)):
            by_x = series[key]
            xs = sorted(by_x)
            runs = [r for x in xs for r in by_x[x]]
            name = f"{key[1]}: {labels[key[2]].split(chr(10))[0]}{_seeds(runs)}"
            err = {x: [100 * (1 - r["metrics"]["test_accuracy"]) for r in by_x[x]] for x in xs}
            left.errorbar(xs, [np.mean(err[x]) for x in xs], yerr=[np.std(err[x]) for x in xs] if _seeds(runs)
                          else None, fmt=_line_style(len(xs)), color=f"C{i}", capsize=3, label=name)
            steps = {x: [r["metrics"].get("steps_to_fit") for r in by_x[x]] for x in xs}
            fitted = [x for x in xs if all(steps[x])]
            if len(fitted) < len(xs):
                unfitted.append(f"{key[1]}: {', '.join(f'{x:g}' for x in xs if x not in fitted)}")
            if fitted:
                right.errorbar(fitted, [np.mean(steps[x]) / 1000 for x in fitted],
                               yerr=[np.std(steps[x]) / 1000 for x in fitted] if _seeds(runs) else None,
                               fmt=_line_style(len(fitted)), color=f"C{i}", capsize=3, label=name)
        right.set_xlim(left.get_xlim())  # one x scale per row, whatever could be drawn on the right
        left.set(xlabel=xlabel, ylabel="test error (%)", title="test error (the 1c analogue)")
        right.set(xlabel=xlabel, ylabel="thousand steps to fit", title="time to fit (the 1b analogue)")
        if unfitted:
            right.text(0.02, 0.98, "not fitted within budget (no point drawn):\n" + "\n".join(unfitted),
                       transform=right.transAxes, va="top", fontsize=7, color="firebrick")
        left.legend(fontsize=7)
    fig.suptitle("Pixel noise against test error and time to fit (beyond the paper: Arpit et al. 2017, "
                 "Toneva et al. 2019)")
    return _save(fig, out_dir, "pixel_noise")


def all_figures(results, out_dir, fit_threshold=None):
    """Writes every figure the results allow; returns the paths written."""
    return (figure1a(results, out_dir) + figure1bc(results, out_dir, fit_threshold) + figure2(results, out_dir)
            + memorization(results, out_dir) + dynamics(results, out_dir) + measures_vs_p(results, out_dir)
            + width_sweep(results, out_dir) + kernels_vs_p(results, out_dir) + pixel_noise(results, out_dir))
