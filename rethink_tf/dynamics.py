"""Per-example training dynamics (beyond the paper): what the model predicts for every training example, epoch by
epoch, and the measures the memorization literature derives from it.

Why: the paper shows *that* a network fits random labels (§2); its follow-ups ask *in what order*. Arpit et al.
2017 ("A closer look at memorization in deep networks") find real examples learned before noisy ones; Toneva et
al. 2019 ("An empirical study of example forgetting") count forgetting events; the noisy-label literature (ELR,
CIFAR-N) plots, for the examples whose label was changed, the fraction memorized (predicting the label trained on)
versus still predicting the true label. `--per_example` keeps each epoch's predictions
(`per_example/epoch_NNNN.npy`, one uint8/int16 class id per training example, in key order) and, at the end of
the run, writes `per_example.npz` in the schema of Feldman & Zhang's released memorization arrays
(`trainset_mask`, `trainset_correctness`, `trainset_predictions`; rows here are epochs, not runs) with the keys,
the source order index and both label arrays for alignment checks, plus these summaries:

* first_learned_epoch: the first epoch whose prediction equals the label trained on (Arpit et al.); 0: never.
* forgetting_events: how often an example goes from correct at one epoch to wrong at the next (Toneva et al.,
  counted at epoch granularity: they count at every minibatch presentation, which this approximates from below).
* never_learned: never correct at any recorded epoch (Toneva et al. count these as unforgettable's opposite:
  forgotten infinitely often).
"""

import os

import numpy as np

FOLDER = "per_example"
EXPORT = "per_example.npz"


def epoch_path(run_dir, epoch):
    return os.path.join(run_dir, FOLDER, f"epoch_{epoch:04d}.npy")


def save_epoch(run_dir, epoch, predictions, num_classes):
    """Writes one epoch's predicted classes (atomically: a kill leaves the previous file or none)."""
    dtype = np.uint8 if num_classes <= 256 else np.int16 if num_classes <= 32768 else np.int32
    path = epoch_path(run_dir, epoch)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp.npy"
    np.save(tmp, np.asarray(predictions).astype(dtype))
    os.replace(tmp, path)


def load_epochs(run_dir, epochs, size):
    """(epochs present, predictions (E, n)) for the given epoch numbers whose files exist with n entries."""
    found, rows = [], []
    for e in epochs:
        path = epoch_path(run_dir, e)
        if os.path.exists(path):
            p = np.load(path, allow_pickle=False)
            if p.shape == (size,):
                found.append(e)
                rows.append(p.astype(np.int64))
    return found, (np.stack(rows) if rows else np.zeros((0, size), np.int64))


def first_learned_epoch(correct, epochs):
    """correct (E, n) bool over the epochs `epochs` -> (n,) the first epoch number with a correct prediction, 0
    if none."""
    correct = np.asarray(correct, bool)
    if not len(correct):
        return np.zeros(correct.shape[1:], np.int64)
    first = np.argmax(correct, axis=0)
    return np.where(correct.any(axis=0), np.asarray(epochs, np.int64)[first], 0)


def forgetting_events(correct):
    """correct (E, n) bool -> (n,) the number of epoch-to-epoch transitions from correct to wrong."""
    correct = np.asarray(correct, bool)
    return np.sum(correct[:-1] & ~correct[1:], axis=0).astype(np.int64)


def changed_curves(predictions, trained, clean, changed):
    """Per epoch, over the examples whose label the corruption changed: the fractions predicting the label trained
    on (memorized), the original label, and anything else. Lists, one entry per row of `predictions`."""
    p = np.asarray(predictions)[:, changed]
    if not p.shape[1]:
        return {"memorized": [], "predicts_original": [], "other": []}
    memorized = p == trained[changed]
    original = p == clean[changed]
    return {"memorized": memorized.mean(axis=1).tolist(), "predicts_original": original.mean(axis=1).tolist(),
            "other": (~memorized & ~original).mean(axis=1).tolist()}  # counted: never a -1e-17 from 1 - a - b


def export(run_dir, history, arrays):
    """Writes per_example.npz from the run's per-epoch files and returns the summary results.json records.

    Args:
      run_dir: the run directory.
      history: the run's history rows (their epochs are the ones looked for).
      arrays: {key, clean, trained, index} of the training set in key order (pipeline.Datasets.train_labels).

    Returns:
      A dict: file, epochs (recorded), epochs_missing (trained without --per_example, or lost), and per group
      (all / intact / changed) the mean forgetting events, the median first-learned epoch and the never-learned
      fraction; the changed examples' curves per epoch.
    """
    trained, clean = np.asarray(arrays["trained"]), np.asarray(arrays["clean"])
    changed = trained != clean
    wanted = [row["epoch"] for row in history]
    epochs, predictions = load_epochs(run_dir, wanted, len(trained))
    correct = predictions == trained
    first = first_learned_epoch(correct, epochs)
    forgets = forgetting_events(correct)
    tmp = os.path.join(run_dir, EXPORT + ".tmp.npz")
    np.savez_compressed(
        tmp, epochs=np.asarray(epochs, np.int64), keys=arrays["key"], source_index=arrays["index"],
        labels=trained, clean_labels=clean, changed=changed,
        trainset_mask=np.ones_like(correct), trainset_correctness=correct, trainset_predictions=predictions,
        first_learned_epoch=first, forgetting_events=forgets)
    os.replace(tmp, os.path.join(run_dir, EXPORT))
    summary = {"file": EXPORT, "epochs": epochs, "epochs_missing": sorted(set(wanted) - set(epochs))}
    for name, sel in (("all", np.ones_like(changed)), ("intact", ~changed), ("changed", changed)):
        if sel.any() and len(epochs):
            learned = first[sel][first[sel] > 0]
            summary[name] = {"examples": int(sel.sum()), "forgetting_events_mean": float(forgets[sel].mean()),
                             "first_learned_epoch_median": float(np.median(learned)) if len(learned) else None,
                             "never_learned_fraction": float(np.mean(first[sel] == 0))}
    if changed.any() and len(epochs):
        summary["changed_curves"] = changed_curves(predictions, trained, clean, changed)
    return summary


def read_export(run_dir):
    """The arrays of a run's per_example.npz as a dict."""
    with np.load(os.path.join(run_dir, EXPORT), allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def clear(run_dir, from_epoch):
    """Removes the epoch files after `from_epoch` (a resume retrains them; their predictions would be stale)."""
    folder = os.path.join(run_dir, FOLDER)
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith("epoch_") and name.endswith(".npy"):
            try:
                if int(name[6:10]) > from_epoch:
                    os.remove(os.path.join(folder, name))
            except ValueError:
                continue

