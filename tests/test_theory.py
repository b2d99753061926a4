"""Theorem 1: the depth-2 ReLU network with exactly 2n + d weights fits arbitrary targets on n points."""

import numpy as np
import pytest

from rethink_tf import theory
from rethink_tf.errors import UserError


@pytest.mark.parametrize("n,d", [(50, 3), (500, 20), (2000, 100)])
def test_exact_fit_with_2n_plus_d_weights(n, d):
    rng = np.random.default_rng(n)
    z = rng.standard_normal((n, d))
    labels = rng.integers(0, 10, n)  # random labels: any function of the sample
    model = theory.build_network(z, labels.astype(float))
    assert model.count_params() == 2 * n + d
    assert len(model.layers) == 4  # input, shared projection, n thresholded ReLUs, linear output
    err = theory.fit_error(model, z, labels)
    # float64 error grows with n (A is ill-conditioned: |w| ~ 1e6 at n = 1000); docs/benchmarks/theorem1.jsonl.
    assert err < {50: 1e-9, 500: 1e-6, 2000: 1e-5}[n], err
    pred = np.rint(np.asarray(model(z))[:, 0]).astype(int)
    np.testing.assert_array_equal(pred, labels)  # every random label represented exactly after rounding


def test_real_valued_targets_and_lemma_1():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((30, 4))
    y = rng.normal(size=30)
    a, b, w = theory.construct(z, y)
    x = np.sort(z @ a)
    assert np.all(b < x) and np.all(b[1:] > x[:-1])  # interleaving b_1 < x_1 < b_2 < ... < b_n < x_n
    mat = np.maximum(x[:, None] - b[None, :], 0.0)
    assert np.allclose(mat, np.tril(mat)) and np.all(np.diag(mat) > 0)  # lower triangular, full rank
    np.testing.assert_allclose(np.maximum((z @ a)[:, None] - b, 0) @ w, y, atol=1e-9)


def test_bad_input():
    z = np.zeros((3, 2))
    with pytest.raises(UserError, match="pairwise distinct"):
        theory.construct(z, np.arange(3.0))
    with pytest.raises(UserError, match="shape"):
        theory.construct(np.ones((3, 2)), np.arange(4.0))
    with pytest.raises(UserError, match="finite"):
        theory.construct(np.array([[0.0, np.nan], [1.0, 2.0]]), np.arange(2.0))


def test_theorem1_at_cifar_scale_in_linear_memory():
    # n = 50,000 CIFAR-shaped points (32·32·3 = 3,072 dims, pixels / 255), random labels. The dense n × n system
    # would be 20 GB; the recurrence needs O(n). Measured (docs/benchmarks/theorem1.jsonl): fit error 1.9e-4 in float64.
    import tracemalloc

    n, d = 50_000, 32 * 32 * 3
    rng = np.random.default_rng(0)
    z = rng.integers(0, 256, (n, d), dtype=np.uint8).astype(np.float64) / 255.0
    labels = rng.integers(0, 10, n)
    tracemalloc.start()
    a, b, w = theory.construct(z, labels.astype(float))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # a finiteness mask of the input (n·d bytes) and a few length-n vectors; the n × n matrix would be 20 GB
    assert peak < n * d + 40 * n * 8, peak
    model = theory.build_network(z, labels.astype(float))
    assert model.count_params() == 2 * n + d
    err = theory.fit_error(model, z, labels)
    assert err < 1e-3, err
    np.testing.assert_array_equal(np.rint(np.asarray(model(z[:4096]))[:, 0]).astype(int), labels[:4096])
