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

Pixel corruptions act on the model-input crop (28×28 for CIFAR-10), in [0, 1] float units, before per-image
whitening (which is permutation-invariant, so the order relative to whitening does not matter; the order
relative to the crop does).
"""

import dataclasses
import hashlib
from typing import Optional

import numpy as np

from rethink_tf.data import keyed_random as kr
from rethink_tf.data.keyed_random import uniform
from rethink_tf.errors import UserError

KINDS = ("none", "labels", "random_labels", "shuffled_pixels", "random_pixels", "gaussian")
PIXEL_KINDS = ("shuffled_pixels", "random_pixels", "gaussian")
LABEL_KINDS = ("labels", "random_labels")

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
    """

    kind: str = "none"
    prob: float = 0.0
    seed: int = 0
    num_classes: int = 10
    mean: Optional[tuple] = None
    std: Optional[tuple] = None
    corrupt_test_labels: bool = False
    classes: Optional[tuple] = None

    @property
    def drawn_from(self):
        """How many classes a random label is drawn from."""
        return len(self.classes) if self.classes else self.num_classes

    @property
    def touches_labels(self):
        return self.kind in LABEL_KINDS and self.prob > 0

    @property
    def touches_pixels(self):
        return self.kind in PIXEL_KINDS


def check_kind(kind, prob=None):
    """Raises UserError unless `kind` is known and `prob` fits it (cheap: entry points call it before any data)."""
    if kind not in KINDS:
        raise UserError(f"unknown corruption {kind!r}; known: {', '.join(KINDS)}")
    if prob is not None and not 0.0 <= float(prob) <= 1.0:
        raise UserError(f"corruption probability must lie in [0, 1]; received {prob}")
    if kind not in LABEL_KINDS and prob is not None:
        raise UserError(f"a corruption probability ({prob}) applies to label corruptions only; --corrupt={kind} "
                        "would ignore it: use --corrupt=labels, or drop --corrupt_prob")
    if kind == "labels" and prob is None:
        raise UserError("corruption 'labels' needs a probability p in [0, 1] (--corrupt_prob)")


def make(kind, prob=None, seed=0, num_classes=10, mean=None, std=None, corrupt_test_labels=False, classes=None):
    """Validates and builds a Corruption.

    Args:
      kind: one of KINDS.
      prob: for "labels", the probability p in [0, 1]; must be None or 1 for "random_labels", None otherwise.
      seed: non-negative integer.
      num_classes: number of classes (>= 2).
      mean, std: per-channel moments, required for "gaussian".
      corrupt_test_labels: corrupt the test labels too.
      classes: the label ids present (a class subset), or None for all num_classes.

    Raises:
      UserError: unknown kind, p outside [0, 1], missing moments.
    """
    check_kind(kind, prob)
    if kind == "random_labels":
        if prob not in (None, 1.0, 1):
            raise UserError(f"random_labels means p = 1; received p = {prob} (use --corrupt=labels for p < 1)")
        prob = 1.0
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"corruption seed must be a non-negative integer; received {seed!r}")
    if kind == "gaussian" and (mean is None or std is None):
        raise UserError("gaussian corruption needs the dataset's per-channel mean and std")
    return Corruption(kind, float(prob) if kind in LABEL_KINDS else 0.0, int(seed), int(num_classes),
                      None if mean is None else tuple(float(m) for m in mean),
                      None if std is None else tuple(float(s) for s in std), bool(corrupt_test_labels),
                      None if classes is None else tuple(int(k) for k in classes))


# ------------------------------------------------------------------------------------------- the maps

def corrupt_labels(c, labels, keys, split="train"):
    """Returns the labels after corruption `c`, element-wise over tensors of any shape.

    Used per example inside tf.data and, on whole arrays, for the fingerprint: one implementation for both.
    """
    import tensorflow as tf

    labels = tf.cast(labels, tf.int64)
    if not c.touches_labels or (split == "test" and not c.corrupt_test_labels):
        return labels
    s = _SPLIT_ID[split]
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
    # gaussian: Box-Muller on two hashed uniforms per value.
    n = tf.cast(tf.size(image), tf.int64)
    idx = tf.range(n, dtype=tf.int64)
    u1 = 1.0 - uniform(c.seed, kr.GAUSSIAN, s, key, 2 * idx)  # in (0, 1]
    u2 = uniform(c.seed, kr.GAUSSIAN, s, key, 2 * idx + 1)
    z = tf.sqrt(-2.0 * tf.math.log(u1)) * tf.cos(2.0 * np.pi * u2)
    z = tf.reshape(tf.cast(z, tf.float32), shape)
    return tf.constant(c.mean, tf.float32) + tf.constant(c.std, tf.float32) * z


def example_map(c, split):
    """A tf.data map fn {image float32 [0,1], label, key} -> same dict, corrupted; pure in (c, split, key)."""

    def fn(ex):
        out = dict(ex)
        out["label"] = corrupt_labels(c, ex["label"], ex["key"], split)
        out["image"] = corrupt_image(c, ex["image"], ex["key"], split)
        return out

    return fn


def label_summary(c, labels, keys, split="train"):
    """What a run records about its training labels: realized changed fraction, histogram, SHA-256.

    Args:
      c: the Corruption.
      labels, keys: numpy arrays of the *clean* labels and the example keys.
      split: which split these are.

    Returns:
      dict with kind, prob, seed, num_examples, changed_fraction, expected_changed_fraction, class_histogram and
      sha256 (of the corrupted labels as int64 in key order, so two runs can prove they trained on the same data).
    """
    order = np.argsort(keys, kind="stable")
    clean = np.asarray(labels, np.int64)[order]
    corrupted = np.asarray(corrupt_labels(c, clean, np.asarray(keys, np.int64)[order], split))
    expected = c.prob * (1.0 - 1.0 / c.drawn_from) if c.touches_labels else 0.0
    return {
        "kind": c.kind, "prob": c.prob, "seed": c.seed, "split": split, "num_examples": int(len(clean)),
        "changed_fraction": float(np.mean(corrupted != clean)) if len(clean) else 0.0,
        "expected_changed_fraction": expected,
        "class_histogram": np.bincount(corrupted, minlength=c.num_classes).tolist(),
        "sha256": hashlib.sha256(corrupted.astype("<i8").tobytes()).hexdigest(),
    }


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
