"""Small AlexNet's local response normalization: forward + backward of the layer (TF's fused LRN/LRNGrad kernels)
against the keras.ops formula it used before (the sum of 2r + 1 shifted slices of the squared input), on the two
LRN inputs of a batch of 128 CIFAR crops, best of 20 on all cores. One JSON line per shape.

    python benchmarks/lrn.py
"""

import json
import time

from rethink_tf import console

console.quiet()

import tensorflow as tf  # noqa: E402
from keras import ops  # noqa: E402

from rethink_tf.models.blocks import LocalResponseNormalization  # noqa: E402


def slices(x, r=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75):
    """The formula the layer computed before (and still computes on other Keras backends)."""
    channels = x.shape[-1]
    padded = ops.pad(ops.square(x), [[0, 0]] * (len(x.shape) - 1) + [[r, r]])
    return x / ops.power(bias + alpha * sum(padded[..., i:i + channels] for i in range(2 * r + 1)), beta)


def best_ms(fn, x, repeats=20):
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            s = tf.reduce_sum(y * y)
        return tape.gradient(s, x)

    step = tf.function(step)
    step(x).numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step(x).numpy()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best


def main():
    layer = LocalResponseNormalization()
    for shape in ((128, 14, 14, 64), (128, 7, 7, 64)):
        x = tf.random.normal(shape)
        fused, formula = best_ms(layer, x), best_ms(slices, x)
        print(json.dumps({"benchmark": "lrn", "shape": list(shape), "layer_ms": round(fused, 2),
                          "slices_formula_ms": round(formula, 2), "speedup": round(formula / fused, 2),
                          "max_abs_difference": float(tf.reduce_max(tf.abs(layer(x) - slices(x))))}), flush=True)


if __name__ == "__main__":
    main()
