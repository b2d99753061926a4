"""Complexity measures (--measures, beyond the paper), each against an independent computation: NumPy's SVD, the
closed-form Hessian of softmax regression, central finite differences, a brute-force margin loop, and a run's own
checkpoint and initialization."""

import dataclasses
import math
import os

import keras
import numpy as np
import pytest

from conftest import write_cifar_binary
from rethink_tf import measures, models, results
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.reporting import figures
from rethink_tf.train import run
from rethink_tf.training import checkpoint


@pytest.mark.parametrize("shape", [(7, 3), (3, 40), (50, 50), (2352, 64)])
def test_spectral_norm_is_numpy_svds_largest_singular_value(shape):
    m = np.random.default_rng(1).standard_normal(shape)
    assert measures.spectral_norm(m) == pytest.approx(np.linalg.svd(m, compute_uv=False)[0], rel=1e-8)
    low_rank = np.outer(np.arange(1, 6), np.arange(1, 4)).astype(float)  # rank 1: sigma = |u| |v|
    assert measures.spectral_norm(low_rank) == pytest.approx(np.linalg.norm(np.arange(1, 6))
                                                             * np.linalg.norm(np.arange(1, 4)), rel=1e-9)
    assert measures.spectral_norm(np.zeros((3, 4))) == 0.0


def _small_convnet(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, activation="tanh", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(5, activation="tanh", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def test_layer_norms_and_their_summary_against_numpy():
    model, start = _small_convnet(0), _small_convnet(1)
    rows = measures.layer_norms(model, start)
    assert [r["layer"] for r in rows] == ["conv", "hidden", "logits"]
    kernels = [model.get_layer(n).kernel.numpy().astype(np.float64) for n in ("conv", "hidden", "logits")]
    inits = [start.get_layer(n).kernel.numpy().astype(np.float64) for n in ("conv", "hidden", "logits")]
    mats = [k.reshape(-1, k.shape[-1]) for k in kernels]
    assert rows[0]["shape"] == [3 * 3 * 2, 4]
    svd = [np.linalg.svd(m, compute_uv=False)[0] for m in mats]
    for r, m, s, k0 in zip(rows, mats, svd, inits):
        assert r["frobenius"] == pytest.approx(math.sqrt(float((m ** 2).sum())))
        assert r["spectral"] == pytest.approx(s, rel=1e-8)
        assert r["l21"] == pytest.approx(sum(math.sqrt(float((m[:, j] ** 2).sum())) for j in range(m.shape[1])))
        assert r["distance_from_init"] == pytest.approx(np.linalg.norm(m - k0.reshape(m.shape)))
    s = measures.norm_summary(rows)
    frob = np.array([r["frobenius"] for r in rows])
    l21 = np.array([r["l21"] for r in rows])
    # Bartlett, Foster, Telgarsky (2017), R_A with reference matrices 0, written out directly
    r_a = np.prod(svd) * np.sum([(a / b) ** (2 / 3) for a, b in zip(l21, svd)]) ** 1.5
    assert 10 ** s["log10_spectral_complexity"] == pytest.approx(r_a, rel=1e-9)
    assert 10 ** s["log10_pac_bayes_complexity"] == pytest.approx(np.prod(svd) ** 2 * np.sum(frob ** 2 / np.square(
        svd)), rel=1e-9)
    assert 10 ** s["log10_product_frobenius"] == pytest.approx(np.prod(frob), rel=1e-9)
    total = math.sqrt(sum(float(((m - k0.reshape(m.shape)) ** 2).sum()) for m, k0 in zip(mats, inits)))
    assert s["distance_from_init"] == pytest.approx(total)


def test_margins_against_a_loop():
    rng = np.random.default_rng(2)
    logits, labels = rng.standard_normal((40, 5)), rng.integers(0, 5, 40)
    expected = [logits[i, labels[i]] - max(logits[i, j] for j in range(5) if j != labels[i]) for i in range(40)]
    got = measures.margins(logits, labels)
    np.testing.assert_allclose(got, expected)
    s = measures.margin_summary(got, log10_scale=math.log10(2.0))
    assert s["fraction_negative"] == pytest.approx(np.mean(np.argmax(logits, 1) != labels))
    assert s["normalized_quantiles"]["0.5"] == pytest.approx(np.median(expected) / 2.0)


def test_input_jacobian_norm_against_central_differences():
    model = _small_convnet(3)
    x = np.random.default_rng(4).standard_normal((3, 6, 6, 2)).astype(np.float32)
    got = measures.input_jacobian_norms(model, x)

    def probs(z):
        return keras.ops.convert_to_numpy(keras.ops.softmax(model(z[None].astype(np.float32)))).astype(np.float64)[0]

    eps = 1e-2
    for i in range(3):
        cols = []
        for j in range(x[i].size):
            d = np.zeros(x[i].size)
            d[j] = eps
            d = d.reshape(x[i].shape)
            cols.append((probs(x[i] + d) - probs(x[i] - d)) / (2 * eps))
        assert got[i] == pytest.approx(np.linalg.norm(np.stack(cols)), rel=2e-3)


def test_the_projection_estimate_of_a_many_class_jacobian_agrees_with_the_exact_one(monkeypatch):
    keras.utils.set_random_seed(7)
    inputs = keras.Input((5,))
    model = keras.Model(inputs, keras.layers.Dense(20, kernel_initializer="random_normal")(
        keras.layers.Dense(8, activation="tanh")(inputs)))
    x = np.random.default_rng(8).standard_normal((4, 5)).astype(np.float32)
    monkeypatch.setattr(measures, "JACOBIAN_EXACT_CLASSES", 100)
    exact = measures.input_jacobian_norms(model, x)
    monkeypatch.setattr(measures, "JACOBIAN_EXACT_CLASSES", 16)
    monkeypatch.setattr(measures, "JACOBIAN_PROJECTIONS", 3000)
    estimate = measures.input_jacobian_norms(model, x)
    np.testing.assert_allclose(estimate, exact, rtol=0.05)


def test_top_hessian_eigenvalue_of_softmax_regression_against_its_closed_form():
    # mean cross-entropy of softmax regression: H = 1/n sum_i (diag(p_i) - p_i p_i^T) (x) [x_i 1][x_i 1]^T
    keras.utils.set_random_seed(5)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="random_normal")(inputs))
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((64, 4)).astype(np.float32), rng.integers(0, 3, 64)
    w, b = (v.numpy().astype(np.float64) for v in model.trainable_weights)
    logits = x @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    xb = np.hstack([x, np.ones((64, 1))]).astype(np.float64)
    h = sum(np.kron(np.outer(xi, xi), np.diag(pi) - np.outer(pi, pi)) for xi, pi in zip(xb, p)) / 64
    # variables in the order (kernel rows x classes, then bias): kron(x x^T, S) indexes (input, class) likewise
    exact = np.linalg.eigvalsh(h)[-1]
    got, products = measures.top_hessian_eigenvalue(model, x, y, batch_size=16, tol=1e-8)
    assert got == pytest.approx(exact, rel=1e-5) and products <= 40


def test_a_run_with_measures_records_them_for_its_own_weights_and_initialization(tmp_path):
    data_dir = tmp_path / "cifar"
    data_dir.mkdir()
    write_cifar_binary(str(data_dir), per_batch=12, test=10)
    cfg = TrainConfig(model="mlp_1x512", epochs=2, batch_size=12, tensorboard=False, learning_rate=0.05,
                      data=DataConfig(dataset="cifar10", data_dir=str(data_dir), corrupt="random_labels"))
    initial = {}

    class Start(keras.callbacks.Callback):  # the weights training starts from, seen by the loop itself
        def on_train_begin(self, logs=None):
            initial.update({v.path: v.numpy().astype(np.float64) for v in self.model.trainable_weights})

    path = run(cfg, str(tmp_path / "runs"), verbose=0, extra_callbacks=[Start()])
    before = results.read_json(path)
    assert "measures" not in before
    # a finished run asked for its measures later is measured from its checkpoint, not trained again
    cfg = dataclasses.replace(cfg, measures=True)
    assert run(cfg, str(tmp_path / "runs"), verbose=0) == path
    after = results.read_json(path)
    for key in ("metrics", "history", "env", "resumes", "corruption"):  # everything else stays the run's own
        assert after[key] == before[key], key
    assert before["metrics"]["steps_trained"] == 10
    m = after["measures"]
    trained = models.build("mlp_1x512", (28, 28, 3), 10)
    trained.load_weights(os.path.join(os.path.dirname(path), checkpoint.CHECKPOINT))
    kernels = {v.path: v.numpy().astype(np.float64) for v in trained.trainable_weights if v.path.endswith("kernel")}
    start = {k: v for k, v in initial.items() if k.endswith("kernel")}
    assert sorted(kernels) == sorted(start) and len(kernels) == 2
    distance = math.sqrt(sum(float(((kernels[k] - start[k]) ** 2).sum()) for k in kernels))
    assert m["distance_from_init"] == pytest.approx(distance, rel=1e-5) and distance > 0
    assert [r["frobenius"] for r in m["layers"]] == pytest.approx(
        [float(np.linalg.norm(kernels[k])) for k in sorted(kernels, key=lambda k: "logits" in k)], rel=1e-6)
    assert m["margins"]["examples"] == 60 and m["input_jacobian"]["points"] == 10
    assert m["margins"]["fraction_negative"] == pytest.approx(1 - after["metrics"]["train_accuracy"], abs=1e-6)
    assert m["sharpness"]["examples"] == 60 and np.isfinite(m["sharpness"]["top_hessian_eigenvalue"])
    # off by default, and not part of the run's identity
    assert dataclasses.replace(cfg, measures=False).name() == cfg.name()
    assert run(cfg, str(tmp_path / "runs"), verbose=0) == path  # now complete: nothing measured again
    assert results.read_json(path)["measures"]["seconds"] == m["seconds"]
    paths = figures.measures_vs_p([after], str(tmp_path / "fig"))
    assert paths and all(os.path.getsize(p) > 0 for p in paths)
