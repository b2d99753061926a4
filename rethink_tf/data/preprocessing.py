"""Image preprocessing, exactly as the paper states it (PAPER.md §1).

CIFAR-10 (Appendix A, verbatim): "divide the pixel values by 255 ... crop from the center to get 28x28 inputs,
and then normalize ... with the per_image_whitening function in TENSORFLOW", i.e. (x - mean) / max(std, 1/sqrt(N))
with the population std over all N = H·W·C values (`tf.image.per_image_standardization`). Table 1's "random crop"
takes a random 28×28 window at training time instead of the centre one; Table 4's "augmentation" is random
left-right flips plus a random rotation of up to ±25° (PAPER.md §1.1; edge pixels reflected, as Keras'
RandomRotation does; the paper does not say).

ImageNet (Inception V3, §4.2): the TF inception package's train path (distorted bounding box, resize to 299,
flip, colour distortion) and eval path (central crop 87.5%, resize to 299); both end in [-1, 1].

Every random choice takes an explicit stateless seed, derived by the pipeline from (seed, epoch, key), so that
augmentation differs between epochs but is reproducible, independent of parallelism, and identical after a resume.
"""

import math

import tensorflow as tf

ROTATION_DEGREES = 25.0  # Table 4 "augmentation" [S]
INCEPTION_SIZE = 299


def to_unit(image):
    """uint8 -> float32 in [0, 1] ("divide the pixel values by 255")."""
    return tf.cast(image, tf.float32) / 255.0


def center_crop(image, size):
    """The centre size×size window of an HxWxC image (offset 2 px for CIFAR-10's 32 -> 28)."""
    h, w = image.shape[-3], image.shape[-2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[..., top:top + size, left:left + size, :]


def random_crop(image, size, seed):
    """A uniformly placed size×size window (offsets uniform in {0..H-size}), stateless in `seed` (shape [2])."""
    return tf.image.stateless_random_crop(image, [size, size, image.shape[-1]], seed=seed)


def whiten(images):
    """TF's per_image_whitening / per_image_standardization, per image, batched or not."""
    return tf.image.per_image_standardization(images)


def rotate(image, radians):
    """Rotates an HxWxC float image about its centre, bilinear, reflecting at the edges."""
    h = tf.cast(tf.shape(image)[0], tf.float32)
    w = tf.cast(tf.shape(image)[1], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    # Output pixel (x, y) samples input (cos·x − sin·y + dx, sin·x + cos·y + dy): rotation about the centre.
    dx = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    dy = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    transform = tf.stack([cos, -sin, dx, sin, cos, dy, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=tf.shape(image)[:2], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")
    return out[0]


def flip_and_rotate(image, seed):
    """Table 4's augmentation: random left-right flip, then a rotation uniform in ±25°."""
    image = tf.image.stateless_random_flip_left_right(image, seed=seed)
    angle = tf.random.stateless_uniform([], seed=seed + 1, minval=-ROTATION_DEGREES, maxval=ROTATION_DEGREES)
    return rotate(image, angle * (math.pi / 180.0))


# ------------------------------------------------------------------------ batched (the in-memory pipeline's path)

def crop_batch(images, top, left, size):
    """Per-image size×size windows of an NHWC batch at offsets top[i], left[i] (int32 [N]), by one gather per axis."""
    rows = top[:, None] + tf.range(size)[None]  # [N, size]
    cols = left[:, None] + tf.range(size)[None]
    images = tf.gather(images, rows, axis=1, batch_dims=1)  # [N, size, W, C]
    return tf.gather(images, cols, axis=2, batch_dims=1)  # [N, size, size, C]


def flip_batch(images, flip):
    """Left-right flips the images where flip (bool [N]) is set."""
    return tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)


def rotate_batch(images, radians):
    """Rotates each float image of an NHWC batch about its centre by radians[i]: `rotate`, one op for the batch."""
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    dx = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    dy = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    zeros = tf.zeros_like(cos)
    transforms = tf.stack([cos, -sin, dx, sin, cos, dy, zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(images)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


def inception_eval(image, size=INCEPTION_SIZE):
    """TF inception eval path: central 87.5% crop, bilinear resize, [0, 1] -> [-1, 1]."""
    image = tf.image.central_crop(to_unit(image), 0.875)
    image = tf.image.resize(image, [size, size], method="bilinear")
    return (image - 0.5) * 2.0


def inception_train(image, seed, size=INCEPTION_SIZE):
    """TF inception train path (image_processing.py distort_image), with stateless randomness.

    The package picks the resize method and the colour-op order round-robin per preprocessing thread; here the
    resize is bilinear and the order is brightness, saturation, hue, contrast (the package's ordering 0), so the
    result does not depend on thread scheduling.
    """
    image = to_unit(image)
    whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])
    begin, extent, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=whole, seed=seed, min_object_covered=0.1,
        aspect_ratio_range=[0.75, 1.33], area_range=[0.05, 1.0], max_attempts=100, use_image_if_no_bounding_boxes=True)
    image = tf.slice(image, begin, extent)
    image = tf.image.resize(image, [size, size], method="bilinear")
    image = tf.image.stateless_random_flip_left_right(image, seed=seed + 1)
    image = tf.image.stateless_random_brightness(image, 32.0 / 255.0, seed=seed + 2)
    image = tf.image.stateless_random_saturation(image, 0.5, 1.5, seed=seed + 3)
    image = tf.image.stateless_random_hue(image, 0.2, seed=seed + 4)
    image = tf.image.stateless_random_contrast(image, 0.5, 1.5, seed=seed + 5)
    image = tf.clip_by_value(image, 0.0, 1.0)
    return (image - 0.5) * 2.0
