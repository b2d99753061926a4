"""The paper's small AlexNet for CIFAR-10 (Appendix A): 1,387,786 trainable parameters on 28×28×3.

"two (convolution 5×5 -> max-pool 3×3 -> local-response-normalization) modules followed by two fully connected
layers with 384 and 192 hidden units, respectively. Finally a 10-way linear layer is used for prediction."
Channel counts are not given; 64 filters per conv with SAME padding and 3×3/2 SAME pooling (the TF CIFAR-10
tutorial's choices) is the only configuration that gives Table 1's count (32 -> 706,410; 96 -> 2,120,362).
"""

import keras
from keras import layers

from rethink_tf.models import blocks


def build(input_shape, num_classes, *, weight_decay=0.0, lrn=True, width_multiplier=1.0, name="small_alexnet"):
    """Conv-ReLU-pool-LRN ×2, FC 384, FC 192, linear. Shapes for 28×28×3.

    Args:
      input_shape: (H, W, C).
      num_classes: logits width.
      weight_decay: TF l2_loss-style decay on conv/dense kernels.
      lrn: keep the local response normalization (the paper's model has it).
      width_multiplier: beyond the paper (capacity sweeps, --width): every conv and hidden layer's width × it.
    """
    w = width_multiplier
    reg = blocks.kernel_regularizer(weight_decay)
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    for i in (1, 2):
        x = layers.Conv2D(blocks.scaled(64, w), 5, padding="same", activation="relu", kernel_regularizer=reg, name=f"conv{i}")(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same", name=f"pool{i}")(x)  # 14×14×64, then 7×7×64
        if lrn:
            x = blocks.LocalResponseNormalization(name=f"lrn{i}")(x)
    x = layers.Flatten(name="flatten")(x)                                        # 3136
    x = layers.Dense(blocks.scaled(384, w), activation="relu", kernel_regularizer=reg, name="fc1")(x)
    x = layers.Dense(blocks.scaled(192, w), activation="relu", kernel_regularizer=reg, name="fc2")(x)
    logits = layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name)
