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
    # float64 error grows with n (A is ill-conditioned: |w| ~ 1e7 at n = 1000); measured 5e-5 at n = 1000.
    assert err < {50: 1e-8, 500: 1e-4, 2000: 1e-2}[n], err
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
