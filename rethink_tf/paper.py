"""The paper's numbers as data, each with its provenance tag.

Tags: "P" read in the paper's own words or its Table 1; "S" reported by secondary sources; "R" recalled, not checked
against the PDF; "T" TensorFlow reference code/defaults; "I" an inference; "U" unknown, our default.
Everything in the package that needs one of the paper's numbers reads it from here.
"""

import dataclasses
from typing import Optional

# ---------------------------------------------------------------------------- architectures (Table 1, [P])
TABLE1_PARAMS = {
    "small_inception": 1_649_402,
    "small_inception_nobn": 1_649_402,
    "small_alexnet": 1_387_786,
    "mlp_3x512": 1_735_178,
    "mlp_1x512": 1_209_866,
}


# ---------------------------------------------------------------------------- training recipes (§4, App. A)
@dataclasses.dataclass(frozen=True)
class Recipe:
    """An optimizer recipe. The CIFAR-10 one is Appendix A [P]; batch size and weight decay value are [U]."""

    optimizer: str
    learning_rate: float
    lr_decay: float
    lr_decay_epochs: float
    momentum: float
    batch_size: int
    weight_decay: float  # the value used when a "weight decay: yes" experiment asks for it
    label_smoothing: float = 0.0
    tags: str = ""


RECIPES = {
    # "SGD with a momentum parameter of 0.9. An initial learning rate of 0.1 (for small Inception) or 0.01 (for
    # small Alexnet and MLPs) ... decay factor of 0.95 per training epoch" [P]; batch 128 [U]; wd 5e-4 [U].
    "small_inception": Recipe("sgd", 0.1, 0.95, 1, 0.9, 128, 5e-4, tags="P; batch/wd U"),
    "small_inception_nobn": Recipe("sgd", 0.1, 0.95, 1, 0.9, 128, 5e-4, tags="P/I; batch/wd U"),
    "small_alexnet": Recipe("sgd", 0.01, 0.95, 1, 0.9, 128, 5e-4, tags="P; batch/wd U"),
    "mlp_1x512": Recipe("sgd", 0.01, 0.95, 1, 0.9, 128, 5e-4, tags="P; batch/wd U"),
    "mlp_3x512": Recipe("sgd", 0.01, 0.95, 1, 0.9, 128, 5e-4, tags="P; batch/wd U"),
    # TF inception package [T]: RMSProp(decay 0.9, momentum 0.9, eps 1.0), lr 0.045 × 0.94 every 2 epochs,
    # batch 32 per worker, wd 4e-5, label smoothing 0.1. The paper's async 50-worker SGD is not public [R].
    "inception_v3": Recipe("rmsprop", 0.045, 0.94, 2, 0.9, 32, 4e-5, label_smoothing=0.1, tags="T"),
}


# ---------------------------------------------------------------------------- results
@dataclasses.dataclass(frozen=True)
class Result:
    """One number of the paper, with the setting it belongs to.

    Attributes:
      table: "table1", "table2", "table4", "kernels".
      model, dataset: what was trained.
      corrupt: "none" or "random_labels".
      random_crop, weight_decay, augment, dropout: the regularizer switches of that row.
      metric: e.g. "train_accuracy", "test_accuracy", "top5_test_accuracy", "test_error", "norm".
      value: in percent for accuracies/errors; None for "failed to converge".
      tag: provenance (P/S/R).
      note: anything else (e.g. "best during training").
      lr_decay: the decay the row was trained with when it is not the model's recipe's (Table 4's crop and
        augmentation rows: 0.999 per epoch, Appendix E), else None.
    """

    table: str
    model: str
    dataset: str
    corrupt: str
    metric: str
    value: Optional[float]
    tag: str
    random_crop: bool = False
    weight_decay: bool = False
    augment: bool = False
    dropout: bool = False
    note: str = ""
    lr_decay: Optional[float] = None  # the row's learning-rate decay where it is not its model's recipe's


def _table1():
    rows = []
    spec = {  # model: [(crop, wd, train, test)], then the random-label row (train, test)
        "small_inception": ([(1, 1, 100.0, 89.05), (1, 0, 100.0, 89.31), (0, 1, 100.0, 86.03), (0, 0, 100.0, 85.75)],
                            (100.0, 9.78)),
        "small_inception_nobn": ([(0, 1, 100.0, 83.00), (0, 0, 100.0, 82.00)], (100.0, 10.12)),
        "small_alexnet": ([(1, 1, 99.90, 81.22), (1, 0, 99.82, 79.66), (0, 1, 100.0, 77.36), (0, 0, 100.0, 76.07)],
                          (99.82, 9.86)),
        "mlp_3x512": ([(0, 1, 100.0, 53.35), (0, 0, 100.0, 52.39)], (100.0, 10.48)),
        "mlp_1x512": ([(0, 1, 99.80, 50.39), (0, 0, 100.0, 50.51)], (99.34, 10.61)),
    }
    for model, (settings, random_row) in spec.items():
        for crop, wd, train, test in settings:
            for metric, value in (("train_accuracy", train), ("test_accuracy", test)):
                rows.append(Result("table1", model, "cifar10", "none", metric, value, "P", bool(crop), bool(wd)))
        for metric, value in zip(("train_accuracy", "test_accuracy"), random_row):
            rows.append(Result("table1", model, "cifar10", "random_labels", metric, value, "P"))
    return rows


def _table2():
    """ImageNet, Inception V3 (Appendix B). Tags per cell: the sources differ by cell."""
    rows = []
    true_rows = [  # (aug, dropout, wd), [(metric, value, tag, note)]
        ((1, 1, 1), [("train_accuracy", 92.18, "S"), ("top5_train_accuracy", 99.21, "R"),
                     ("test_accuracy", 77.84, "S"), ("top5_test_accuracy", 93.92, "S")]),
        ((1, 0, 0), [("train_accuracy", 92.33, "S"), ("top5_train_accuracy", 99.17, "R"),
                     ("test_accuracy", 72.95, "P"), ("top5_test_accuracy", 90.43, "S")]),
        ((0, 0, 1), [("train_accuracy", 90.60, "S"), ("top5_train_accuracy", 100.0, "R"),
                     ("test_accuracy", 67.18, "S"), ("top5_test_accuracy", 86.44, "S"),
                     ("best_test_accuracy", 72.57, "S"), ("top5_best_test_accuracy", 91.31, "R")]),
        ((0, 0, 0), [("train_accuracy", 99.53, "S"), ("top5_train_accuracy", 100.0, "R"),
                     ("test_accuracy", 59.80, "P"), ("top5_test_accuracy", 80.38, "P"),
                     ("best_test_accuracy", 63.16, "P"), ("top5_best_test_accuracy", 84.49, "R")]),
    ]
    random_rows = [
        ((0, 1, 1), [("train_accuracy", 91.18, "R"), ("top5_train_accuracy", 97.95, "R"),
                     ("test_accuracy", 0.09, "R"), ("top5_test_accuracy", 0.49, "R")]),
        ((0, 0, 1), [("train_accuracy", 87.81, "R"), ("top5_train_accuracy", 96.15, "R"),
                     ("test_accuracy", 0.12, "R"), ("top5_test_accuracy", 0.50, "R")]),
        ((0, 0, 0), [("train_accuracy", 95.20, "P"), ("top5_train_accuracy", 99.14, "R"),
                     ("test_accuracy", 0.11, "R"), ("top5_test_accuracy", 0.56, "R")]),
    ]
    for corrupt, table in (("none", true_rows), ("random_labels", random_rows)):
        for (aug, drop, wd), cells in table:
            for metric, value, tag in cells:
                rows.append(Result("table2", "inception_v3", "imagenet2012", corrupt, metric, value, tag,
                                   augment=bool(aug), dropout=bool(drop), weight_decay=bool(wd)))
    return rows


def _table4():
    """Random labels on CIFAR-10 with explicit regularizers (Appendix E) [S]; crop/aug rows used LR decay 0.999."""
    r = lambda model, value, **kw: Result("table4", model, "cifar10", "random_labels", "train_accuracy", value, "S",
                                          **kw)
    return [r("small_inception", 100.0, weight_decay=True),
            r("small_inception", 99.93, random_crop=True, note="lr decay 0.999/epoch, longer run", lr_decay=0.999),
            r("small_inception", 99.28, augment=True, note="flips + rotation ±25°; lr decay 0.999/epoch",
              lr_decay=0.999),
            r("small_alexnet", None, weight_decay=True, note="failed to converge"),
            r("mlp_3x512", 100.0, weight_decay=True),
            r("mlp_1x512", 99.21, weight_decay=True)]


def _kernels():
    """§5 (and possibly 'Table 3'): min-norm kernel interpolation, test error in percent [P]."""
    k = lambda dataset, features, metric, value, note="": Result("kernels", f"kernel_{features}", dataset, "none",
                                                                metric, value, "P", note=note)
    return [k("mnist", "pixels", "test_error", 1.2), k("mnist", "pixels", "norm", 220.0, "approximately"),
            k("mnist", "gabor", "test_error", 0.6), k("mnist", "gabor", "norm", 390.0),
            k("cifar10", "pixels", "test_error", 46.0, "Gaussian kernel"),
            k("cifar10", "random_conv", "test_error", 17.0, "32,000 random filters"),
            k("cifar10", "random_conv", "test_error", 15.0, "32,000 random filters, with l2 regularization")]


RESULTS = tuple(_table1() + _table2() + _table4() + _kernels())


# ---------------------------------------------------------------------------- Figure 1 (drawn beside measured curves)
# Figure 1b: "time to overfit" relative to p = 0 reaches a small constant factor at p = 1, read off the figure as
# roughly 1.5-3.5x for Inception, AlexNet and MLP 1x512 [S, approximate; the paper prints no number].
FIGURE1B_SLOWDOWN_AT_P1 = (1.5, 3.5)
FIGURE1_MODELS = ("small_inception", "small_alexnet", "mlp_1x512")  # Figure 1b/1c's three CIFAR-10 models


def figure1c_anchors(model):
    """Figure 1c's end points for a CIFAR-10 model, in percent test error: (p = 0, p = 1) from Table 1's
    no-regularizer rows with true and with random labels (the caption: the error rises steadily from the
    true-label error and "converge[s] to 90%"), or None for a model not in Figure 1."""
    if model not in FIGURE1_MODELS:
        return None

    def test_error(corrupt):
        (row,) = [r for r in RESULTS if r.table == "table1" and r.model == model and r.corrupt == corrupt
                  and r.metric == "test_accuracy" and not (r.random_crop or r.weight_decay)]
        return round(100.0 - row.value, 2)

    return test_error("none"), test_error("random_labels")
