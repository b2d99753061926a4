"""The paper's small Inception for CIFAR-10 (Figure 3): 1,649,402 trainable parameters on 28×28×3.

`small_inception_nobn` is "exactly the same as Inception in Figure 3, except with all the batch normalization
layers removed" (§3.1): its convolutions get biases instead of BN's β, so the count is the same.
"""

import keras
from keras import layers

from rethink_tf.models import blocks


def build(input_shape, num_classes, *, batchnorm=True, weight_decay=0.0, bn_momentum=0.999, bn_epsilon=1e-3,
          bn_synchronized=False, width_multiplier=1.0, name=None):
    """Figure 3(a). Shapes below are for a 28×28×3 input.

    Args:
      input_shape: (H, W, C).
      num_classes: width of the final linear layer (logits).
      batchnorm: Figure 3's Conv-BN-ReLU modules (True) or Conv(+bias)-ReLU ("Inception w/o BatchNorm").
      weight_decay: TF l2_loss-style decay on conv/dense kernels (0: off, the paper's default for randomizations).
      bn_momentum, bn_epsilon: BN moving-average momentum and epsilon (TF contrib defaults 0.999, 1e-3).
      bn_synchronized: BN statistics over the global batch under a multi-replica strategy (default: per replica).
      width_multiplier: beyond the paper (capacity sweeps, --width): every convolution's filters × it.
    """
    if bn_synchronized and not batchnorm:
        from rethink_tf.errors import UserError

        raise UserError("bn_synchronized applies only to the model with BatchNorm")
    opts = dict(batchnorm=batchnorm, bn_momentum=bn_momentum, bn_epsilon=bn_epsilon, weight_decay=weight_decay,
                bn_synchronized=bn_synchronized)

    def c(n):
        return blocks.scaled(n, width_multiplier)

    inputs = keras.Input(input_shape, name="image")
    x = blocks.conv_module(inputs, c(96), 3, name="conv1", **opts)         # 28×28×96
    x = blocks.inception_module(x, c(32), c(32), name="inception1", **opts)   # 28×28×64
    x = blocks.inception_module(x, c(32), c(48), name="inception2", **opts)   # 28×28×80
    x = blocks.downsample_module(x, c(80), name="downsample1", **opts)     # 14×14×160
    x = blocks.inception_module(x, c(112), c(48), name="inception3", **opts)  # 14×14×160
    x = blocks.inception_module(x, c(96), c(64), name="inception4", **opts)   # 14×14×160
    x = blocks.inception_module(x, c(80), c(80), name="inception5", **opts)   # 14×14×160
    x = blocks.inception_module(x, c(48), c(96), name="inception6", **opts)   # 14×14×144
    x = blocks.downsample_module(x, c(96), name="downsample2", **opts)     # 7×7×240
    x = blocks.inception_module(x, c(176), c(160), name="inception7", **opts)  # 7×7×336
    x = blocks.inception_module(x, c(176), c(160), name="inception8", **opts)  # 7×7×336
    x = layers.GlobalAveragePooling2D(name="mean_pool")(x)              # 336 (7×7 mean pooling)
    logits = layers.Dense(num_classes, kernel_regularizer=blocks.kernel_regularizer(weight_decay),
                          dtype="float32", name="logits")(x)  # float32 logits under mixed precision
    return keras.Model(inputs, logits, name=name or ("small_inception" if batchnorm else "small_inception_nobn"))
