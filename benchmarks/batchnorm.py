"""BatchNorm through TF's fused kernel (models/blocks.BatchNormalization) against Keras 3's own BatchNormalization
(separate ops), in training mode: forward + backward of the layer on small Inception's BatchNorm inputs for a batch
of 128 CIFAR crops (best of 20), and small Inception's whole training step (Keras' train_step, batch 128, SGD with
momentum; the same model with its BatchNorm layers switched between the two classes, measured interleaved, best of
3 rounds of 8 steps each). One JSON line per layer shape, one for the model.

    python benchmarks/batchnorm.py
"""

import json
import time

from rethink_tf import console

console.quiet()

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from rethink_tf import models  # noqa: E402
from rethink_tf.models import blocks  # noqa: E402

BATCH = 128


def layer_ms(cls, x, repeats=20):
    layer = cls(momentum=0.999, epsilon=1e-3, center=True, scale=False)
    layer.build(x.shape)

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            s = tf.reduce_sum(y * y)
        return tape.gradient(s, [x, layer.beta])

    step(x)[0].numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        step(x)[0].numpy()
        best = min(best, time.perf_counter() - start)
    return 1e3 * best, layer(x, training=True)


def model_images_per_s(rounds=3, steps=8):
    keras.utils.set_random_seed(0)
    model = models.build("small_inception", (28, 28, 3), 10)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    bn = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    x = tf.random.stateless_normal([BATCH, 28, 28, 3], [1, 2])
    y = tf.random.stateless_uniform([BATCH], [3, 4], 0, 10, tf.int32)
    steps_fn, best = {}, {}
    for name, cls in (("keras", keras.layers.BatchNormalization), ("fused", blocks.BatchNormalization)):
        for layer in bn:
            layer.__class__ = cls
        steps_fn[name] = tf.function(lambda x, y: model.train_step((x, y)))
        steps_fn[name](x, y)  # trace with this class (the layers' call is read at tracing)
    for _ in range(rounds):
        for name, fn in steps_fn.items():
            start = time.perf_counter()
            for _ in range(steps):
                out = fn(x, y)
            float(out["loss"])
            best[name] = max(best.get(name, 0.0), steps * BATCH / (time.perf_counter() - start))
    return best, len(bn)


def main():
    # small Inception's BatchNorm inputs: the first conv (96 channels, 28×28), an inception module at 28×28 and at
    # 14×14 (its 1×1 and 3×3 branches), the last stage at 7×7
    for shape in ((BATCH, 28, 28, 96), (BATCH, 28, 28, 32), (BATCH, 14, 14, 112), (BATCH, 7, 7, 176)):
        x = tf.random.stateless_normal(shape, [5, 6]) * 2.0 + 0.5
        fused, y_fused = layer_ms(blocks.BatchNormalization, x)
        separate, y_keras = layer_ms(keras.layers.BatchNormalization, x)
        print(json.dumps({"benchmark": "batchnorm_layer", "shape": list(shape), "fused_ms": round(fused, 2),
                          "keras_ms": round(separate, 2), "speedup": round(separate / fused, 2),
                          "max_abs_difference": float(tf.reduce_max(tf.abs(y_fused - y_keras)))}), flush=True)
    best, layers = model_images_per_s()
    print(json.dumps({"benchmark": "batchnorm_model", "model": "small_inception", "batchnorm_layers": layers,
                      "batch": BATCH, "fused_images_per_s": round(best["fused"], 1),
                      "keras_images_per_s": round(best["keras"], 1),
                      "speedup": round(best["fused"] / best["keras"], 2)}), flush=True)


if __name__ == "__main__":
    main()
