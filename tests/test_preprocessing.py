"""Preprocessing matches the paper's wording and TF's per_image_whitening formula."""

import math

import numpy as np
import tensorflow as tf

from rethink_tf.data import preprocessing as P


def np_whiten(x):
    """(x - mean) / max(std, 1/sqrt(N)), population std over all N values of the image."""
    n = x.size
    return (x - x.mean()) / max(x.std(), 1.0 / math.sqrt(n))


def test_whiten_formula_including_constant_images():
    rng = np.random.default_rng(0)
    batch = np.stack([rng.random((28, 28, 3)), np.full((28, 28, 3), 0.7)]).astype(np.float32)
    out = P.whiten(batch).numpy()
    for i in range(2):
        np.testing.assert_allclose(out[i], np_whiten(batch[i].astype(np.float64)), atol=1e-4)
    # a constant image: float32 rounding of its mean leaves ~1e-8, divided by the adjusted std 1/sqrt(2352)
    # (not by std = 0, which would blow it up to inf/nan)
    assert np.all(np.abs(out[1]) < 1e-4)


def test_center_crop_is_offset_two_for_cifar():
    img = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3)
    np.testing.assert_array_equal(P.center_crop(img, 28), img[2:30, 2:30])
    batch = np.stack([img, img])
    assert P.center_crop(batch, 28).shape == (2, 28, 28, 3)


def test_to_unit_scales_by_255():
    np.testing.assert_allclose(P.to_unit(np.array([0, 51, 255], np.uint8)).numpy(), [0.0, 0.2, 1.0])


def test_crop_batch_takes_the_given_windows():
    img = np.arange(2 * 32 * 32, dtype=np.float32).reshape(2, 32, 32, 1)
    out = P.crop_batch(tf.constant(img), tf.constant([0, 4]), tf.constant([3, 1]), 28).numpy()
    np.testing.assert_array_equal(out[0], img[0, 0:28, 3:31])
    np.testing.assert_array_equal(out[1], img[1, 4:32, 1:29])
    compiled = tf.function(P.crop_batch, jit_compile=True)  # as inside preprocessing.augmented_input_xla
    np.testing.assert_array_equal(compiled(tf.constant(img), tf.constant([0, 4]), tf.constant([3, 1]), 28), out)


def test_rotation():
    img = np.random.default_rng(0).random((28, 28, 3)).astype(np.float32)
    np.testing.assert_allclose(P.rotate(img, tf.constant(0.0)).numpy(), img, atol=1e-5)
    # a quarter turn of a square image is an exact pixel permutation (counter-clockwise as np.rot90)
    quarter = P.rotate(img, tf.constant(math.pi / 2)).numpy()
    np.testing.assert_allclose(quarter, np.rot90(img, 1), atol=1e-4)


def test_augmentation_rotates_within_25_degrees():
    from rethink_tf.data import pipeline

    img = np.zeros((10, 28, 28, 1), np.float32)
    img[:, :, 13:15] = 1.0  # a vertical bar
    out = pipeline.augment_batch(tf.constant(img), tf.range(10, dtype=tf.int64), 0, 0, 28, False, True).numpy()
    slopes = []
    for i in range(10):
        ys, xs = np.nonzero(out[i, ..., 0] > 0.5)
        slopes.append(math.degrees(math.atan(np.polyfit(ys, xs, 1)[0])))
    assert max(abs(s) for s in slopes) <= 25.5 and np.std(slopes) > 3  # within ±25°, and not all the same


def test_inception_paths():
    img = tf.io.encode_jpeg(np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8))  # encoded
    ev = P.inception_eval(img).numpy()
    assert ev.shape == (299, 299, 3) and ev.min() >= -1 and ev.max() <= 1
    tr = P.inception_train(img, tf.constant([1, 2], tf.int64)).numpy()
    assert tr.shape == (299, 299, 3) and tr.min() >= -1 and tr.max() <= 1
    np.testing.assert_array_equal(tr, P.inception_train(img, tf.constant([1, 2], tf.int64)).numpy())
