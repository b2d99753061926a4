"""Solving (K + λI) α = Y for a kernel Gram matrix K that is too large to hold twice (REQUIREMENTS.md 22-23).

The maths (Eq. 3 of the paper): K α = Y with K symmetric positive (semi)definite, n × n; Y is n × c (one-hot).
Memory: the lower tiles of K, ≈ n²/2 · 8 B in float64 (10 GB at n = 50,000) or · 4 B in float32.
Flops: Cholesky n³/3 (4.2e13 at n = 50,000), one Gram matrix n²·d/2, each refinement pass n²·d.
dtype: the factor may be float32; every residual Y − Kα is recomputed from the features in float64, so iterative
refinement α ← α + K̃⁻¹(Y − Kα) converges to the float64 solution of the *exact* system whenever the factored K̃
(float32, possibly jittered) is a good enough preconditioner: for a jittered PSD K the error contracts by
max_i λ/(k_i + λ) < 1 per pass.
"""

import time

import numpy as np
from scipy.linalg import lapack

from rethink_tf.errors import UserError
from rethink_tf.kernels import gram_into, kernel_matvec

TF_MAX_N = 46_340  # n² must stay below 2³¹ for TF <= 2.21's GPU solve kernels (tensorflow PR #112658)


# Tiled Cholesky. K is never held as one n × n array: only its lower-triangular tiles, each its own
# Fortran-ordered array of at most TILE² elements. Why: (1) OpenBLAS's ?potrf segfaults on one array of more than
# 2³¹ elements (measured here at n = 50,000: a write fault inside libscipy_openblas), i.e. from n = 46,341, which
# includes the paper's MNIST n = 60,000; (2) memory is ≈ n²/2 instead of n², e.g. 5.7 GB in float32 for
# n = 50,000; (3) the Gram matrix costs half as much (only the lower tiles are computed).
# Right-looking algorithm, all BLAS-3 and in place (same flops as ?potrf, n³/3):
#   for k:  L_kk = chol(T_kk);  T_ik ← T_ik L_kk⁻ᵀ (i > k);  T_ij ← T_ij − T_ik T_jkᵀ (k < j ≤ i).

TILE = 8192


def tile_bounds(n, tile=TILE):
    return [(s, min(s + tile, n)) for s in range(0, n, tile)]


def tiles_elements(n, tile=TILE):
    b = tile_bounds(n, tile)
    return sum((b[i][1] - b[i][0]) * (b[j][1] - b[j][0]) for i in range(len(b)) for j in range(i + 1))


def build_tiles(kernel, x, dtype, tile=TILE, jitter=0.0, progress=None):
    """The lower tiles {(i, j): K(x_i, x_j) (+ jitter·I on i == j)}, computed in `dtype`."""
    bounds = tile_bounds(len(x), tile)
    xd = x.astype(dtype, copy=False)
    sq = np.einsum("ij,ij->i", xd, xd)
    tiles = {}
    for i, (a0, a1) in enumerate(bounds):
        for j, (b0, b1) in enumerate(bounds[:i + 1]):
            t = np.asfortranarray(kernel.block(xd[a0:a1], xd[b0:b1], sq[a0:a1], sq[b0:b1]), dtype=dtype)
            if i == j and jitter:
                t[np.diag_indices(a1 - a0)] += jitter
            tiles[i, j] = t
        if progress:
            progress(f"gram tiles: row {i + 1}/{len(bounds)}")
    return tiles


def factor_tiles(tiles, nt, dtype, progress=None):
    """In-place tiled Cholesky of the lower tiles. Returns 0, or the tile row whose diagonal block failed."""
    from scipy.linalg import blas

    pre = "d" if dtype == np.float64 else "s"
    potrf, trsm = getattr(lapack, pre + "potrf"), getattr(blas, pre + "trsm")
    syrk, gemm = getattr(blas, pre + "syrk"), getattr(blas, pre + "gemm")
    for k in range(nt):
        tiles[k, k], status = potrf(tiles[k, k], lower=1, overwrite_a=1, clean=1)
        if status:
            return k + 1
        for i in range(k + 1, nt):
            tiles[i, k] = trsm(1.0, tiles[k, k], tiles[i, k], side=1, lower=1, trans_a=1, overwrite_b=1)
        for i in range(k + 1, nt):
            tiles[i, i] = syrk(-1.0, tiles[i, k], beta=1.0, c=tiles[i, i], lower=1, overwrite_c=1)
            for j in range(k + 1, i):
                tiles[i, j] = gemm(-1.0, tiles[i, k], tiles[j, k], beta=1.0, c=tiles[i, j], trans_b=1,
                                   overwrite_c=1)
        if progress:
            progress(f"cholesky: tile column {k + 1}/{nt}")
    return 0


def solve_tiles(tiles, bounds, rhs, dtype):
    """Solves L Lᵀ z = rhs with the tiled factor: forward, then backward substitution by tiles."""
    from scipy.linalg import blas

    trsm = getattr(blas, ("d" if dtype == np.float64 else "s") + "trsm")
    nt = len(bounds)
    z = [np.asfortranarray(rhs[a:b], dtype=dtype) for a, b in bounds]
    for i in range(nt):
        for j in range(i):
            z[i] -= tiles[i, j] @ z[j]
        z[i] = trsm(1.0, tiles[i, i], z[i], side=0, lower=1, overwrite_b=1)
    for i in reversed(range(nt)):
        for j in range(i + 1, nt):
            z[i] -= tiles[j, i].T @ z[j]
        z[i] = trsm(1.0, tiles[i, i], z[i], side=0, lower=1, trans_a=1, overwrite_b=1)
    return np.concatenate(z).astype(np.float64)


def memory_needed(n, d, n_test, precision):
    """Bytes the solve holds at its peak: the lower tiles of K, the features (float64), a matvec block, the RHS."""
    itemsize = 8 if precision == "float64" else 4
    return tiles_elements(n) * itemsize + (n + n_test) * d * 8 + n * 2048 * 8 * 2 + n * 10 * 8 * 4


def available_memory():
    import psutil

    return psutil.virtual_memory().available


def choose_precision(precision, n, d, n_test, available):
    """Resolves "auto" and checks the need against available RAM up front (one clear error)."""
    if precision == "auto":
        precision = "float64" if memory_needed(n, d, n_test, "float64") <= 0.6 * available else "float32"
    need = memory_needed(n, d, n_test, precision)
    if need > 0.9 * available:
        raise UserError(f"n = {n:,} needs about {need / 2**30:.1f} GiB for a {precision} solve but only "
                        f"{available / 2**30:.1f} GiB is available; use --precision=float32 or fewer --train_examples")
    return precision


def solve(kernel, x, y, precision="float64", ridge=0.0, block_size=2048, refine_tol=1e-6, max_refine=20,
          progress=None, tile=TILE):
    """Solves (K + ridge·I) α = y by tiled in-place Cholesky plus iterative refinement against the exact K.

    Args:
      kernel: a Kernel.
      x: (n, d) float64 features.
      y: (n, c) float64 targets.
      precision: "float64" or "float32" (the factor's precision; residuals are always float64).
      ridge: ℓ2 regularization λ (0 = interpolation, Eq. 3).
      tile: tile side of the factorization.

    Returns:
      (alpha (n, c) float64, info dict with jitter, refinement iterations, residual history, timings, K α).
    """
    n = x.shape[0]
    dtype = np.float64 if precision == "float64" else np.float32
    bounds = tile_bounds(n, tile)
    info = {"precision": precision, "jitter": 0.0, "factor_attempts": 0, "tiles": len(bounds), "tile": tile}
    t0 = time.perf_counter()
    jitter = ridge
    eps = float(np.finfo(dtype).eps)
    while True:
        tiles = build_tiles(kernel, x, dtype, tile, jitter=jitter, progress=progress)
        if info["factor_attempts"] == 0:
            info["gram_seconds"] = time.perf_counter() - t0
            mean_diag = float(np.mean(np.concatenate([np.diag(tiles[i, i]) for i in range(len(bounds))])))
        info["factor_attempts"] += 1
        t1 = time.perf_counter()
        failed = factor_tiles(tiles, len(bounds), dtype, progress)
        info["factor_seconds"] = time.perf_counter() - t1
        if not failed:
            break
        rel = 10 * eps if jitter == ridge else 10 * (jitter - ridge) / mean_diag
        if rel > 1e-2:
            raise UserError(f"the {kernel.kind} Gram matrix is not positive definite even with jitter "
                            f"{rel:.0e}·mean(diag); check gamma and for duplicate points")
        jitter = ridge + rel * mean_diag
        info["jitter"] = jitter - ridge
        del tiles
        if progress:
            progress(f"K not positive definite in {precision} (tile row {failed}); retrying with jitter "
                     f"{info['jitter']:.3e}")
    alpha = np.zeros_like(y)
    residual = y.copy()
    y_norm = np.linalg.norm(y)
    info["residuals"] = []
    for it in range(max_refine):
        alpha += solve_tiles(tiles, bounds, residual, dtype)
        k_alpha = kernel_matvec(kernel, x, x, alpha, block_size) + ridge * alpha
        residual = y - k_alpha
        rel = float(np.linalg.norm(residual) / y_norm)
        info["residuals"].append(rel)
        if progress:
            progress(f"refinement {it + 1}: relative residual {rel:.3e} ({time.perf_counter() - t0:.0f} s)")
        if rel <= refine_tol or (it > 0 and rel > 0.9 * info["residuals"][-2]):
            break
    info["refine_iterations"] = len(info["residuals"])
    info["solve_seconds"] = time.perf_counter() - t0
    info["k_alpha"] = k_alpha - ridge * alpha  # K α in float64, reused by the caller (one n² pass saved)
    return alpha, info


def solve_tf(kernel, x, y, ridge=0.0, block_size=2048, check_subset=1000, allow_large=False):
    """tf.linalg Cholesky solve in float64 (accelerator path), guarded per REQUIREMENTS.md 23."""
    import tensorflow as tf

    n = x.shape[0]
    if n > TF_MAX_N and not allow_large:
        raise UserError(f"--solver=tf is refused for n = {n:,} > {TF_MAX_N:,}: TF <= 2.21 GPU solve kernels overflow "
                        "int32 indices at n² > 2³¹; use --solver=scipy")
    k = np.empty((n, n), order="F")
    gram_into(kernel, x, k, block_size, jitter=ridge)
    chol = tf.linalg.cholesky(tf.constant(k))
    del k
    if not bool(tf.reduce_all(tf.math.is_finite(chol))):  # TF returns NaN rather than raising
        raise UserError("tf.linalg.cholesky returned NaN: K is not numerically positive definite; use --solver=scipy")
    alpha = tf.linalg.cholesky_solve(chol, tf.constant(y)).numpy()
    m = min(n, check_subset)
    ref, _ = solve(kernel, x[:m], y[:m], "float64", ridge, block_size)
    sub = tf.linalg.cholesky_solve(tf.linalg.cholesky(tf.constant(
        gram_into(kernel, x[:m], np.empty((m, m), order="F"), block_size, jitter=ridge))), tf.constant(y[:m])).numpy()
    cross = float(np.max(np.abs(sub - ref)) / max(np.max(np.abs(ref)), 1e-300))
    return alpha, {"precision": "float64", "solver": "tf", "cross_check_rel_diff": cross, "cross_check_n": m}
