"""Building blocks shared by the paper's CIFAR-10 models (Appendix A, Figure 3).

`conv_module` is Figure 3(c): Conv -> BatchNorm -> ReLU. To match Table 1's 1,649,402 trainable parameters the
convolution has no bias when BN follows, and BN learns β only (center=True, scale=False): the TF-slim /
tf.contrib.layers.batch_norm defaults of the paper's era. Without BN the convolution has a bias, which gives the
same count, hence Table 1's identical rows.

Weight decay follows TF1's `wd · tf.nn.l2_loss(w) = wd · Σw²/2` on conv/dense kernels only, i.e. Keras
`L2(wd / 2)` (gradient wd·w), added to the loss so it passes through SGD momentum.
"""

import keras
from keras import layers, ops


def kernel_regularizer(weight_decay):
    """L2 with TF `l2_loss` semantics: penalty wd·Σw²/2, gradient wd·w; None when wd == 0."""
    return keras.regularizers.L2(weight_decay / 2.0) if weight_decay else None


def conv_module(x, filters, kernel_size, strides=1, *, batchnorm=True, bn_momentum=0.999, bn_epsilon=1e-3,
                bn_synchronized=False, weight_decay=0.0, name):
    """Figure 3(c): Conv(k×k, SAME) -> [BN(β only)] -> ReLU. BN statistics per replica unless bn_synchronized."""
    x = layers.Conv2D(filters, kernel_size, strides=strides, padding="same", use_bias=not batchnorm,
                      kernel_regularizer=kernel_regularizer(weight_decay), name=f"{name}_conv")(x)
    if batchnorm:
        x = layers.BatchNormalization(momentum=bn_momentum, epsilon=bn_epsilon, center=True, scale=False,
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
    CIFAR-10 tutorial values depth_radius=4, bias=1, alpha=0.001/9, beta=0.75. Computed in float32.
    """

    def __init__(self, depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = int(depth_radius), float(bias), float(alpha), float(beta)

    def call(self, x):
        x32 = ops.cast(x, "float32")
        r = self.depth_radius
        channels = x32.shape[-1]
        padded = ops.pad(ops.square(x32), [[0, 0]] * (len(x32.shape) - 1) + [[r, r]])
        sqr_sum = sum(padded[..., i:i + channels] for i in range(2 * r + 1))
        out = x32 / ops.power(self.bias + self.alpha * sqr_sum, self.beta)
        return ops.cast(out, x.dtype)

    def get_config(self):
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias, "alpha": self.alpha,
                "beta": self.beta}
