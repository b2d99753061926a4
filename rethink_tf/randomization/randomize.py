"""The paper's randomization tests for anyone's tf.data dataset: `randomize(dataset, kind, ...)`.

    ds = tf.data.Dataset.from_tensor_slices((images, labels))        # any image dtype/shape, any class count
    ds = ds.apply(lambda d: rethink_tf.randomize(d, "labels", prob=0.5, num_classes=100))

The six corruptions are exactly those of the package's own pipeline (rethink_tf.data.corruption, the paper's §2.1): the
same hash, streams and semantics, so a label is corrupted to the same class here and there given the same key.
What a user dataset lacks is the `key` that makes a corruption a pure function of the example. By default it is a
64-bit FarmHash of the example's *content*: the serialized image tensor and label. Consequences worth knowing:
  * re-reading the data in another order, in parallel, in another epoch or process gives the same corruption;
  * exact duplicates (same image bytes and label) share a key, hence a corrupted label and a random-pixel
    permutation: they stay duplicates, as they are in the clean data. Two copies of an image with *different*
    labels get different keys;
  * a preprocessing change upstream (resize, dtype) changes the bytes, hence the keys: randomize the raw examples.
With `key="name"` an existing feature (integer or string, e.g. a file name) is the key instead; strings are hashed.
"""


from rethink_tf.data import corruption as corruption_lib
from rethink_tf.data import sources
from rethink_tf.errors import UserError


content_key = sources.content_key  # the key the package's own sources give an example: one definition


def feature_key(value):
    """int64 key from a feature: integers as they are, strings by FarmHash64."""
    import tensorflow as tf

    if value.dtype == tf.string:
        return sources.string_key(value)
    if not value.dtype.is_integer:
        raise UserError(f"a key feature must be an integer or a string; received dtype {value.dtype.name}")
    return tf.cast(value, tf.int64)


def image_moments(dataset, image="image", max_examples=None):
    """Per-channel mean and std of a dataset's images (in their own units), for `randomize(..., "gaussian")`.

    The paper's Gaussian images match the training set's per-channel moments; compute them on the training split.
    """
    check_structure(dataset.element_spec, image, None, None)
    ds = dataset.map(lambda *ex: parts(ex, image, None)[0])
    if max_examples:
        ds = ds.take(max_examples)
    return corruption_lib.channel_moments(ds.batch(1024).as_numpy_iterator())


def parts(ex, image, label):
    """(image, label, structure) of a dataset element: a dict with those keys, or an (image, label, ...) tuple."""
    if len(ex) == 1 and isinstance(ex[0], dict):
        d = ex[0]
        missing = [k for k in (image, label) if k is not None and k not in d]
        if missing:
            raise UserError(f"randomize: the dataset's dicts have no {', '.join(map(repr, missing))} feature; "
                            f"features: {', '.join(sorted(d))}. Name them with image=... and label=...")
        return d[image], (d[label] if label is not None else None), "dict"
    if len(ex) < 2:
        raise UserError("randomize needs (image, label) tuples or dicts of features; received elements with "
                        f"{len(ex)} component(s)")
    return ex[0], ex[1], "tuple"


def check_structure(spec, image, label, key):
    """Raises UserError before tracing (errors inside a tf.data map come out wrapped in autograph's)."""
    if isinstance(spec, dict):
        parts((spec,), image, label)
        if key is not None and key not in spec:
            raise UserError(f"key={key!r} names a feature, but the dataset's dicts have only {', '.join(sorted(spec))}")
        if key is not None:
            feature_key(tf_zero(spec[key]))
        return
    parts(spec if isinstance(spec, tuple) else (spec,), image, label)
    if key is not None:
        raise UserError(f"key={key!r} names a feature, but the elements are tuples; use dicts or key=None")


def tf_zero(spec):
    import tensorflow as tf

    return tf.zeros([], spec.dtype) if spec.dtype != tf.string else tf.constant("")


def randomize(dataset, kind, prob=None, seed=0, num_classes=None, key=None, image="image", label="label",
              split="train", mean=None, std=None, noise_matrix=None, noise_std=None):
    """Applies one of the paper's randomization tests to a tf.data dataset; usable as `ds.apply(...)` too.

    Args:
      dataset: elements (image, label[, ...]) or dicts with `image` and `label` features. Any image dtype and
        shape (H, W, C) or (H, W); labels are integer class ids.
      kind: "none", "labels" (with prob), "random_labels", "shuffled_pixels", "random_pixels" or "gaussian"; beyond
        the paper, "class_conditional" (with noise_matrix). ("flip" selects exactly round(p·n) examples of a whole
        split: it needs the split's keys up front, so it is a corruption of randomization_test and the CLI.)
      prob: the label corruption probability p (a corrupted label is uniform over all num_classes classes); with a
        pixel kind, the fraction of images corrupted (None: all).
      seed: the corruption seed.
      num_classes: number of classes; required for the label corruptions.
      key: None (content hash of image and label, see the module docstring) or the name of a dict feature.
      image, label: feature names for dict elements.
      split: "train" or "test". Test labels are never corrupted (the paper's test error is on true labels); pixel
        corruptions apply to both splits, shuffled pixels with the same permutation.
      mean, std: per-channel moments for "gaussian" (image_moments of the training split), in the images' units;
        Gaussian images are float32.
      noise_matrix: class_conditional's transition matrix: "cifar10_pairs" (with prob) or rows "a b; c d".
      noise_std: additive_gaussian's σ, in the images' units.

    Returns:
      A dataset with the same element structure, corrupted. Pure in (seed, split, key): the same in every epoch,
      under any order or parallelism.

    Raises:
      UserError: unknown kind or split, p outside [0, 1], missing num_classes or moments, bad element structure.
    """
    import tensorflow as tf

    if split not in ("train", "test"):
        raise UserError(f"split must be 'train' or 'test'; received {split!r}")
    if kind in corruption_lib.LABEL_KINDS and not num_classes:
        raise UserError(f"randomize(..., {kind!r}) needs num_classes (labels are drawn from all classes)")
    if kind == "human_labels":
        raise UserError("randomize(..., 'human_labels'): the annotators' labels come with a dataset (CIFAR-10N/100N): "
                        "train with --dataset=tfds:cifar10_n --corrupt=human_labels --train_label_feature=worse_label")
    if kind == "flip":
        raise UserError("randomize(..., 'flip') cannot select exactly round(p·n) examples of a stream: use "
                        "randomization_test or --corrupt=flip (whole splits), or 'labels' here")
    corr = corruption_lib.make(kind, prob, seed, int(num_classes or 2), mean, std, noise_matrix=noise_matrix,
                               noise_std=noise_std)
    if key is not None and not isinstance(key, str):
        raise UserError(f"key must be None (content hash) or a feature name; received {key!r}")
    check_structure(dataset.element_spec, image, label, key)

    def apply(*ex):
        img, lab, structure = parts(ex, image, label)
        if key is not None:
            k = feature_key(ex[0][key])
        else:
            k = content_key(img, lab)
        new_label = tf.cast(corruption_lib.corrupt_labels(corr, lab, k, split), lab.dtype)
        new_image = img
        if corr.touches_pixels:
            squeeze = img.shape.rank == 2
            x = img[..., None] if squeeze else img
            x = corruption_lib.corrupt_image(corr, x, k, split)
            new_image = x[..., 0] if squeeze else x
        if structure == "dict":
            return {**ex[0], image: new_image, label: new_label}
        return (new_image, new_label, *ex[2:])

    return dataset.map(apply, num_parallel_calls=tf.data.AUTOTUNE)
