"""Building blocks shared by the paper's CIFAR-10 models (Appendix A, Figure 3).

`conv_module` is Figure 3(c): Conv -> BatchNorm -> ReLU. To match Table 1's 1,649,402 trainable parameters the
convolution has no bias when BN follows, and BN learns β only (center=True, scale=False): the TF-slim /
tf.contrib.layers.batch_norm defaults of the paper's era. Without BN the convolution has a bias, which gives the
same count, hence Table 1's identical rows.

Weight decay follows TF1's `wd · tf.nn.l2_loss(w) = wd · Σw²/2` on conv/dense kernels only, i.e. Keras
`L2(wd / 2)` (gradient wd·w), added to the loss so it passes through SGD momentum.
"""

import math

import keras
from keras import layers, ops

from rethink_tf.data import keyed_random


def kernel_regularizer(weight_decay):
    """L2 with TF `l2_loss` semantics: penalty wd·Σw²/2, gradient wd·w; None when wd == 0."""
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None


def scaled(channels, multiplier):
    """A layer width times a capacity multiplier (--width; 1.0 is the paper's), rounded, at least 1."""
    return max(1, int(round(channels * multiplier)))


def _op_determinism():
    """Whether TF op determinism is on (tf.config.experimental exposes only the switch; the reader is TF's own)."""
    from tensorflow.python.framework import config

    return bool(getattr(config, "is_op_determinism_enabled", lambda: True)())  # unknown: assume on (Keras' path)


@keras.saving.register_keras_serializable(package="rethink_tf")
class BatchNormalization(layers.BatchNormalization):
    """Keras' BatchNormalization, computed by TensorFlow's fused kernel (FusedBatchNormV3: cuDNN on a GPU, oneDNN on
    a CPU) where that kernel computes the same thing, else by Keras' own ops.

    Keras 3 normalizes with separate ops (moments, then the affine transform) and differentiates through them; the
    fused kernel makes one pass for the statistics and one for the output, and its gradient is one op. Forward,
    gradients and moving statistics equal Keras' to float32 rounding (tested against keras.layers.BatchNormalization
    and a NumPy twin); it is the kernel behind TF-slim's batch_norm(fused=True). Two details keep it
    Keras': the statistics are computed in float32 whatever the input's precision (Keras' rule), and the moving
    variance is updated with the biased batch variance, as Keras does, so the kernel's Bessel correction n/(n-1)
    is taken out. Keras' path runs instead for synchronized (cross-replica) statistics, masks, renormalization, a
    non-channels-last, non-4-D or float64 input, epsilon under cuDNN's 1.001e-5 floor, and under TF op determinism (the
    fused gradient with respect to beta is nondeterministic on GPUs: TensorFlow's determinism RFC).
    """

    def _fused(self, inputs, mask):
        if keras.backend.backend() != "tensorflow" or mask is not None or self.synchronized or self.renorm:
            return False
        if len(inputs.shape) != 4 or inputs.shape[-1] is None or self.epsilon < 1.001e-5:
            return False
        if keras.backend.standardize_dtype(inputs.dtype) not in ("float16", "bfloat16", "float32"):
            return False  # float64: Keras computes in float64, the kernel in float32
        axes = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
        return [a % 4 for a in axes] == [3] and not _op_determinism()

    def call(self, inputs, training=None, mask=None):
        if not self._fused(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        x = tf.cast(inputs, tf.float32)
        channels = x.shape[-1]
        scale = tf.cast(self.gamma, tf.float32) if self.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(self.beta, tf.float32) if self.center else tf.zeros([channels], tf.float32)
        moving_mean = tf.cast(self.moving_mean, tf.float32)
        moving_variance = tf.cast(self.moving_variance, tf.float32)
        if training and self.trainable:
            y, mean, variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=tf.zeros([0]), variance=tf.zeros([0]), epsilon=self.epsilon,
                data_format="NHWC", is_training=True)
            n = tf.cast(tf.size(x, out_type=tf.int64) // channels, tf.float32)  # values per channel
            variance = tf.where(n > 1, variance * (n - 1) / n, tf.zeros_like(variance))  # biased, as Keras'
            self.moving_mean.assign(moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            y, *_ = tf.raw_ops.FusedBatchNormV3(
                x=x, scale=scale, offset=offset, mean=moving_mean, variance=moving_variance, epsilon=self.epsilon,
                data_format="NHWC", is_training=False)
        return tf.cast(y, self.compute_dtype)


def conv_module(x, filters, kernel_size, strides=1, *, batchnorm=True, bn_momentum=0.999, bn_epsilon=1e-3,
                bn_synchronized=False, weight_decay=0.0, name):
    """Figure 3(c): Conv(k×k, SAME) -> [BN(β only)] -> ReLU. BN statistics per replica unless bn_synchronized."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=not batchnorm,
                      kernel_regularizer=kernel_regularizer(weight_decay), name=f"{name}_conv")(x)
    if batchnorm:
        x = BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, center=True, scale=False,
                               synchronized=bn_synchronized, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def inception_module(x, ch1, ch3, *, name, **conv_options):
    """Figure 3(b): 1×1 conv (ch1) ‖ 3×3 conv (ch3), concatenated on channels -> ch1 + ch3 channels."""
    a = conv_module(x, ch1, 1, name=f"{name}_1x1", **conv_options)
    b = conv_module(x, ch3, 3, name=f"{name}_3x3", **conv_options)
    return layers.Concatenate(name=f"{name}_concat")([a, b])


def downsample_module(x, ch3, *, name, **conv_options):
    """Figure 3(d): 3×3/2 conv (ch3) ‖ 3×3/2 max-pool, SAME padding so both halve H and W -> ch3 + C_in channels."""
    a = conv_module(x, ch3, 3, strides=2, name=f"{name}_3x3", **conv_options)
    b = layers.MaxPooling2D(3, strides=2, padding="same", name=f"{name}_pool")(x)
    return layers.Concatenate(name=f"{name}_concat")([a, b])


@keras.saving.register_keras_serializable(package="rethink_tf")
class LocalResponseNormalization(layers.Layer):
    """TF's `local_response_normalization` (channels last), written with keras.ops so it runs on any backend.

    sqr_sum[..., d] = Σ_{d' = d-r}^{d+r} x[..., d']²   (zero outside the channel range)
    out = x / (bias + alpha · sqr_sum) ** beta

    TF semantics: alpha is *not* divided by the window size (Caffe's is). The paper's small AlexNet uses the TF
    CIFAR-10 tutorial values depth_radius=4, bias=1, alpha=0.001/9, beta=0.75. Computed in float32: by TF's own op
    on the TensorFlow backend, by the formula above (keras.ops) on the others.
    """

    def __init__(self, depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = int(depth_radius), float(bias), float(alpha), float(beta)

    def call(self, x):
        x32 = ops.cast(x, "float32")
        r = self.depth_radius
        if keras.backend.backend() == "tensorflow":  # TF's fused LRN/LRNGrad kernels (CPU, GPU, XLA): 4.8x faster
            import tensorflow as tf  # forward + backward than the sum of 9 slices (benchmarks/lrn.py), same values

            out = tf.nn.local_response_normalization(x32, depth_radius=r, bias=self.bias, alpha=self.alpha,
                                                     beta=self.beta)
            return ops.cast(out, x.dtype)
        channels = x32.shape[-1]
        padded = ops.pad(ops.square(x32), [[0, 0]] * (len(x32.shape) - 1) + [[r, r]])
        sqr_sum = sum(padded[..., i:i + channels] for i in range(2 * r + 1))
        out = x32 / ops.power(self.bias + self.alpha * sqr_sum, self.beta)
        return ops.cast(out, x.dtype)

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias, "alpha": self.alpha,
                "beta": self.beta}


@keras.saving.register_keras_serializable(package="rethink_tf")
class KeyedDropout(layers.Dropout):
    """Dropout whose mask is a pure function of (seed, training step, the row's position in the global batch,
    feature): one device, N replicas and N workers drop the same units of the same example at the same step.

    Why: Keras' Dropout draws from one seed state that every replica holds a copy of, so under MirroredStrategy or
    MultiWorkerMirroredStrategy each replica draws the *same* mask for its own slice of the batch (keras#20611): a
    run on 8 GPUs trains another network than the one-GPU run of the same recipe (Table 2's dropout rows). Here
    the step's draw comes from the layer's seed generator as before (its state advances once per training call, is
    checkpointed, and is the same on every replica), and each row is keyed by its global position
    replica_id × per-replica batch + row, the position the one-device run gives it (the package's input pipelines
    give replica r the r-th slice of each global batch). The mask is keyed_random's counter hash (the package's
    NumPy-checked RNG): kept iff uniform(seed, step draw, DROPOUT, row, feature) >= rate, compared exactly on the
    hash's top 53 bits; kept units are scaled by 1 / (1 - rate) as in Keras. noise_shape is not supported.
    """

    def __init__(self, rate, seed=None, **kwargs):
        if kwargs.get("noise_shape") is not None:
            raise ValueError("KeyedDropout draws one mask entry per unit: noise_shape is not supported")
        kwargs.pop("noise_shape", None)
        super().__init__(rate, seed=seed, **kwargs)

    def call(self, inputs, training=False):
        if not training or self.rate <= 0:
            return inputs
        import tensorflow as tf

        draw = tf.cast(self.seed_generator.next(), tf.int64)  # [seed, calls so far]: one value per training step
        context = tf.distribute.get_replica_context()
        replica = 0 if context is None else context.replica_id_in_sync_group
        shape = tf.shape(inputs, out_type=tf.int64)
        rows = tf.cast(replica, tf.int64) * shape[0] + tf.range(shape[0], dtype=tf.int64)
        units = tf.reshape(tf.range(tf.reduce_prod(shape[1:]), dtype=tf.int64), tf.concat([[1], shape[1:]], 0))
        rows = tf.reshape(rows, tf.concat([[-1], tf.ones_like(shape[1:])], 0))
        top = tf.bitwise.right_shift(keyed_random.hash_words(draw[0], draw[1], keyed_random.DROPOUT, rows, units),
                                     tf.constant(11, tf.uint64))
        keep = top >= tf.constant(int(math.ceil(self.rate * 2.0**53)), tf.uint64)
        scale = ops.cast(1.0 / (1.0 - self.rate), inputs.dtype)
        return ops.where(keep, inputs * scale, ops.zeros_like(inputs))

    def get_config(self):
        config = super().get_config()
        config.pop("noise_shape", None)
        return config
