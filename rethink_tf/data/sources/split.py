"""The types every source returns: a DatasetSpec, and a Split of in-memory arrays or encoded ImageNet records.

An example is `{image: uint8 HxWxC, label: int64, key: int64}`. `key` identifies an example independently of read
order, sharding and shuffling; corruptions are pure functions of (seed, split, key), so the key is what makes them
fixed (data/corruption.py).

The key of an in-memory example is a property of the example itself, its content (`content_key`), and a split's
arrays are kept in key order (`in_key_order`): the original archive and a tfds-prepared copy of the same data (tfds
reorders the examples when it prepares them) give the same keys, hence the same corrupted labels, the same
`--train_examples` subset and the same batches, so a run can be resumed, or a sweep finished, on either.
"""

import dataclasses
import hashlib
import json
import os
from typing import Optional

import numpy as np

from rethink_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What we know about a dataset without reading it (the sizes are the full datasets'; a streamed split's size is
    the prepared one, from its tfds split info)."""

    name: str
    image_shape: Optional[tuple]  # stored image shape; None where it varies (ImageNet)
    num_classes: int
    train_size: int
    test_size: int
    tfds_name: str
    tfds_test_split: str
    in_memory: bool
    archive_help: str  # what to put where, for the "data not found" message
    archive_format: Optional[str] = None  # "cifar", "idx" or None (tfds only)
    download_url: Optional[str] = None  # what tfds downloads from (its host is probed first); None: never download
    image_feature: str = "image"  # tfds feature names (tfds:NAME datasets may name them otherwise)
    label_feature: str = "label"
    full_train_size: Optional[int] = None  # a subset shipped as its own dataset: the size of the set it was cut from
    classes: Optional[tuple] = None  # the label ids present when only some of num_classes are (ImageNet subset)


def string_key(value):
    """The int64 example key of a string tensor: FarmHash64 into [0, 2**62), stable across runs, platforms and
    TF versions. Every string-derived key (ImageNet's file_name, a user feature, content bytes) is this."""
    import tensorflow as tf

    return tf.strings.to_hash_bucket_fast(value, 2**62)


KEY_SCHEME = "content-v1"  # how in-memory examples are keyed; recorded by every run (a change cannot go unnoticed)


def content_key(image, label):
    """The int64 key of one example from its content: FarmHash64 of its serialized image and (int64) label tensors.

    Exact duplicates (the same image bytes and label) share a key, hence a corrupted label: they are one example
    shown twice. The same image under two labels gets two keys. rethink_tf.randomize keys a user's data with it.
    """
    import tensorflow as tf

    blob = tf.strings.join([tf.io.serialize_tensor(image), tf.io.serialize_tensor(tf.cast(label, tf.int64))])
    return string_key(blob)


def in_key_order(images, labels, **more):
    """The arrays {image, label, key, index} of a split with content keys, sorted by key (stable), whatever order
    the source read them in; `index` is each example's position in that order (an archive's file order), which
    per-example exports carry for alignment with other tools. `more`: other per-example arrays (the human labels of
    CIFAR-N), put in the same order; they do not enter the key."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((images, labels))
    ds = ds.map(content_key, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(16384)
    keys = np.concatenate([np.zeros(0, np.int64)] + list(ds.as_numpy_iterator()))
    order = np.argsort(keys, kind="stable")
    return {"image": np.ascontiguousarray(images[order]), "label": np.asarray(labels, np.int64)[order],
            "key": keys[order], "index": order.astype(np.int64), **{k: np.asarray(v)[order] for k, v in more.items()}}


def from_arrays(name, split, images, labels, num_classes, keys):
    """A Split of a user's in-memory data (rethink_tf.randomization_test): uint8 images are kept as they are,
    others as float32; (N, H, W) images get a channel axis."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise UserError(f"{name}: images must be (H, W) or (H, W, C); received shape {images.shape[1:]}")
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != len(images) or not len(labels):
        raise UserError(f"{name}/{split}: {len(images)} images and {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"{name}/{split}: labels must lie in [0, {num_classes}); found {labels.min()}..{labels.max()}")
    ds_spec = DatasetSpec(name, images.shape[1:], num_classes, len(labels), len(labels), None, split, True,
                          "a tf.data dataset")
    arrays = {"image": images, "label": labels, "key": np.asarray(keys, np.int64)}
    return Split(ds_spec, split, len(labels), f"user data {name}", arrays=arrays)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset: in-memory arrays (small datasets) or a tf.data stream (ImageNet).

    Attributes:
      spec: the dataset's DatasetSpec.
      name: "train" or "test".
      size: number of examples (after any subset).
      origin: where the examples were read from, for the run record.
      arrays: dict of numpy arrays image (N,H,W,C) uint8, label (N,) int64, key (N,) int64 and, when the source
        read them in an order of its own, index (N,) int64 (in_key_order); a CIFAR-N train split read with
        train_label_feature also human_label (N,) int64, the annotators' labels; or None.
      records: the encoded records of a streamed split (imagenet.Records); or None.
    """

    spec: DatasetSpec
    name: str
    size: int
    origin: str
    arrays: Optional[dict] = None
    records: Optional[object] = None  # imagenet.Records

    def dataset(self):
        """The in-memory split as a tf.data.Dataset of {image, label, key} dicts in key order (archives)."""
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices({k: self.arrays[k] for k in ("image", "label", "key", "human_label")
                                                   if k in self.arrays})


def fingerprint(*splits):
    """16 hex digits that change when any example of the splits changes: SHA-256 over the in-memory images, labels
    and keys (in order), or over a streamed split's shard file names and counts (ImageNet: the records are not
    read). A run records it and refuses to resume, or to report itself complete, on data with another one."""
    h = hashlib.sha256()
    for split in splits:
        h.update(f"{split.name}:{split.size}".encode())
        if split.arrays is not None:
            for k in ("image", "label", "key", "human_label"):  # human_label: CIFAR-N's annotators (if any)
                if k not in split.arrays:
                    continue
                a = split.arrays[k]
                h.update(f"{k}{a.dtype.str}{a.shape}".encode())
                h.update(memoryview(a if a.flags.c_contiguous else a.copy()).cast("B"))
        else:
            h.update(json.dumps([[os.path.basename(f) for f in split.records.files],
                                 list(split.records.counts)]).encode())
    return h.hexdigest()[:16]
