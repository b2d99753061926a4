"""Counter-based random numbers: every random choice of the package is a pure function of named integer words.

Why: the paper's random labels "are fixed and consistent across epochs" (§2.1), and a resumed or distributed run
must see the same crops and the same order as an uninterrupted one-device run. A stateful RNG inside
`tf.data.map` re-draws every epoch, races across `num_parallel_calls` threads and differs per replica
(tensorflow#13932). Here a random number is the SplitMix64 finalizer chained over (seed, stream, ...words)
with uint64 tensor ops: the same in every epoch, under any order or parallelism, on every replica, worker and
restart, and bit-identical across TF versions (no stateless-RNG algorithm is involved). Tests check it against an
independent NumPy implementation of the same hash.

Every use draws from its own stream, named in STREAMS; the first word after the seed is the stream id, so two uses
never share numbers. The ids are part of every run's data: changing one changes the corruption, order or
augmentation of every run that uses it.
"""

# stream name -> id. Label corruption, pixel corruptions, epoch order, batch augmentation, ImageNet's stream.
STREAMS = {
    "label_mask": 1,  # labels: is this example's label replaced? (uniform < p)
    "label_value": 2,  # labels: the replacement class
    "shuffled_pixels": 3,  # the one pixel permutation shared by all images
    "random_pixels": 4,  # each image's own pixel permutation
    "gaussian": 5,  # Box-Muller uniforms of the Gaussian images
    "epoch_order": 7,  # the examples' (in-memory) or the shard files' (ImageNet) order in an epoch
    "augment": 11,  # in-memory batch crop/flip/rotation, and the ImageNet shuffle buffer's seed (other word count)
    "imagenet_distort": 13,  # the Inception train-time distortions of an ImageNet example
    # 17 was the tf.data service job name (now the run's name): retired, never reused
    "dropout": 19,  # models.blocks.KeyedDropout: one example's mask at one training step
    "flip_mask": 23,  # flip: the hashed uniform whose n·p smallest select the flipped examples
    "flip_value": 29,  # flip: the shift to one of the other classes
    "pixel_mask": 31,  # a pixel corruption with p < 1: is this image corrupted? (uniform < p)
    "class_conditional": 37,  # class_conditional: the uniform inverted through the label's row of T
    "additive_gaussian": 41,  # additive_gaussian: Box-Muller uniforms of the noise added to each value
}
LABEL_MASK, LABEL_VALUE = STREAMS["label_mask"], STREAMS["label_value"]
SHUFFLED_PIXELS, RANDOM_PIXELS, GAUSSIAN = STREAMS["shuffled_pixels"], STREAMS["random_pixels"], STREAMS["gaussian"]
EPOCH_ORDER, AUGMENT, IMAGENET_DISTORT = STREAMS["epoch_order"], STREAMS["augment"], STREAMS["imagenet_distort"]
DROPOUT = STREAMS["dropout"]
FLIP_MASK, FLIP_VALUE, PIXEL_MASK = STREAMS["flip_mask"], STREAMS["flip_value"], STREAMS["pixel_mask"]
CLASS_CONDITIONAL, ADDITIVE_GAUSSIAN = STREAMS["class_conditional"], STREAMS["additive_gaussian"]

_GOLDEN = 0x9E3779B97F4A7C15
_M1, _M2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def _fmix(z):
    """SplitMix64 finalizer on uint64 tensors (wrapping arithmetic)."""
    import tensorflow as tf

    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(30, tf.uint64))) * tf.constant(_M1, tf.uint64)
    z = tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(27, tf.uint64))) * tf.constant(_M2, tf.uint64)
    return tf.bitwise.bitwise_xor(z, tf.bitwise.right_shift(z, tf.constant(31, tf.uint64)))


def hash_words(*words):
    """uint64 hash of int tensors (broadcast together): fmix chained over the words."""
    import tensorflow as tf

    h = tf.constant(_GOLDEN, tf.uint64)
    for w in words:
        w = tf.bitcast(tf.cast(w, tf.int64), tf.uint64)
        h = _fmix(tf.bitwise.bitwise_xor(h, w) + tf.constant(_GOLDEN, tf.uint64))
    return h


def uniform(*words):
    """float64 in [0, 1) from the top 53 bits of the hash: exact, so NumPy and TF agree bit for bit."""
    import tensorflow as tf

    top = tf.bitwise.right_shift(hash_words(*words), tf.constant(11, tf.uint64))
    return tf.cast(top, tf.float64) * (2.0 ** -53)


def seed_pair(*words):
    """A stateless-op seed of shape [2] (tf.random.stateless_*, tf.image.stateless_*) from hashed words."""
    import tensorflow as tf

    h = tf.bitcast(hash_words(*words), tf.int64)
    return tf.stack([h, tf.bitwise.bitwise_xor(h, tf.constant(0x5DEECE66D, tf.int64))])
