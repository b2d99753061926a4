"""Prints the tables and the headline numbers of docs/fashion_mnist_demo/ and docs/memorization_demo/ from the
results files under them (run by docs/regenerate_fashion_demos.sh; its output is docs/demo_tables.md, and the demo
pages quote it).

    python docs/demo_tables.py > docs/demo_tables.md
"""

import glob
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def _load(folder):
    out = []
    for path in sorted(glob.glob(os.path.join(HERE, folder, "results", "*", "results.json"))):
        with open(path) as f:
            out.append(json.load(f))
    return out


def steps_to(r, threshold):
    """Steps at the end of the first epoch whose running training accuracy reached `threshold`; None if never."""
    for row in r["history"]:
        if row["train_accuracy"] >= threshold:
            return row["step"]
    return None


def _setting(r):
    c = r["config"]
    return f"labels p={c['corrupt_prob']:g}" if c["corrupt"] == "labels" else c["corrupt"]


def _pct(x):
    return f"{100 * x:.2f}%"


def training_table(runs):
    order = ["none", "labels", "random_labels", "shuffled_pixels", "random_pixels", "gaussian"]
    runs = sorted(runs, key=lambda r: (r["config"]["model"], order.index(r["config"]["corrupt"]),
                                       r["config"].get("corrupt_prob") or 0))
    lines = ["| model (train images) | data | epochs run | steps to 99.9% train acc. | steps to 100% (running) | "
             "train acc., final model | test acc. | labels changed | train time |", "|---" * 9 + "|"]
    for r in runs:
        m, c = r["metrics"], r["config"]
        s999, s100 = steps_to(r, 0.999), steps_to(r, 1.0)
        seconds = sum(row.get("seconds", 0) for row in r["history"])
        lines.append(f"| {c['model']} ({c['train_examples']:,}) | {_setting(r)} | {m['epochs_trained']} | "
                     f"{s999 if s999 is not None else 'never'} | {s100 if s100 is not None else 'never'} | "
                     f"{_pct(m['train_accuracy'])} | {_pct(m['test_accuracy'])} | "
                     f"{100 * r['corruption']['train_labels']['changed_fraction']:.1f}% | {seconds:.0f} s |")
    return "\n".join(lines)


def headline(runs):
    """Test error vs p for the MLP, and the random/true ratio of steps to 99.9%."""
    mlp = {}
    for r in runs:
        c = r["config"]
        if c["model"] == "mlp_1x512" and c["corrupt"] in ("none", "labels", "random_labels"):
            p = 0.0 if c["corrupt"] == "none" else 1.0 if c["corrupt"] == "random_labels" else c["corrupt_prob"]
            mlp[p] = r
    errors = ", ".join(f"p = {p:g}: {100 * (1 - mlp[p]['metrics']['test_accuracy']):.1f}%" for p in sorted(mlp))
    true, rand = steps_to(mlp[0.0], 0.999), steps_to(mlp[1.0], 0.999)
    ratio = f"{rand / true:.2f}x ({rand} / {true} steps)" if true and rand else "not measured (a run never fitted)"
    slow = {p: steps_to(r, 0.999) for p, r in sorted(mlp.items())}
    return (f"MLP 1x512 test error: {errors}.\n\nSteps to 99.9% training accuracy, random labels / true labels: "
            f"{ratio}.\n\nSteps to 99.9% by p: " + ", ".join(f"{p:g}: {s}" for p, s in slow.items()) + ".")


def kernel_lines(kernels):
    lines = []
    for r in sorted(kernels, key=lambda r: r["config"]["corrupt"]):
        m = r["metrics"]
        lines.append(f"- {r['config']['corrupt']}: train error {m['train_error']:.3f}, test error "
                     f"{100 * m['test_error']:.1f}%, relative residual {m['residual']:.1e}, norm {m['norm']:.1f}, "
                     f"{m['seconds']:.0f} s")
    return "\n".join(lines)


def memorization_table(run):
    rows = {row["epoch"]: row for row in run["history"]}
    last = max(rows)
    best = max(rows.values(), key=lambda row: row["test_accuracy"])["epoch"]
    lines = [f"Changed labels: {100 * run['corruption']['train_labels']['changed_fraction']:.1f}%; "
             f"{sum(row.get('seconds', 0) for row in run['history']):.0f} s.", "",
             "| epoch | intact labels fitted | changed labels fitted | test accuracy |", "|---|---|---|---|"]
    for e in sorted({1, 5, 10, 20, 40, 60, best, last}):
        if e in rows:
            row = rows[e]
            note = " (best)" if e == best else ""
            label = f"{e} (stopped: 99.9% of the epoch right)" if e == last else str(e)
            lines.append(f"| {label} | {100 * row['train_accuracy_intact']:.1f}% | "
                         f"{100 * row['train_accuracy_changed']:.1f}% | {100 * row['test_accuracy']:.1f}%{note} |")
    return "\n".join(lines)


def main():
    everything = _load("fashion_mnist_demo")
    trained = [r for r in everything if r.get("kind") == "train"]
    kernels = [r for r in everything if r.get("kind") != "train"]
    print("# Tables of the Fashion-MNIST demonstrations (printed by docs/demo_tables.py)\n")
    print("## docs/fashion_mnist_demo\n")
    print(training_table(trained) + "\n")
    print(headline(trained) + "\n")
    print("Kernels (§5, Gaussian kernel, 10,000 training images):\n")
    print(kernel_lines(kernels) + "\n")
    print("## docs/memorization_demo\n")
    [mem] = _load("memorization_demo")
    print(memorization_table(mem))


if __name__ == "__main__":
    main()
