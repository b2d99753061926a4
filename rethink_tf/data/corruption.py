"""The paper's six randomization tests (§2.1) as pure functions of (seed, split, key).

Why pure functions: the paper's random labels "are fixed and consistent across epochs" (§2.1). Every random
number here is keyed_random.uniform of (seed, stream, split, key[, position]), so a corruption is the same in
every epoch, under any shuffle order or parallelism, on every replica and worker and after a restart.

Semantics (§2.1 of the paper, exactly):
  * labels (p): with probability p an example's label is replaced by a class drawn uniformly from *all* classes,
    the true one included, so about 0.9·p of labels change for 10 classes. `random_labels` is p = 1.
  * shuffled_pixels: one permutation of the H·W pixel positions (RGB triples move together), the same for every
    train and test image.
  * random_pixels: an independent permutation of pixel positions per image, fixed across epochs.
  * gaussian: every value of every image replaced by N(mean_c, std_c²) with the per-channel mean and std of the
    training images (in [0, 1] units, after the crop); labels unchanged.
Labels of the test split stay clean unless `corrupt_test_labels` is set; pixel corruptions apply to both splits
("the same permutation is applied to all the images in both training and test set").

Beyond the paper (the noise models of its follow-up literature; none is a default):
  * flip (p): exactly round(p·n) examples of the split, the n·p with the smallest hashed uniform, get a label
    *different* from their own, uniform over the other classes (Toneva et al. 2019, Nakkiran et al. 2020): the
    changed fraction is p itself, not the paper's ≈ 0.9·p.
  * class_conditional: each label y becomes j with probability T[y, j] of a row-stochastic matrix T (Patrini et al.
    2017); NOISE_PAIRS["cifar10_pairs"] with p is the usual asymmetric CIFAR-10 noise (truck→automobile,
    bird→airplane, deer→horse, cat↔dog, each with probability p).
  * a pixel kind with p < 1: only a fraction of images (each with probability p, keyed) is corrupted, Arpit et al.
    2017's mixtures of real and noise images: the pixel-side analogue of Figure 1b/1c's label p.
  * additive_gaussian (σ): every value gets x + σ·z, z ~ N(0, 1) keyed per value (Toneva et al. 2019, Fig. 11's
    increasing pixel noise), not clipped: clipping to [0, 1] would bias the noise's mean near black and white
    pixels, and per-image whitening follows anyway. With p < 1 only a fraction of the images, as above.
  * human_labels: the labels human annotators gave (CIFAR-10N / CIFAR-100N, Wei et al. 2022: tfds cifar10_n,
    cifar100_n), read from the dataset's own train label feature (--train_label_feature, e.g. worse_label); a
    "changed" label is one that differs from the clean label. Nothing is drawn: the noise is the data's. Test
    labels stay the clean ones (the annotators labelled the training set only).

Pixel corruptions act on the model-input crop (28×28 for CIFAR-10), in [0, 1] float units, before per-image
whitening (which is permutation-invariant, so the order relative to whitening does not matter; the order
relative to the crop does).
"""

import dataclasses
import hashlib
import math
from typing import Optional

import numpy as np

from rethink_tf.data import keyed_random as kr
from rethink_tf.data.keyed_random import uniform
from rethink_tf.errors import UserError

KINDS = ("none", "labels", "random_labels", "shuffled_pixels", "random_pixels", "gaussian", "flip",
         "class_conditional", "additive_gaussian", "human_labels")
PIXEL_KINDS = ("shuffled_pixels", "random_pixels", "gaussian", "additive_gaussian")
LABEL_KINDS = ("labels", "random_labels", "flip", "class_conditional", "human_labels")
NEW_VALUES = ("gaussian", "additive_gaussian")  # pixel kinds that make new values (float images, not uint8)
NEEDS_PROB = ("labels", "flip")  # kinds that take a probability and have no default for it

# Asymmetric noise: (from, to) class pairs, each label of `from` moved to `to` with probability p. CIFAR-10's are
# the pairs of Patrini et al. 2017 (truck→automobile, bird→airplane, deer→horse, cat↔dog), the usual benchmark.
NOISE_PAIRS = {"cifar10_pairs": ((9, 1), (2, 0), (4, 7), (3, 5), (5, 3))}

_SPLIT_ID = {"train": 0, "test": 1}  # a word of every corruption draw: train and test draw independently


@dataclasses.dataclass(frozen=True)
class Corruption:
    """A fully specified randomization.

    Attributes:
      kind: one of KINDS.
      prob: label corruption probability p (1.0 for random_labels; unused for pixel kinds).
      seed: the corruption seed (independent of the training seed).
      num_classes: number of classes labels are drawn from.
      mean, std: per-channel dataset moments in [0, 1] units (gaussian only).
      corrupt_test_labels: also corrupt test labels (off by default: the paper's test error is on true labels).
      classes: the label ids a random label is drawn from when the data hold only some of the num_classes (an
        ImageNet prepared from a subset of its classes); None: all of 0 .. num_classes - 1.
      pixel_fraction: pixel kinds: the probability that an image is corrupted (None: every image, the paper's).
      matrix: class_conditional: the row-stochastic transition matrix T as a tuple of rows.
      flip_thresholds: flip: {split: the hashed-uniform threshold that selects exactly round(p·n) of its examples}
        as a tuple of (split, threshold) pairs (with_flip_thresholds sets them from the split's keys).
      noise_std: additive_gaussian: σ, in [0, 1] pixel units.
    """

    kind: str = "none"
    prob: float = 0.0
    seed: int = 0
    num_classes: int = 10
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    corrupt_test_labels: bool = False
    classes: Optional[tuple] = None
    pixel_fraction: Optional[float] = None
    matrix: Optional[tuple] = None
    flip_thresholds: tuple = ()
    noise_std: Optional[float] = None

    @property
    def drawn_from(self):
        """How many classes a random label is drawn from."""
        return len(self.classes) if self.classes else self.num_classes

    @property
    def touches_labels(self):
        if self.kind == "class_conditional":
            return not np.array_equal(np.asarray(self.matrix), np.eye(len(self.matrix)))
        return self.kind == "human_labels" or (self.kind in LABEL_KINDS and self.prob > 0)

    @property
    def touches_pixels(self):
        return self.kind in PIXEL_KINDS


def check_kind(kind, prob=None, noise_matrix=None, noise_std=None, train_label_feature=None):
    """Raises UserError unless `kind` is known and `prob`, `noise_matrix`, `noise_std` and `train_label_feature` fit
    it (cheap: entry points call it before any data)."""
    if kind not in KINDS:
        raise UserError(f"unknown corruption {kind!r}; known: {', '.join(KINDS)}")
    if (kind == "additive_gaussian") != (noise_std is not None):
        raise UserError("--corrupt=additive_gaussian adds noise of standard deviation --noise_std: give it"
                        if noise_std is None else
                        f"--noise_std is the σ of --corrupt=additive_gaussian only (received --corrupt={kind})")
    if noise_std is not None and not (math.isfinite(noise_std) and noise_std > 0):
        raise UserError(f"--noise_std must be a positive number (σ in [0, 1] pixel units); received {noise_std}")
    if (kind == "human_labels") != bool(train_label_feature):
        raise UserError("--corrupt=human_labels trains on the annotators' labels of --train_label_feature (CIFAR-10N:"
                        " aggre_label, worse_label, random_label1..3; CIFAR-100N: noise_label): give it"
                        if not train_label_feature else
                        f"--train_label_feature names the human labels of --corrupt=human_labels only (received "
                        f"--corrupt={kind})")
    if kind == "human_labels" and prob is not None:
        raise UserError("--corrupt=human_labels takes the annotators' labels as they are; drop --corrupt_prob")
    if prob is not None and not 0.0 <= float(prob) <= 1.0:
        raise UserError(f"corruption probability must lie in [0, 1]; received {prob}")
    if kind == "none" and prob is not None:
        raise UserError(f"a corruption probability ({prob}) needs a corruption; --corrupt=none would ignore it: "
                        "use --corrupt=labels, or drop --corrupt_prob")
    if kind in NEEDS_PROB and prob is None:
        raise UserError(f"--corrupt={kind} needs --corrupt_prob (a probability p in [0, 1])")
    if (kind == "class_conditional") != (noise_matrix is not None):
        raise UserError("--noise_matrix is the transition matrix of --corrupt=class_conditional, and that kind needs "
                        "one (cifar10_pairs, a .npy/.txt file or rows 'a b ...; c d ...')" if noise_matrix is None
                        else f"--noise_matrix applies to --corrupt=class_conditional only (received --corrupt={kind})")
    if kind == "class_conditional":
        named = noise_matrix in NOISE_PAIRS
        if named and prob is None:
            raise UserError(f"--noise_matrix={noise_matrix} moves each pair's labels with probability p: give "
                            "--corrupt_prob")
        if not named and prob is not None:
            raise UserError("a given --noise_matrix holds its own probabilities; drop --corrupt_prob")
        if not named:
            parse_matrix(noise_matrix)


def parse_matrix(text):
    """Rows 'a b c; d e f; ...' (commas or spaces) -> a square float64 array; UserError unless row-stochastic."""
    try:
        rows = [[float(v) for v in row.replace(",", " ").split()] for row in str(text).split(";") if row.strip()]
        m = np.asarray(rows, np.float64)
    except ValueError:
        raise UserError(f"--noise_matrix: cannot read {str(text)[:60]!r} as rows of numbers 'a b; c d'") from None
    if m.ndim != 2 or m.shape[0] != m.shape[1] or m.shape[0] < 2:
        raise UserError(f"--noise_matrix must be square, K x K with K >= 2; received shape {m.shape}")
    if not np.all(np.isfinite(m)) or np.any(m < 0) or not np.allclose(m.sum(1), 1.0, atol=1e-6):
        raise UserError("--noise_matrix must be row-stochastic (entries >= 0, each row summing to 1); row sums: "
                        + ", ".join(f"{v:g}" for v in m.sum(1)))
    return m


def matrix_text(m):
    """A matrix as the canonical one-line text a config stores (and names the run by): '%.17g' entries."""
    return "; ".join(" ".join(f"{v:.17g}" for v in row) for row in np.asarray(m, np.float64))


def transition_matrix(noise_matrix, prob, num_classes):
    """The K x K matrix T of class_conditional: a NOISE_PAIRS name with p, or a matrix text."""
    if noise_matrix in NOISE_PAIRS:
        m = np.eye(num_classes)
        for a, b in NOISE_PAIRS[noise_matrix]:
            if max(a, b) >= num_classes:
                raise UserError(f"--noise_matrix={noise_matrix} names class {max(a, b)}; the data have {num_classes}")
            m[a, a], m[a, b] = 1.0 - prob, prob
        return m
    m = parse_matrix(noise_matrix)
    if len(m) != num_classes:
        raise UserError(f"--noise_matrix is {len(m)} x {len(m)}; the data have {num_classes} classes")
    return m


def describe(kind, prob=None, noise_matrix=None, noise_std=None, train_label_feature=None):
    """A corruption in a few words for tables and lines: "labels p=0.4", "flip p=0.2", "random_pixels p=0.5",
    "class_conditional cifar10_pairs p=0.4", "additive_gaussian σ=0.1", "human_labels worse_label",
    "random_labels", "none"."""
    kind = kind or "none"
    if kind == "additive_gaussian":
        return f"{kind} σ={noise_std:g}" + (f" p={prob:g}" if prob is not None and prob < 1.0 else "")
    if kind == "human_labels":
        return f"{kind} {train_label_feature}"
    if kind == "class_conditional":
        return f"{kind} " + (f"{noise_matrix} p={prob:g}" if noise_matrix in NOISE_PAIRS else "matrix")
    if prob is not None and kind != "random_labels" and not (kind in PIXEL_KINDS and prob == 1.0):
        return f"{kind} p={prob:g}"
    return kind


def make(kind, prob=None, seed=0, num_classes=10, mean=None, std=None, corrupt_test_labels=False, classes=None,
         noise_matrix=None, noise_std=None, train_label_feature=None):
    """Validates and builds a Corruption.

    Args:
      kind: one of KINDS.
      prob: for "labels" and "flip", the probability p in [0, 1]; must be None or 1 for "random_labels"; for pixel
        kinds the fraction of images corrupted (None: all); for class_conditional with a NOISE_PAIRS name, the
        probability of each pair's move.
      seed: non-negative integer.
      num_classes: number of classes (>= 2).
      mean, std: per-channel moments, required for "gaussian".
      corrupt_test_labels: corrupt the test labels too.
      classes: the label ids present (a class subset), or None for all num_classes.
      noise_matrix: class_conditional: a NOISE_PAIRS name or a matrix text (parse_matrix).
      noise_std: additive_gaussian: σ.
      train_label_feature: human_labels: the dataset feature holding the annotators' labels (only checked here:
        the labels themselves come with the data, corrupt_labels' `given`).

    Raises:
      UserError: unknown kind, p outside [0, 1], missing moments.
    """
    check_kind(kind, prob, noise_matrix, noise_std, train_label_feature)
    if kind == "human_labels" and corrupt_test_labels:
        raise UserError("--corrupt=human_labels: the annotators labelled the training set only; drop "
                        "--corrupt_test_labels")
    if kind == "random_labels":
        if prob not in (None, 1.0, 1):
            raise UserError(f"random_labels means p = 1; received p = {prob} (use --corrupt=labels for p < 1)")
        prob = 1.0
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"corruption seed must be a non-negative integer; received {seed!r}")
    if kind == "gaussian" and (mean is None or std is None):
        raise UserError("gaussian corruption needs the dataset's per-channel mean and std")
    if kind in ("flip", "class_conditional") and classes is not None:
        raise UserError(f"--corrupt={kind} needs data holding all {num_classes} classes (this one holds a subset)")
    matrix = None
    if kind == "class_conditional":
        matrix = tuple(tuple(float(v) for v in row) for row in transition_matrix(noise_matrix, prob, num_classes))
    fraction = float(prob) if kind in PIXEL_KINDS and prob is not None and float(prob) < 1.0 else None
    return Corruption(kind, float(prob) if kind in LABEL_KINDS and prob is not None else 0.0, int(seed),
                      int(num_classes), None if mean is None else tuple(float(m) for m in mean),
                      None if std is None else tuple(float(s) for s in std), bool(corrupt_test_labels),
                      None if classes is None else tuple(int(k) for k in classes), fraction, matrix,
                      noise_std=None if noise_std is None else float(noise_std))


def flip_threshold(c, keys, split):
    """The hashed uniform at or below which exactly round(p·n) of the split's `keys` lie: those examples flip.
    -1 selects none. Keys are distinct and the uniforms 53-bit, so ties (which would select more) do not occur in
    practice; label_summary records the realized count."""
    n = len(keys)
    k = int(round(c.prob * n))
    if k == 0:
        return -1.0
    u = np.sort(np.asarray(uniform(c.seed, kr.FLIP_MASK, _SPLIT_ID[split], np.asarray(keys, np.int64))))
    return float(u[k - 1])


def with_flip_thresholds(c, keys_by_split):
    """A flip Corruption with its per-split thresholds from {split: keys} (other kinds: unchanged)."""
    if c.kind != "flip":
        return c
    return dataclasses.replace(c, flip_thresholds=tuple((s, flip_threshold(c, k, s))
                                                        for s, k in sorted(keys_by_split.items())))


# ------------------------------------------------------------------------------------------- the maps

def corrupt_labels(c, labels, keys, split="train", given=None):
    """Returns the labels after corruption `c`, element-wise over tensors of any shape.

    Used per example inside tf.data and, on whole arrays, for the fingerprint: one implementation for both.
    `given`: human_labels: the annotators' labels, aligned with `labels` (the data's own noise; nothing drawn).
    """
    import tensorflow as tf

    labels = tf.cast(labels, tf.int64)
    if not c.touches_labels or (split == "test" and not c.corrupt_test_labels):
        return labels
    if c.kind == "human_labels":
        if given is None:
            raise ValueError("human_labels corruption without the annotators' labels (given=)")
        return tf.cast(given, tf.int64)
    s = _SPLIT_ID[split]
    if c.kind == "flip":
        thresholds = dict(c.flip_thresholds)
        if split not in thresholds:
            raise ValueError(f"flip corruption without a threshold for split {split!r} (with_flip_thresholds)")
        mask = uniform(c.seed, kr.FLIP_MASK, s, keys) <= thresholds[split]
        shift = 1 + tf.cast(tf.floor(uniform(c.seed, kr.FLIP_VALUE, s, keys) * (c.num_classes - 1)), tf.int64)
        return tf.where(mask, (labels + shift) % c.num_classes, labels)
    if c.kind == "class_conditional":  # inverse CDF of the label's row of T at a hashed uniform
        cdf = tf.gather(tf.constant(np.cumsum(np.asarray(c.matrix), axis=1), tf.float64), labels)
        u = uniform(c.seed, kr.CLASS_CONDITIONAL, s, keys)
        new = tf.reduce_sum(tf.cast(cdf <= u[..., None], tf.int64), axis=-1)
        return tf.minimum(new, c.num_classes - 1)  # rows summing to 1 - 1e-16
    mask = uniform(c.seed, kr.LABEL_MASK, s, keys) < c.prob
    new = tf.cast(tf.floor(uniform(c.seed, kr.LABEL_VALUE, s, keys) * c.drawn_from), tf.int64)
    if c.classes:
        new = tf.gather(tf.constant(c.classes, tf.int64), new)
    return tf.where(mask, new, labels)


def corrupt_image(c, image, key, split="train"):
    """Applies a pixel corruption to one float32 HxWxC image in [0, 1] units."""
    import tensorflow as tf

    if not c.touches_pixels:
        return image
    if c.pixel_fraction is not None:  # Arpit et al.'s mixtures: this image is corrupted with probability p
        keep = uniform(c.seed, kr.PIXEL_MASK, _SPLIT_ID[split], key) >= c.pixel_fraction
        return tf.cond(keep, lambda: image, lambda: corrupt_image(dataclasses.replace(c, pixel_fraction=None), image,
                                                                  key, split))
    shape = tf.shape(image)
    positions = shape[0] * shape[1]
    flat = tf.reshape(image, [positions, shape[2]])
    if c.kind == "shuffled_pixels":
        perm = tf.argsort(uniform(c.seed, kr.SHUFFLED_PIXELS, tf.range(positions, dtype=tf.int64)), stable=True)
        return tf.reshape(tf.gather(flat, perm), shape)
    s = _SPLIT_ID[split]
    if c.kind == "random_pixels":
        perm = tf.argsort(uniform(c.seed, kr.RANDOM_PIXELS, s, key, tf.range(positions, dtype=tf.int64)), stable=True)
        return tf.reshape(tf.gather(flat, perm), shape)
    if c.kind == "additive_gaussian":
        return image + tf.constant(c.noise_std, tf.float32) * _normal(c.seed, kr.ADDITIVE_GAUSSIAN, s, key, shape)
    return tf.constant(c.mean, tf.float32) + tf.constant(c.std, tf.float32) * _normal(c.seed, kr.GAUSSIAN, s, key,
                                                                                      shape)


def _normal(seed, stream, split_id, key, shape):
    """Standard normals of `shape`, one per value, keyed on (seed, stream, split, key, position): Box-Muller on two
    hashed uniforms per value."""
    import tensorflow as tf

    n = tf.cast(tf.reduce_prod(shape), tf.int64)
    idx = tf.range(n, dtype=tf.int64)
    u1 = 1.0 - uniform(seed, stream, split_id, key, 2 * idx)  # in (0, 1]
    u2 = uniform(seed, stream, split_id, key, 2 * idx + 1)
    z = tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * np.pi * u2)
    return tf.reshape(tf.cast(z, tf.float32), shape)


def example_map(c, split):
    """A tf.data map fn {image float32 [0,1], label, key[, human_label]} -> same dict, corrupted; pure in
    (c, split, key) (human_labels: the example's own annotator label)."""

    def fn(ex):
        out = dict(ex)
        out["label"] = corrupt_labels(c, ex["label"], ex["key"], split, given=ex.get("human_label"))
        out["image"] = corrupt_image(c, ex["image"], ex["key"], split)
        return out

    return fn


def label_summary(c, labels, keys, split="train", given=None):
    """What a run records about its training labels: realized changed fraction, histogram, SHA-256.

    Args:
      c: the Corruption.
      labels, keys: numpy arrays of the *clean* labels and the example keys.
      split: which split these are.
      given: human_labels: the annotators' labels aligned with `labels` (the train split's).

    Returns:
      dict with kind, prob, seed, num_examples, changed_fraction, expected_changed_fraction, class_histogram,
      noise_matrix (counts[clean, trained-on]: the realized noise, whatever the kind) and sha256 (of the corrupted
      labels as int64 in key order, so two runs can prove they trained on the same data); class_conditional adds
      the transition_matrix it drew from.
    """
    order = np.argsort(keys, kind="stable")
    clean = np.asarray(labels, np.int64)[order]
    given = None if given is None else np.asarray(given, np.int64)[order]
    corrupted = np.asarray(corrupt_labels(c, clean, np.asarray(keys, np.int64)[order], split, given))
    k = c.num_classes
    out = {
        "kind": c.kind, "prob": c.prob, "seed": c.seed, "split": split, "num_examples": int(len(clean)),
        "changed_fraction": float(np.mean(corrupted != clean)) if len(clean) else 0.0,
        "expected_changed_fraction": (float(np.mean(corrupted != clean)) if c.kind == "human_labels" and len(clean)
                                      else expected_changed_fraction(c, clean)),  # human: the data's own rate
        "class_histogram": np.bincount(corrupted, minlength=k).tolist(),
        "noise_matrix": np.bincount(clean * k + corrupted, minlength=k * k).reshape(k, k).tolist(),
        "sha256": hashlib.sha256(corrupted.astype("<i8").tobytes()).hexdigest(),
    }
    if c.matrix is not None:
        out["transition_matrix"] = [list(row) for row in c.matrix]
    return out


def expected_changed_fraction(c, clean):
    """The fraction of `clean` labels the corruption is expected to change (exact for flip)."""
    if not c.touches_labels or not len(clean):
        return 0.0
    if c.kind == "flip":
        return round(c.prob * len(clean)) / len(clean)
    if c.kind == "class_conditional":
        stay = np.diag(np.asarray(c.matrix))[np.asarray(clean, np.int64)]
        return float(np.mean(1.0 - stay))
    return c.prob * (1.0 - 1.0 / c.drawn_from)


def channel_moments(batches):
    """Per-channel mean and population std, in float64, of an iterable of image batches (N, H, W, C) or (N, H, W)
    (one channel): the moments the Gaussian corruption draws from, computed in one pass without holding the set."""
    total = total_sq = count = 0.0
    for x in batches:
        x = np.asarray(x, np.float64)
        x = x.reshape(-1, x.shape[-1] if x.ndim == 4 else 1)
        total, total_sq, count = total + x.sum(0), total_sq + (x * x).sum(0), count + len(x)
    if not count:
        raise UserError("cannot compute image moments of an empty dataset")
    mean = total / count
    return tuple(mean.tolist()), tuple(np.sqrt(np.maximum(total_sq / count - mean ** 2, 0.0)).tolist())


def dataset_moments(images, chunk=4096):
    """channel_moments of in-memory NHWC images in the units the corruption sees: [0, 1] for uint8 images, their
    own for float images (a user's data)."""
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    return channel_moments(np.asarray(images[i:i + chunk], np.float64) / scale for i in range(0, len(images), chunk))
