"""Inception V3 for ImageNet (Table 2, Appendix B): Keras' InceptionV3 trunk with the TF inception package's head.

The TF package adds dropout (keep 0.8, i.e. rate 0.2) on the pooled features, "the only" dropout in the paper's
experiments, weight decay 4e-5 on conv/FC weights and BN decay 0.9997. Deviations, stated: no auxiliary head
(Keras' InceptionV3 has none), and 1000 classes rather than the package's 1001 (no background class).
"""

import keras
from keras import layers

from rethink_tf.models import blocks


def build(input_shape, num_classes, *, dropout=0.2, weight_decay=0.0, bn_momentum=0.9997, bn_synchronized=False,
          name="inception_v3"):
    """InceptionV3 trunk (random init) -> global average pool -> dropout -> linear logits.

    Args:
      input_shape: (H, W, 3), at least 75×75 (299×299 in the paper).
      num_classes: logits width.
      dropout: dropout rate on the pooled features (0.2 = TF keep_prob 0.8; 0 turns it off).
      weight_decay: TF l2_loss-style decay on conv/dense kernels (the package uses 4e-5).
      bn_momentum: BN moving-average momentum (the package's 0.9997).
      bn_synchronized: BN statistics over the global batch under a multi-replica strategy (default: per replica).
    """
    trunk = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=tuple(input_shape),
                                           pooling="avg")
    reg = blocks.kernel_regularizer(weight_decay)
    for layer in trunk.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
            layer.synchronized = bn_synchronized  # read at call time
            layer.__class__ = blocks.BatchNormalization  # the same layer and weights, TF's fused kernel (blocks)
        if reg is not None and isinstance(layer, layers.Conv2D):
            layer.kernel.regularizer = reg
    x = trunk.output
    if dropout:
        x = blocks.KeyedDropout(dropout, name="dropout")(x)  # the same mask on 1 or N replicas
    logits = layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(trunk.input, logits, name=name)
