"""`rethink_tf.randomization_test`: the paper's randomization tests (§2, Figure 1) on anyone's model and data.

    rows = rethink_tf.randomization_test(build_model, train_ds, test_ds, epochs=30, workdir="runs/mine")

One training run per corruption, each through the package's own loop (`rethink_tf.training.run.run`): the same pipeline
(in memory, per-epoch seeded order, the paper's per-image whitening), checkpoints and resume, results.json in the
schema every script reads, time to fit, memorization metrics for partial corruption. The user's data enter as
tf.data datasets of (image, label) tuples or dicts, or as the name of a prepared tfds dataset; the examples are keyed on
their content (randomization/randomize.py's content_key), so a corruption is a pure function of the example, and the
dataset's identity in the run names is a fingerprint of those keys and labels: rerunning with the same data resumes,
different data never collide.
"""

import dataclasses
import hashlib
import json
import os

import numpy as np

from rethink_tf import paper, results
from rethink_tf.randomization import randomize as randomization
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.data import corruption as corruption_lib
from rethink_tf.data import sources
from rethink_tf.errors import UserError

FIGURE_1A = ("none", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")
RECIPE = paper.RECIPES["small_alexnet"]  # SGD 0.01, momentum 0.9, decay 0.95 per epoch: the CIFAR-10 recipe


def parse_corruption(c):
    """("labels", 0.4), "labels:0.4", "flip:0.2", "random_pixels:0.5" or a kind name -> (kind, prob)."""
    if isinstance(c, (tuple, list)) and len(c) == 2:
        kind, prob = c[0], float(c[1])
    elif isinstance(c, str) and ":" in c:
        kind, _, p = c.partition(":")
        try:
            prob = float(p)
        except ValueError:
            raise UserError(f"corruption {c!r}: expected KIND:P with P a number in [0, 1], e.g. labels:0.4") from None
    else:
        kind, prob = c, None
    if kind not in corruption_lib.KINDS:
        raise UserError(f"unknown corruption {kind!r}; use one of {', '.join(corruption_lib.KINDS)}, or labels:P")
    if kind == "human_labels":
        raise UserError("human_labels are a dataset's own annotators' labels (CIFAR-10N/100N): train with "
                        "--dataset=tfds:cifar10_n --corrupt=human_labels --train_label_feature=worse_label")
    if kind in corruption_lib.NEEDS_PROB and (prob is None or not 0.0 <= prob <= 1.0):
        raise UserError(f"corruption {c!r}: {kind} needs a probability in [0, 1], e.g. {kind}:0.4")
    if kind == "random_labels" and prob in (1.0, 1):
        prob = None
    return kind, prob


def corruption_name(kind, prob, noise_matrix=None):
    return corruption_lib.describe(kind, prob, noise_matrix).replace(" p=", ":")


def _arrays(dataset, image, label, what):
    """(images, labels, content keys) of a finite tf.data dataset, in its order."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        raise UserError(f"{what} must be a tf.data.Dataset of (image, label) or a tfds dataset name; received "
                        f"{type(dataset).__name__}")
    randomization.check_structure(dataset.element_spec, image, label, None)

    def parts(*ex):
        img, lab, _ = randomization.parts(ex, image, label)
        return img, tf.cast(lab, tf.int64), randomization.content_key(img, lab)

    batches = list(dataset.map(parts, num_parallel_calls=tf.data.AUTOTUNE).batch(4096).as_numpy_iterator())
    if not batches:
        raise UserError(f"{what} is empty")
    return tuple(np.concatenate([b[i] for b in batches]) for i in range(3))


def _fingerprint(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:12]


def load_data(train, test, num_classes=None, image="image", label="label", data_dir=None):
    """(train Split, test Split, dataset name) from tf.data datasets or a tfds name (with data_dir)."""
    if isinstance(train, str) or isinstance(test, str):
        if not (isinstance(train, str) and test in (None, train)):
            raise UserError("a tfds dataset is named once: train='NAME' and test=None (its test split is used)")
        name = train if train.startswith(sources.TFDS_PREFIX) else sources.TFDS_PREFIX + train
        load = dict(data_dir=data_dir, image_feature=image, label_feature=label)
        return sources.load(name, "train", **load), sources.load(name, "test", **load), name
    x, y, k = _arrays(train, image, label, "train")
    tx, ty, tk = _arrays(test, image, label, "test")
    if num_classes is None:
        num_classes = int(max(y.max(), ty.max())) + 1
    if x.shape[1:] != tx.shape[1:]:
        raise UserError(f"train images are {x.shape[1:]} but test images are {tx.shape[1:]}")
    name = f"user:{_fingerprint(k, y, tk, ty)}"
    return (sources.from_arrays(name, "train", x, y, num_classes, k),
            sources.from_arrays(name, "test", tx, ty, num_classes, tk), name)


def _optimizer_name(optimizer):
    """A name for a user's optimizer that changes with its settings (it is part of the run's identity)."""
    import keras

    if not callable(optimizer) or isinstance(optimizer, keras.optimizers.Optimizer):
        raise UserError("optimizer must be a function returning a fresh Keras optimizer (each run needs its own "
                        "state), e.g. optimizer=lambda: keras.optimizers.Adam(1e-3)")
    opt = optimizer()
    if not isinstance(opt, keras.optimizers.Optimizer):
        raise UserError(f"optimizer() returned {type(opt).__name__}, not a keras.optimizers.Optimizer")
    settings = keras.optimizers.serialize(opt)
    settings["config"].pop("name", None)  # "adam", "adam_1", ...: Keras numbers the instances of a process
    config = json.dumps(settings, sort_keys=True, default=str)
    return f"{type(opt).__name__}-{hashlib.sha256(config.encode()).hexdigest()[:8]}"


def randomization_test(build_model, train, test=None, corruptions=FIGURE_1A, epochs=50, batch_size=128,
                       optimizer=None, workdir="runs", num_classes=None, data_dir=None, image="image", label="label",
                       name=None, figures_dir=None, verbose=0, data_name=None, **train_options):
    """Trains `build_model` once per corruption of the training data and reports what the paper's Figure 1 shows.

    Args:
      build_model: a function (input_shape, num_classes) -> an uncompiled keras.Model that outputs logits.
      train, test: tf.data datasets of (image, label[, ...]) tuples or dicts (any image dtype: uint8 images are
        divided by 255, others taken as they are; then per-image whitening, as the paper preprocesses CIFAR-10),
        held in memory; or train="NAME" (test=None), a tfds image classification dataset prepared under data_dir.
      corruptions: kinds ("none", "random_labels", "shuffled_pixels", "random_pixels", "gaussian") and partial
        label corruptions as "labels:0.4" or ("labels", 0.4). Test labels stay clean; pixel corruptions apply to
        the test images too, as in the paper. Beyond the paper: "flip:0.2" (exactly 20% of labels moved to another
        class), "random_pixels:0.5" (half the images), "class_conditional[:P]" with noise_matrix= in
        train_options, "additive_gaussian[:P]" with noise_std= (σ) in train_options (see
        rethink_tf.data.corruption).
      epochs, batch_size: per run. Runs that reach 100% training accuracy keep training to `epochs` unless
        train_options has stop_at_train_accuracy.
      optimizer: None (the paper's CIFAR-10 recipe: SGD 0.01, momentum 0.9, x0.95 per epoch) or a function returning
        a fresh Keras optimizer for each run.
      workdir: parent folder of the run directories; a rerun returns finished runs and resumes killed ones.
      num_classes: classes (default: 1 + the largest label in train and test).
      data_dir, image, label: the tfds folder and feature names (dict datasets use image/label too).
      name: names the model in run directories and figures (default: build_model.__name__).
      data_name: the data's name in figures and tables (default: its "user:<fingerprint>" identity, which still
        names the run directories: two datasets with one display name never share a run).
      figures_dir: also draw Figures 1a/1b/1c (and the memorization figure) of these runs there.
      verbose: 0 no per-epoch output (each run still prints its first and summary lines), 2 one line per epoch.
      **train_options: TrainConfig / DataConfig fields, e.g. seed, lr_decay_examples, learning_rate,
        stop_at_train_accuracy, fit_threshold, weight_decay, augment, corrupt_seed.

    Returns:
      One dict per corruption: corruption, train_accuracy (on the labels trained on), test_accuracy (clean
      labels), generalization_gap (their difference), steps_to_fit (optimizer steps until an epoch reached
      fit_threshold training accuracy; None if never), slowdown (steps_to_fit over the true-label run's; None when
      either is missing), results (the results.json path).

    Raises:
      UserError: bad data, model, optimizer, corruption or option, in one line.
    """
    from rethink_tf import models
    from rethink_tf.reporting import figures as plots
    from rethink_tf.training import run as trainer
    from rethink_tf.data import pipeline

    parsed = [parse_corruption(c) for c in corruptions]
    if not parsed:
        raise UserError("corruptions is empty")
    if not callable(build_model):
        raise UserError("build_model must be a function (input_shape, num_classes) -> keras.Model")
    data_fields = {f.name for f in dataclasses.fields(DataConfig)} - {"dataset", "corrupt", "corrupt_prob",
                                                                      "train_label_feature"}
    noise_matrix = train_options.pop("noise_matrix", None)  # class_conditional's only
    noise_std = train_options.pop("noise_std", None)  # additive_gaussian's only
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)} - {"model", "data", "epochs", "batch_size",
                                                                          "optimizer"}
    unknown = sorted(set(train_options) - data_fields - train_fields)
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)}; TrainConfig/DataConfig fields are "
                        f"{', '.join(sorted(data_fields | train_fields))}")
    train_split, test_split, dataset = load_data(train, test, num_classes, image, label, data_dir)
    data_opts = {k: v for k, v in train_options.items() if k in data_fields}
    run_opts = {k: v for k, v in train_options.items() if k in train_fields}
    run_opts.setdefault("lr_decay_examples", int(round(train_split.size * RECIPE.lr_decay_epochs)))
    model_name = f"user:{name or getattr(build_model, '__name__', 'model')}"
    probe = models.build(model_name, pipeline.model_input_shape(train_split.spec), train_split.spec.num_classes,
                         builder=build_model)  # checked as the run checks it: a keras.Model that takes the input
    model_name += f"-{model_fingerprint(probe)}"
    opt_name = _optimizer_name(optimizer) if optimizer is not None else None
    paths = []
    for kind, prob in parsed:
        cfg = TrainConfig(model=model_name, epochs=epochs, batch_size=batch_size, optimizer=opt_name,
                          data=DataConfig(dataset=dataset, corrupt=kind, corrupt_prob=prob, data_dir=data_dir,
                                          image_feature=image, label_feature=label,
                                          noise_matrix=noise_matrix if kind == "class_conditional" else None,
                                          noise_std=noise_std if kind == "additive_gaussian" else None,
                                          **data_opts), **run_opts)
        datasets = pipeline.build(cfg.data, batch_size, epochs, splits=(train_split, test_split))
        if verbose:
            print(f"randomization test: {corruption_name(kind, prob)} ({len(paths) + 1}/{len(parsed)})", flush=True)
        paths.append(trainer.run(cfg, workdir, datasets=datasets, build_model=build_model, optimizer=optimizer,
                                   verbose=verbose))
    records = [results.read_json(p) for p in paths]
    display = {"model": name or getattr(build_model, "__name__", "model")}
    if data_name:
        display["dataset"] = data_name
    for record, path in zip(records, paths):
        if record.get("display") != display:  # how figures and tables name these runs (not their identity)
            record["display"] = display
            results.write_json(path, record)
    rows = [_row(kind, prob, r, p) for (kind, prob), r, p in zip(parsed, records, paths)]
    base = next((r["steps_to_fit"] for r in rows if r["corruption"] == "none"), None)
    for r in rows:
        r["slowdown"] = r["steps_to_fit"] / base if base and r["steps_to_fit"] else None
    if figures_dir:
        plots.all_figures([dict(r, run_dir=os.path.dirname(p)) for r, p in zip(records, paths)], figures_dir)
    return rows


def model_fingerprint(model):
    """8 hex digits of a built Keras model's architecture: every layer's class and config (names left out: Keras
    numbers them per session) and weight shapes. Part of the run name, so that a changed width or layer is a new
    run, never the previous model's results or a resume into another architecture."""
    import keras

    from rethink_tf import models

    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in sorted(value.items()) if k != "name"}
        if isinstance(value, (list, tuple)):
            return [strip(v) for v in value]
        return value

    described = []
    for layer in models.all_layers(model):
        try:
            config = layer.get_config() if not isinstance(layer, keras.Model) else {}
        except NotImplementedError:  # a custom layer without get_config: its class and weights still count
            config = {}
        described.append([type(layer).__name__, strip(config), [list(w.shape) for w in layer.weights]])
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=lambda o: type(o).__name__)
                          .encode()).hexdigest()[:8]  # an object in a config counts by its type, not its address


def _row(kind, prob, record, path):
    m = record["metrics"]
    return {"corruption": corruption_name(kind, prob), "train_accuracy": m["train_accuracy"],
            "test_accuracy": m["test_accuracy"], "generalization_gap": m["train_accuracy"] - m["test_accuracy"],
            "steps_to_fit": m.get("steps_to_fit"), "slowdown": None, "results": path}


def format_table(rows):
    """The rows as a plain-text table (what examples/your_model.py prints)."""
    lines = [f"{'corruption':<16} {'train acc':>9} {'test acc':>9} {'gap':>7} {'steps to fit':>12} {'slowdown':>8}"]
    for r in rows:
        fit = f"{r['steps_to_fit']:,}" if r["steps_to_fit"] else "not fitted"
        slow = f"{r['slowdown']:.2f}x" if r["slowdown"] else "-"
        lines.append(f"{r['corruption']:<16} {100 * r['train_accuracy']:>8.2f}% {100 * r['test_accuracy']:>8.2f}% "
                     f"{100 * r['generalization_gap']:>6.1f}% {fit:>12} {slow:>8}")
    return "\n".join(lines)
