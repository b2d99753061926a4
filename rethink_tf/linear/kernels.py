"""Kernels k(x, z) evaluated from dot products, by blocks, in float64 (§5).

The Gram matrix of n = 50,000 points is 20 GB in float64, so nothing here forms it whole: `Kernel.block` evaluates
one rectangular block, `kernel_matvec` multiplies by blocks, and `gram_into` fills a preallocated array block by block.
"""

import numpy as np

from rethink_tf.errors import UserError

KERNELS = ("gaussian", "laplacian", "linear", "polynomial")


class Kernel:
    """k(x, z) from dot products: gaussian exp(-γ‖x−z‖²), laplacian exp(-γ‖x−z‖), linear ⟨x,z⟩, polynomial
    (⟨x,z⟩ + c)^degree.

    The Laplacian kernel is beyond the paper (§5 uses the Gaussian): Belkin, Ma and Mandal (2018, "To understand
    deep learning we need to understand kernel learning") interpolate random labels with it and compare the norms of
    the interpolating solutions against label noise, the kernel analogue of Figure 1c.

    With `normalize`, rows are scaled to unit norm first (B. Recht's ⟨x/‖x‖, z/‖z‖⟩^4 kernel for MNIST).
    """

    def __init__(self, kind, gamma=0.02, degree=4, coef0=0.0):
        if kind not in KERNELS:
            raise UserError(f"unknown kernel {kind!r}; known: {', '.join(KERNELS)}")
        if kind in ("gaussian", "laplacian") and not gamma > 0:
            raise UserError(f"the {kind.capitalize()} kernel needs gamma > 0; received gamma={gamma}")
        if kind == "polynomial" and (int(degree) != degree or degree < 1):
            raise UserError(f"polynomial degree must be a positive integer; received {degree}")
        self.kind, self.gamma, self.degree, self.coef0 = kind, float(gamma), int(degree), float(coef0)

    def block(self, a, b, a_sq, b_sq):
        """k(a_i, b_j) for row blocks a (m × d) and b (p × d), float64; a_sq/b_sq are squared row norms."""
        g = a @ b.T
        if self.kind == "linear":
            return g
        if self.kind == "polynomial":
            g += self.coef0
            return np.power(g, self.degree, out=g)
        # In place on the one block temporary: exp(-γ · max(|a|² + |b|² − 2ab, 0)) (laplacian: its square root).
        g *= -2.0
        g += a_sq[:, None]
        g += b_sq[None, :]
        np.maximum(g, 0.0, out=g)
        if self.kind == "laplacian":
            np.sqrt(g, out=g)
        g *= -self.gamma
        return np.exp(g, out=g)

    def describe(self):
        return {"gaussian": {"kernel": "gaussian", "gamma": self.gamma},
                "laplacian": {"kernel": "laplacian", "gamma": self.gamma},
                "linear": {"kernel": "linear"},
                "polynomial": {"kernel": "polynomial", "degree": self.degree, "coef0": self.coef0}}[self.kind]


def kernel_matvec(kernel, x, z, alpha, block_size=2048):
    """k(x, z) @ alpha in float64 blocks, without forming the full matrix.

    When z is x (the refinement residual), K is symmetric: only blocks on and below the diagonal are computed and
    each is used twice (K_ij α_j and K_ijᵀ α_i), halving the kernel evaluations.
    The linear kernel never forms a block: K α = X (Zᵀ α) costs O((n + m)·d·c) instead of O(n·m·d), the difference
    between seconds and hours for random-conv features (d = 128,000).
    """
    if kernel.kind == "linear":
        return x @ (z.T @ alpha)
    x_sq = np.einsum("ij,ij->i", x, x)
    out = np.zeros((x.shape[0], alpha.shape[1]))
    if z is x:
        starts = range(0, x.shape[0], block_size)
        for i in starts:
            rows = slice(i, i + block_size)
            block = kernel.block(x[rows], x[:i + block_size], x_sq[rows], x_sq[:i + block_size])
            out[rows] += block @ alpha[:i + block_size]
            out[:i] += block[:, :i].T @ alpha[rows]
        return out
    z_sq = np.einsum("ij,ij->i", z, z)
    for i in range(0, x.shape[0], block_size):
        out[i:i + block_size] = kernel.block(x[i:i + block_size], z, x_sq[i:i + block_size], z_sq) @ alpha
    return out


def gram_into(kernel, x, out, block_size=2048, jitter=0.0):
    """Writes K(x, x) (+ jitter·I) into the preallocated Fortran-ordered `out`, one column block at a time.

    Column blocks of a Fortran array are contiguous, so each block is one temporary of n × block_size, computed in
    out's dtype. Used where a dense K is needed (the TF solve path); the LAPACK path builds tiles instead
    (kernel_solve.build_tiles).
    """
    n = x.shape[0]
    x = x.astype(out.dtype, copy=False)
    sq = np.einsum("ij,ij->i", x, x)
    for j in range(0, n, block_size):
        cols = kernel.block(x, x[j:j + block_size], sq, sq[j:j + block_size])
        if jitter:
            cols[np.arange(j, min(j + block_size, n)), np.arange(cols.shape[1])] += jitter
        out[:, j:j + block_size] = cols
    return out
