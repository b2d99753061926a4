"""§5 feature maps: pixels, Gabor wavelets (MNIST) and random convolutional features (CIFAR-10), computed in chunks.

The paper's CIFAR-10 kernel uses 32,000 random filters. A whole batch of 500 images × 32×32 positions × 32,000 maps
is 65 GB of float32 before pooling, and the pooled features of 50,000 images (4 quadrants × 32,000 = 128,000
dimensions) are 51 GB in float64. So nothing here holds all filters' maps at once: `random_conv_chunks` yields the
pooled features of `filters_per_chunk` filters at a time (batch × 32×32 × chunk floats of convolution output at
any moment), and the linear kernel is accumulated from those chunks (kernel_solve.accumulate_linear_gram) without
ever holding the full feature matrix.

Preprocessing the paper leaves open [U], documented as our choices: pixels / 255 flattened (the first author's
MNIST setting, γ = 0.02 -> 1.2%); `gabor`: magnitudes of a complex Gabor filter bank (8 orientations × 2
wavelengths) average-pooled to 7×7 cells; `random_conv`: random Gaussian 5×5 filters (unit norm) on the
per-image-whitened image, ReLU, average-pooled over 2×2 quadrants (features = 4 × num_filters).
"""

import math

import numpy as np

from rethink_tf.errors import UserError

FEATURES = ("none", "gabor", "random_conv")
CONV_BYTES_PER_CHUNK = 256 * 2**20  # bound on one batch's convolution output (float32) inside a chunk


def gabor_bank(size=11, orientations=8, wavelengths=(4.0, 8.0)):
    """Complex Gabor filters (size × size × 1 × F) as (real, imag) pairs: σ = 0.56·λ, aspect 1."""
    half = size // 2
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    real, imag = [], []
    for lam in wavelengths:
        sigma = 0.56 * lam
        for o in range(orientations):
            th = math.pi * o / orientations
            u = xx * math.cos(th) + yy * math.sin(th)
            env = np.exp(-(xx ** 2 + yy ** 2) / (2 * sigma ** 2))
            real.append(env * np.cos(2 * math.pi * u / lam))
            imag.append(env * np.sin(2 * math.pi * u / lam))
    to = lambda fs: np.stack(fs, -1)[:, :, None, :].astype(np.float32)
    return to(real), to(imag)


def random_filters(num_filters, channels, seed=0):
    """The random_conv filter bank, 5 × 5 × channels × num_filters, unit norm. Drawn whole (32,000 filters of a
    3-channel image are 9.6 MB), so features do not depend on how they are chunked."""
    rng = np.random.default_rng(seed)
    filters = rng.standard_normal((5, 5, channels, num_filters)).astype(np.float32)
    return filters / np.sqrt(np.sum(filters ** 2, axis=(0, 1, 2), keepdims=True))


def bank_bytes(channels, num_filters):
    """Peak bytes of drawing random_filters: the float64 draw and its float32 copy."""
    return 5 * 5 * channels * num_filters * (8 + 4)


def _pool(tensor, cells, filter_major=False):
    """Average-pools an NHWC tensor onto cells × cells regions and flattens (filter-major: the cells of filter 0,
    then of filter 1, ..., so that chunks of filters concatenate into the whole map)."""
    import tensorflow as tf

    h = tensor.shape[1]
    size = h // cells
    pooled = tf.nn.avg_pool2d(tensor[:, :size * cells, :size * cells], size, size, "VALID")
    if filter_major:
        pooled = tf.transpose(pooled, [0, 3, 1, 2])
    return tf.reshape(pooled, [tensor.shape[0], -1])


def chunking(images_shape, num_filters, batch=500):
    """(filters per chunk, images per batch) keeping one batch's conv output under CONV_BYTES_PER_CHUNK."""
    h, w = images_shape[1], images_shape[2]
    per_filter = batch * h * w * 4
    chunk = max(1, min(num_filters, CONV_BYTES_PER_CHUNK // per_filter))
    return chunk, batch


def random_conv_chunks(images, num_filters, seed=0, batch=500, filters_per_chunk=None):
    """Yields float32 (n, 4 · c) pooled ReLU features for consecutive chunks of c filters.

    Concatenated along axis 1 the chunks are the features of all num_filters filters, in filter order; each is
    computed image-batch by image-batch, so memory is one chunk's output plus one batch's convolution maps.
    """
    import tensorflow as tf

    x = images.astype(np.float32) / 255.0
    filters = random_filters(num_filters, x.shape[-1], seed)
    chunk = filters_per_chunk or chunking(x.shape, num_filters, batch)[0]
    whitened = [tf.image.per_image_standardization(tf.constant(x[i:i + batch])) for i in range(0, len(x), batch)]
    for f0 in range(0, num_filters, chunk):
        bank = tf.constant(filters[..., f0:f0 + chunk])
        yield np.concatenate([_pool(tf.nn.relu(tf.nn.conv2d(wb, bank, 1, "SAME")), 2, filter_major=True).numpy()
                              for wb in whitened])


def feature_map(images, kind, num_filters=32_000, seed=0, batch=500):
    """Images uint8 NHWC -> float64 features (n, d), held whole. "none": pixels / 255 flattened.

    For random_conv with many filters use random_conv_chunks (the linear kernel never needs the whole matrix).
    """
    import tensorflow as tf

    if kind not in FEATURES:
        raise UserError(f"unknown features {kind!r}; known: {', '.join(FEATURES)}")
    if kind == "random_conv":
        return np.concatenate(list(random_conv_chunks(images, num_filters, seed, batch)), axis=1).astype(np.float64)
    x = images.astype(np.float32) / 255.0
    if kind == "none":
        return x.reshape(len(x), -1).astype(np.float64)
    real, imag = gabor_bank()
    gray = x.mean(axis=-1, keepdims=True)
    out = []
    for i in range(0, len(x), batch):
        g = tf.constant(gray[i:i + batch])
        mag = tf.sqrt(tf.nn.conv2d(g, real, 1, "SAME") ** 2 + tf.nn.conv2d(g, imag, 1, "SAME") ** 2)
        out.append(_pool(mag, 7).numpy())
    return np.concatenate(out).astype(np.float64)


def dimension(kind, image_shape, num_filters):
    """Feature dimension d without computing anything (memory checks up front)."""
    h, w, c = image_shape
    return {"none": h * w * c, "gabor": 7 * 7 * 16, "random_conv": 4 * num_filters}[kind]
