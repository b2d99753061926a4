"""The paper's multi-layer perceptrons (Appendix A).

"The MLPs use fully connected layers. MLP 1x512 means one hidden layer with 512 hidden units." The 28×28×3 crop is
flattened to 2,352 inputs; all layers have biases: 1×512 -> 1,209,866, 3×512 -> 1,735,178 parameters (Table 1).
"""

import keras
from keras import layers

from rethink_tf.models import blocks


def build(input_shape, num_classes, *, depth=1, width=512, weight_decay=0.0, dropout=None, width_multiplier=1.0,
          name=None):
    """Flatten -> depth × (Dense(width · width_multiplier) + ReLU [+ dropout]) -> Dense(num_classes).

    width_multiplier: beyond the paper (capacity sweeps, --width): hidden units round(width × it), at least 1.

    dropout: a rate after each hidden layer, beyond the paper (its MLPs have no dropout; None, the default, adds
    no layer, so the paper's models and their checkpoints are unchanged). Keyed per example (blocks.KeyedDropout).
    """
    reg = blocks.kernel_regularizer(weight_decay)
    inputs = keras.Input(input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    units = blocks.scaled(width, width_multiplier)
    for i in range(1, depth + 1):
        x = layers.Dense(units, activation="relu", kernel_regularizer=reg, name=f"hidden{i}")(x)
        if dropout:
            x = blocks.KeyedDropout(dropout, name=f"dropout{i}")(x)
    logits = layers.Dense(num_classes, kernel_regularizer=reg, dtype="float32", name="logits")(x)
    return keras.Model(inputs, logits, name=name or f"mlp_{depth}x{width}")
