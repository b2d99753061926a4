"""Exact Table 1 parameter counts, LRN against a NumPy reference, TF l2_loss weight decay, one train step."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from rethink_tf import models, paper
from rethink_tf.errors import UserError
from rethink_tf.models import blocks


@pytest.mark.parametrize("name", ["small_inception", "small_inception_nobn", "small_alexnet", "mlp_1x512",
                                  "mlp_3x512"])
def test_trainable_counts_equal_table_1(name):
    model = models.build(name, (28, 28, 3), 10)
    # e.g. small Inception: 1,644,320 conv kernel weights + 1,712 β (or biases) + 3,370 FC = 1,649,402
    assert models.trainable_count(model) == paper.TABLE1_PARAMS[name]


def test_small_inception_bn_is_beta_only_and_nobn_has_no_bn():
    bn = [l for l in models.build("small_inception", (28, 28, 3), 10).layers
          if isinstance(l, keras.layers.BatchNormalization)]
    assert len(bn) == 19 and all(l.center and not l.scale for l in bn)
    assert sum(l.gamma is None for l in bn) == 19  # 1 conv + 8 inception x 2 + 2 downsample
    nobn = models.build("small_inception_nobn", (28, 28, 3), 10)
    assert not any(isinstance(l, keras.layers.BatchNormalization) for l in nobn.layers)


def test_inception_v3_builds_for_imagenet():
    model = models.build("inception_v3", (299, 299, 3), 1000)
    assert model.output_shape == (None, 1000)
    assert models.trainable_count(model) == 23_817_352  # Keras InceptionV3 reference (PAPER.md §3.5)


def np_lrn(x, r=4, bias=1.0, alpha=0.001 / 9, beta=0.75):
    """TF local_response_normalization, literally: sum of squares over channels d-r..d+r."""
    out = np.empty_like(x)
    c = x.shape[-1]
    for d in range(c):
        sq = np.sum(x[..., max(0, d - r):min(c, d + r + 1)] ** 2, axis=-1)
        out[..., d] = x[..., d] / (bias + alpha * sq) ** beta
    return out


def test_lrn_matches_numpy_and_tf():
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 12)).astype(np.float32) * 10
    layer = blocks.LocalResponseNormalization()
    np.testing.assert_allclose(layer(x).numpy(), np_lrn(x.astype(np.float64)), rtol=1e-5)
    tf_ref = tf.nn.local_response_normalization(x, depth_radius=4, bias=1.0, alpha=0.001 / 9, beta=0.75)
    np.testing.assert_allclose(layer(x).numpy(), tf_ref.numpy(), rtol=1e-5)
    odd = blocks.LocalResponseNormalization(depth_radius=2, bias=2.0, alpha=0.5, beta=0.5)
    np.testing.assert_allclose(odd(x).numpy(), np_lrn(x, 2, 2.0, 0.5, 0.5), rtol=1e-5)
    restored = blocks.LocalResponseNormalization.from_config(odd.get_config())
    assert restored.get_config() == odd.get_config()
    # its gradient (TF's LRNGrad on this backend) against central differences of the NumPy formula
    small = x[:1, :2, :2, :6].astype(np.float64) / 10
    probe = np.random.default_rng(1).normal(size=small.shape)
    with tf.GradientTape() as tape:
        xt = tf.constant(small, tf.float32)
        tape.watch(xt)
        s = tf.reduce_sum(odd(xt) * probe)
    got = tape.gradient(s, xt).numpy()
    eps, want = 1e-6, np.zeros_like(small)
    for i in np.ndindex(small.shape):
        d = np.zeros_like(small)
        d[i] = eps
        want[i] = (np.sum(np_lrn(small + d, 2, 2.0, 0.5, 0.5) * probe)
                   - np.sum(np_lrn(small - d, 2, 2.0, 0.5, 0.5) * probe)) / (2 * eps)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_weight_decay_has_tf_l2_loss_semantics():
    wd = 5e-4
    model = models.build("mlp_1x512", (4, 4, 1), 10, weight_decay=wd)
    kernels = [v for v in model.trainable_weights if "kernel" in v.path]
    biases = [v for v in model.trainable_weights if "bias" in v.path]
    with tf.GradientTape() as tape:
        model(np.zeros((1, 4, 4, 1), np.float32))
        penalty = tf.add_n(model.losses)
    expected = sum(wd * 0.5 * float(tf.reduce_sum(tf.square(k))) for k in kernels)  # wd · l2_loss(w)
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    grads = tape.gradient(penalty, kernels + biases)
    for k, g in zip(kernels, grads):
        np.testing.assert_allclose(g.numpy(), wd * k.numpy(), rtol=1e-5, atol=1e-12)  # gradient wd·w
    assert all(g is None for g in grads[len(kernels):])  # biases are not decayed


def test_inception_v3_weight_decay_reaches_every_kernel():
    model = models.build("inception_v3", (75, 75, 3), 10, weight_decay=4e-5, dropout=0.0)
    convs = [l for l in model.layers if isinstance(l, keras.layers.Conv2D)]
    model(np.zeros((1, 75, 75, 3), np.float32))
    assert len(model.losses) == len(convs) + 1


@pytest.mark.parametrize("name,shape", [("small_inception", (28, 28, 3)), ("small_inception_nobn", (28, 28, 3)),
                                        ("small_alexnet", (28, 28, 3)), ("mlp_3x512", (28, 28, 1)),
                                        ("inception_v3", (75, 75, 3))])
def test_one_train_step_at_batch_two(name, shape):
    model = models.build(name, shape, 10)
    model.compile(keras.optimizers.SGD(0.01, momentum=0.9),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.default_rng(0).normal(size=(2,) + shape).astype(np.float32)
    before = [w.numpy().copy() for w in model.trainable_weights]
    loss = model.train_on_batch(x, np.array([1, 2]))
    assert np.isfinite(loss)
    assert any(not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights))


@pytest.mark.parametrize("args,match", [
    (("resnet50", (28, 28, 3), 10), "unknown model 'resnet50'"),
    (("inception_v3", (28, 28, 3), 10), "at least 75x75"),
    (("small_inception", (28, 28), 10), r"shape \(H, W, C\)"),
    (("inception_v3", (299, 299, 1), 10), "3 channels"),
    (("mlp_1x512", (28, 28, 3), 1), "at least 2"),
])
def test_bad_model_requests(args, match):
    with pytest.raises(UserError, match=match):
        models.build(*args)


def test_unknown_option():
    with pytest.raises(UserError, match="does not take option"):
        models.build("mlp_1x512", (28, 28, 3), 10, batchnorm=True)


@pytest.mark.parametrize("name,shape", [("small_inception", (28, 28, 3)), ("inception_v3", (75, 75, 3))])
def test_synchronized_batchnorm_option(name, shape):
    model = models.build(name, shape, 10, bn_synchronized=True)
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bn and all(l.synchronized for l in bn)
    assert not any(l.synchronized for l in models.build(name, shape, 10).layers
                   if isinstance(l, keras.layers.BatchNormalization))


def test_synchronized_batchnorm_needs_batchnorm():
    with pytest.raises(UserError, match="only to the model with BatchNorm"):
        models.build("small_inception_nobn", (28, 28, 3), 10, bn_synchronized=True)


@pytest.mark.parametrize("name", ["small_inception", "small_alexnet", "mlp_1x512"])
def test_logits_stay_float32_under_mixed_precision(name):
    from rethink_tf.train import dtype_policy

    with dtype_policy("mixed_bfloat16"):
        model = models.build(name, (28, 28, 3), 10)
        out = model(np.zeros((2, 28, 28, 3), np.float32))
        hidden = [l for l in model.layers if isinstance(l, keras.layers.Dense) and l.name != "logits"][:1]
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert all(l.compute_dtype == "bfloat16" for l in hidden)
    assert keras.config.dtype_policy().name == "float32"  # restored


def test_keyed_dropout_mask_is_the_keyed_hash_of_step_row_and_unit():
    """NumPy twin (test_corruption.np_uniform, an independent SplitMix64): unit u of row r at the layer's i-th
    training call is kept iff uniform(seed, i, DROPOUT, r, u) >= rate, kept units scaled by 1 / (1 - rate); the
    mask changes with the call, and inference is the identity. A model without dropout option gets no layer."""
    from test_corruption import np_uniform

    from rethink_tf.data import keyed_random

    x = np.arange(1, 4 * 3 * 5 + 1, dtype=np.float32).reshape(4, 3, 5)
    layer = blocks.KeyedDropout(0.3, seed=11)
    for call in range(2):
        out = keras.ops.convert_to_numpy(layer(x, training=True))
        rows, units = np.arange(4).reshape(4, 1, 1), np.arange(15).reshape(1, 3, 5)
        keep = np_uniform(11, call, keyed_random.DROPOUT, rows, units) >= 0.3
        np.testing.assert_allclose(out, np.where(keep, x / 0.7, 0.0), rtol=1e-6)
        assert 0.5 < keep.mean() < 0.9
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    assert not any("dropout" in w.name for w in models.build("mlp_1x512", (28, 28, 3), 10).layers)
    assert [w.name for w in models.build("mlp_3x512", (28, 28, 3), 10, dropout=0.5).layers
            if isinstance(w, blocks.KeyedDropout)] == ["dropout1", "dropout2", "dropout3"]


def test_the_xla_default_is_a_table_per_device_kind():
    assert models.xla_default("mlp_1x512", "cpu") and not models.xla_default("small_inception", "cpu")
    assert not models.xla_default("mlp_1x512", "gpu")  # unmeasured on GPUs: Keras' default, off
    assert not models.xla_default("mlp_1x512", "tpu") and not models.xla_default("user:x", "cpu")
    assert models.device_kind() == ("gpu" if tf.config.list_physical_devices("GPU") else "cpu")
    from rethink_tf.config import TrainConfig

    assert TrainConfig(model="mlp_1x512").resolved().jit_compile == models.xla_default("mlp_1x512")


def np_batchnorm_train(x, beta, gamma, eps):
    """BatchNorm's training-mode output and the batch statistics the moving averages take (biased variance, as
    Keras), over every axis but the channels'."""
    x = x.astype(np.float64)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    return (x - mean) / np.sqrt(var + eps) * gamma + beta, mean, var


def _bn_pair(cls, shape, scale, momentum=0.9):
    layer = cls(momentum=momentum, epsilon=1e-3, center=True, scale=scale)
    layer.build(shape)
    layer.beta.assign(tf.random.stateless_normal([shape[-1]], [7, 8]))
    if scale:
        layer.gamma.assign(1.0 + 0.3 * tf.random.stateless_normal([shape[-1]], [9, 10]))
    layer.moving_mean.assign(tf.random.stateless_normal([shape[-1]], [11, 12]))
    layer.moving_variance.assign(tf.random.stateless_uniform([shape[-1]], [13, 14], 0.5, 2.0))
    return layer


@pytest.mark.parametrize("scale", [False, True], ids=["beta_only", "beta_gamma"])
def test_the_fused_batchnorm_computes_keras_batchnorm(scale):
    # TF's fused kernel (blocks.BatchNormalization) against Keras' own layer and a NumPy twin: outputs, gradients
    # with respect to the input and the parameters, moving statistics after a step, and inference
    shape = [16, 7, 7, 24]
    x = tf.random.stateless_normal(shape, [5, 6]) * 3.0 + 1.5
    upstream = tf.random.stateless_normal(shape, [15, 16])
    out = {}
    for name, cls in (("keras", keras.layers.BatchNormalization), ("fused", blocks.BatchNormalization)):
        layer = _bn_pair(cls, shape, scale)
        params = [layer.beta] + ([layer.gamma] if scale else [])

        @tf.function
        def train(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x, training=True)
                loss = tf.reduce_sum(y * upstream)
            return y, tape.gradient(loss, [x, *params])

        y, grads = train(x)
        ops = {op.type for op in train.get_concrete_function(x).graph.get_operations()}
        out[name] = dict(y=y.numpy(), grads=[g.numpy() for g in grads], mean=layer.moving_mean.numpy(),
                         var=layer.moving_variance.numpy(), infer=layer(x, training=False).numpy(),
                         fused="FusedBatchNormV3" in ops)
    assert out["fused"]["fused"] and not out["keras"]["fused"]
    a, b = out["keras"], out["fused"]
    for key in ("y", "mean", "var", "infer"):
        np.testing.assert_allclose(b[key], a[key], rtol=1e-5, atol=2e-5, err_msg=key)
    for ga, gb in zip(a["grads"], b["grads"]):
        np.testing.assert_allclose(gb, ga, rtol=1e-5, atol=1e-5 * np.abs(ga).max())
    # the NumPy twin: the output, and the moving averages of the batch mean and the biased batch variance
    layer = _bn_pair(keras.layers.BatchNormalization, shape, scale)  # the same initial values
    gamma = layer.gamma.numpy() if scale else 1.0
    y, mean, var = np_batchnorm_train(x.numpy(), layer.beta.numpy(), gamma, 1e-3)
    np.testing.assert_allclose(b["y"], y, rtol=1e-5, atol=2e-5)
    np.testing.assert_allclose(b["mean"], 0.9 * layer.moving_mean.numpy() + 0.1 * mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b["var"], 0.9 * layer.moving_variance.numpy() + 0.1 * var, rtol=1e-5, atol=1e-6)


def test_the_fused_batchnorm_keeps_keras_precision_and_falls_back_where_the_kernel_differs():
    shape = [8, 5, 5, 6]
    x = tf.random.stateless_normal(shape, [1, 2])

    def fused_ops(layer, x, training=True):
        fn = tf.function(lambda x: layer(x, training=training))
        return "FusedBatchNormV3" in {op.type for op in fn.get_concrete_function(x).graph.get_operations()}

    # mixed precision: bfloat16 in and out, the statistics in float32 (Keras' rule): Keras' own result
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        ours, theirs = _bn_pair(blocks.BatchNormalization, shape, True), _bn_pair(keras.layers.BatchNormalization,
                                                                                 shape, True)
        xb = tf.cast(x, tf.bfloat16)
        yo, yt = ours(xb, training=True), theirs(xb, training=True)
        assert yo.dtype == yt.dtype == tf.bfloat16 and ours.moving_mean.dtype == tf.float32
        np.testing.assert_allclose(tf.cast(yo, tf.float32), tf.cast(yt, tf.float32), atol=2e-2)
        np.testing.assert_allclose(ours.moving_variance.numpy(), theirs.moving_variance.numpy(), rtol=1e-5)
    finally:
        keras.config.set_dtype_policy("float32")
    # Keras' path: cross-replica statistics, a rank-2 input, an epsilon under cuDNN's floor, TF op determinism
    assert fused_ops(_bn_pair(blocks.BatchNormalization, shape, False), x)
    assert fused_ops(_bn_pair(blocks.BatchNormalization, shape, False), x, training=False)
    sync = blocks.BatchNormalization(synchronized=True)
    assert not fused_ops(sync, x)
    assert not fused_ops(blocks.BatchNormalization(), tf.zeros([4, 6]))
    assert not fused_ops(blocks.BatchNormalization(epsilon=1e-6), x)
    from tensorflow.python.framework import config

    tf.config.experimental.enable_op_determinism()
    try:
        assert not fused_ops(blocks.BatchNormalization(), x)
    finally:
        config.disable_op_determinism()
    assert fused_ops(blocks.BatchNormalization(), x)


@pytest.mark.parametrize("name,shape", [("small_inception", (28, 28, 3)), ("inception_v3", (75, 75, 3))])
def test_the_paper_models_normalize_with_the_fused_kernel(name, shape):
    from rethink_tf.training import optim

    model = models.build(name, shape, 10)
    bn = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bn and all(type(l) is blocks.BatchNormalization for l in bn)
    assert len(optim.batchnorm_statistics(model)) == 2 * len(bn)  # the EMA still finds their moving statistics
    step = tf.function(lambda x: model(x, training=True))
    assert "FusedBatchNormV3" in {op.type for op in step.get_concrete_function(
        tf.zeros([2, *shape])).graph.get_operations()}


@pytest.mark.parametrize("case", ["frozen", "xla"])
def test_the_fused_batchnorm_frozen_and_under_xla(case):
    # a frozen layer (trainable False) normalizes with its moving statistics even in training, and its gradient
    # flows through them; under XLA the fused op compiles: both against Keras' own layer
    shape = [8, 6, 6, 10]
    x = tf.random.stateless_normal(shape, [3, 4]) * 2.0
    upstream = tf.random.stateless_normal(shape, [5, 5])
    out = {}
    for name, cls in (("keras", keras.layers.BatchNormalization), ("fused", blocks.BatchNormalization)):
        layer = _bn_pair(cls, shape, True)
        layer.trainable = case != "frozen"

        def step(x):
            with tf.GradientTape() as tape:
                tape.watch(x)
                loss = tf.reduce_sum(layer(x, training=True) * upstream)
            return loss, tape.gradient(loss, [x, layer.beta, layer.gamma])

        loss, grads = tf.function(step, jit_compile=case == "xla")(x)
        out[name] = [loss.numpy(), *(g.numpy() for g in grads), layer.moving_mean.numpy()]
    for a, b in zip(out["keras"], out["fused"]):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-4)
