"""Solving (K + λI) α = Y for a kernel Gram matrix K that is too large to hold twice.

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
from rethink_tf.linear.kernels import gram_into, kernel_matvec

TF_MAX_N = 46_340  # n² must stay below 2³¹ for TF <= 2.21's GPU solve kernels (tensorflow PR #112658)


# Tiled Cholesky. K is never held as one n × n array: only its lower-triangular tiles, each its own
# Fortran-ordered array of at most TILE² elements. Why: (1) OpenBLAS's ?potrf segfaults on one array of more than
# 2³¹ elements (measured here at n = 50,000: a write fault inside libscipy_openblas), i.e. from n = 46,341, which
# includes the paper's MNIST n = 60,000; (2) memory is ≈ n²/2 instead of n², e.g. 5.7 GB in float32 for
# n = 50,000; (3) the Gram matrix costs half as much (only the lower tiles are computed).
# Left-looking algorithm, all BLAS-3 and in place (same flops as ?potrf, n³/3):
#   for k:  T_kk ← T_kk − Σ_{m<k} L_km L_kmᵀ;  L_kk = chol(T_kk);
#           T_ik ← (T_ik − Σ_{m<k} L_im L_kmᵀ) L_kk⁻ᵀ  (i > k).
# Left-looking, so a failure at tile column k has touched only columns < k and the tile (k, k): a jittered retry
# recomputes those tiles of K and adds the jitter to the untouched diagonal tiles, instead of rebuilding all of K.

TILE = 8192


def tile_bounds(n, tile=TILE):
    return [(s, min(s + tile, n)) for s in range(0, n, tile)]


def tiles_elements(n, tile=TILE):
    b = tile_bounds(n, tile)
    return sum((b[i][1] - b[i][0]) * (b[j][1] - b[j][0]) for i in range(len(b)) for j in range(i + 1))


class FeatureGram:
    """K(x, x) of a kernel on features x: tiles computed on demand, K α recomputed from the features in float64."""

    def __init__(self, kernel, x, block_size=2048):
        self.kernel, self.x, self.block_size, self.n = kernel, x, block_size, len(x)
        self._cast = {}

    def tile(self, rows, cols, dtype):
        if dtype not in self._cast:  # one cast copy of the features per dtype (counted by memory_needed)
            xd = self.x.astype(dtype, copy=False)
            self._cast = {dtype: (xd, np.einsum("ij,ij->i", xd, xd))}
        xd, sq = self._cast[dtype]
        (a0, a1), (b0, b1) = rows, cols
        return np.asfortranarray(self.kernel.block(xd[a0:a1], xd[b0:b1], sq[a0:a1], sq[b0:b1]), dtype=dtype)

    def matvec(self, alpha):
        return kernel_matvec(self.kernel, self.x, self.x, alpha, self.block_size)

    def release(self):
        self._cast = {}


class TileGram:
    """K held as its lower tiles (e.g. the linear kernel of random-conv features, accumulated chunk by chunk).

    The tiles are never factored in place: the factor is a copy, and K α is computed from these tiles, each used
    twice (K_ij α_j and K_ijᵀ α_i) and accumulated in float64.
    """

    def __init__(self, tiles, bounds):
        self.tiles, self.bounds, self.n = tiles, bounds, bounds[-1][1]

    def tile(self, rows, cols, dtype):
        i, j = self.bounds.index(rows), self.bounds.index(cols)
        return np.array(self.tiles[i, j], dtype=dtype, order="F")

    def matvec(self, alpha):
        out = np.zeros((self.n, alpha.shape[1]))
        for (i, j), t in self.tiles.items():
            (a0, a1), (b0, b1) = self.bounds[i], self.bounds[j]
            out[a0:a1] += t @ alpha[b0:b1]
            if i != j:
                out[b0:b1] += t.T @ alpha[a0:a1]
        return out

    def release(self):
        pass

    def spill(self, folder):
        """Moves the tiles into .npy files in `folder`, memory-mapped read-only, so that RAM holds the factor.

        At n = 50,000 the float32 tiles are 5.8 GB and a float64 factor 11.6 GB: both with K_test do not fit in
        24 GB, but the factor and K_test do, and a refinement pass then streams the tiles from the page cache/disk.
        """
        import os

        for (i, j), t in list(self.tiles.items()):
            path = os.path.join(folder, f"gram_{i}_{j}.npy")
            np.save(path, np.asfortranarray(t))
            self.tiles[i, j] = np.load(path, mmap_mode="r")


def build_tiles(gram, bounds, dtype, jitter=0.0, columns=None, tiles=None, progress=None):
    """Fills {(i, j): K tile (+ jitter·I on i == j)} for the lower tiles in tile columns `columns` (default: all)."""
    tiles = {} if tiles is None else tiles
    columns = range(len(bounds)) if columns is None else columns
    for j in columns:
        tiles[j, j] = _diag_tile(gram, bounds[j], dtype, jitter)
        for i in range(j + 1, len(bounds)):
            tiles[i, j] = gram.tile(bounds[i], bounds[j], dtype)
        if progress:
            progress(f"gram tiles: column {j + 1}/{len(bounds)}")
    return tiles


def factor_tiles(tiles, nt, dtype, progress=None):
    """In-place left-looking tiled Cholesky of the lower tiles. Returns 0, or k + 1 if diagonal tile k failed."""
    from scipy.linalg import blas

    pre = "d" if dtype == np.float64 else "s"
    potrf, trsm = getattr(lapack, pre + "potrf"), getattr(blas, pre + "trsm")
    syrk, gemm = getattr(blas, pre + "syrk"), getattr(blas, pre + "gemm")
    for k in range(nt):
        for m in range(k):
            tiles[k, k] = syrk(-1.0, tiles[k, m], beta=1.0, c=tiles[k, k], lower=1, overwrite_c=1)
        tiles[k, k], status = potrf(tiles[k, k], lower=1, overwrite_a=1, clean=1)
        if status:
            return k + 1
        for i in range(k + 1, nt):
            for m in range(k):
                tiles[i, k] = gemm(-1.0, tiles[i, m], tiles[k, m], beta=1.0, c=tiles[i, k], trans_b=1,
                                   overwrite_c=1)
            tiles[i, k] = trsm(1.0, tiles[k, k], tiles[i, k], side=1, lower=1, trans_a=1, overwrite_b=1)
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


def plan_tile_solve(precision, n, n_test, available):
    """(precision, spill) for a TileGram solve, checked against available RAM. The K tiles are accumulated and
    factored in that precision; with spill they are written to disk before the factor copy is made.

    "auto" prefers float64: the linear kernel of non-negative ReLU features has one dominant eigenvalue, ~n times
    its mean diagonal, so its small eigenvalues drown in float32 rounding. Measured at the paper's size (n = 50,000,
    d = 128,000): K accumulated in float32 was not positive definite even for a float64 factor (failed at tile
    column 6 of 7 with 10·eps jitter). So float64 K tiles, in RAM if everything fits, else spilled to disk;
    float32 only when even that does not fit.
    """
    need = lambda p, spill: memory_needed(n, 0, n_test, p, tiles_held=0 if spill else
                                          tiles_elements(n) * (8 if p == "float64" else 4))
    options = [("float64", False), ("float64", True), ("float32", False), ("float32", True)]
    if precision != "auto":
        options = [o for o in options if o[0] == precision]
    # Headroom: the estimate leaves out what the process already holds (the images, TensorFlow: ~2 GB at n = 50,000,
    # measured), so keeping the K tiles in RAM beside a float64 factor must fit in 60% of what is available.
    for p, spill in options:
        share = 0.9 if p == "float32" else (0.8 if spill else 0.6)
        if need(p, spill) <= share * available:
            return p, spill
    p, spill = options[-1]
    raise UserError(f"n = {n:,} needs about {need(p, spill) / 2**30:.1f} GiB for a {p} solve but only "
                    f"{available / 2**30:.1f} GiB is available; use fewer --train_examples")


def memory_needed(n, d, n_test, precision, tiles_held=None):
    """Bytes the solve holds at its peak.

    FeatureGram (tiles_held None): the lower tiles of K in the factor's precision, the float64 features (train and
    test), a float32 copy of the train features when the factor is float32, a matvec block, the right-hand sides.
    TileGram (tiles_held = bytes of the accumulated K tiles): those tiles plus the factor copy, the n_test × n
    test kernel (float32) and the right-hand sides; no feature matrix is ever held.
    """
    itemsize = 8 if precision == "float64" else 4
    factor = tiles_elements(n) * itemsize
    rhs = n * 10 * 8 * 4
    if tiles_held is not None:
        return tiles_held + factor + n_test * n * 4 + rhs
    cast = n * d * 4 if precision == "float32" else 0
    return factor + (n + n_test) * d * 8 + cast + n * 2048 * 8 * 2 + rhs


def available_memory():
    """Bytes this process may allocate, cgroup limits (containers, Slurm, Kubernetes) included."""
    from rethink_tf import memory

    return memory.available()


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
    """Solves (K + ridge·I) α = y for K = kernel(x, x); see solve_gram."""
    return solve_gram(FeatureGram(kernel, x, block_size), y, precision, ridge, refine_tol, max_refine, progress,
                      tile, kind=kernel.kind)


def solve_gram(gram, y, precision="float64", ridge=0.0, refine_tol=1e-6, max_refine=20, progress=None, tile=TILE,
               kind="kernel"):
    """Solves (K + ridge·I) α = y by tiled in-place Cholesky plus iterative refinement against the exact K.

    Args:
      gram: a FeatureGram or TileGram (tiles of K and K α in float64).
      y: (n, c) float64 targets.
      precision: "float64" or "float32" (the factor's precision; residuals are always float64).
      ridge: ℓ2 regularization λ (0 = interpolation, Eq. 3).
      tile: tile side of the factorization.

    Returns:
      (alpha (n, c) float64, info dict). alpha is the iterate with the smallest residual, never a later, worse
      one; info["converged"] says whether its relative residual reached refine_tol; info["k_alpha"] is K α.
    """
    n = gram.n
    dtype = np.float64 if precision == "float64" else np.float32
    bounds = tile_bounds(n, tile)
    nt = len(bounds)
    info = {"precision": precision, "jitter": 0.0, "factor_attempts": 0, "tiles": nt, "tile": tile,
            "tiles_rebuilt": 0}
    t0 = time.perf_counter()
    tiles = build_tiles(gram, bounds, dtype, jitter=ridge, progress=progress)
    info["gram_seconds"] = time.perf_counter() - t0
    mean_diag = float(np.mean(np.concatenate([np.diag(tiles[i, i]) for i in range(nt)]))) - ridge
    jitter, eps = ridge, float(np.finfo(dtype).eps)
    while True:
        info["factor_attempts"] += 1
        t1 = time.perf_counter()
        failed = factor_tiles(tiles, nt, dtype, progress)
        info["factor_seconds"] = time.perf_counter() - t1
        if not failed:
            break
        rel = 10 * eps if jitter == ridge else 10 * (jitter - ridge) / mean_diag
        if rel > 1e-2:
            raise UserError(f"the {kind} Gram matrix is not positive definite even with jitter "
                            f"{rel:.0e}·mean(diag); check gamma and for duplicate points")
        new_jitter = ridge + rel * mean_diag
        # Columns < k and the tile (k, k) hold partial factors: recompute them. The rest is still K + old jitter.
        k = failed - 1
        for i in range(k + 1, nt):
            tiles[i, i][np.diag_indices(bounds[i][1] - bounds[i][0])] += new_jitter - jitter
        build_tiles(gram, bounds, dtype, jitter=new_jitter, columns=range(k), tiles=tiles)
        tiles[k, k] = _diag_tile(gram, bounds[k], dtype, new_jitter)
        info["tiles_rebuilt"] += sum(nt - j for j in range(k)) + 1
        jitter = new_jitter
        info["jitter"] = jitter - ridge
        if progress:
            progress(f"K not positive definite in {precision} (tile column {failed}); retrying with jitter "
                     f"{info['jitter']:.3e}, recomputing {sum(nt - j for j in range(k)) + 1} of "
                     f"{nt * (nt + 1) // 2} tiles")
    gram.release()
    alpha = np.zeros_like(y)
    residual = y.copy()
    y_norm = np.linalg.norm(y)
    info["residuals"] = []
    best = (np.inf, None, None)
    for it in range(max_refine):
        candidate = alpha + solve_tiles(tiles, bounds, residual, dtype)
        k_alpha = gram.matvec(candidate)
        residual_c = y - k_alpha - ridge * candidate
        rel = float(np.linalg.norm(residual_c) / y_norm)
        info["residuals"].append(rel)
        if progress:
            progress(f"refinement {it + 1}: relative residual {rel:.3e} ({time.perf_counter() - t0:.0f} s)")
        if rel < best[0]:
            best = (rel, candidate, k_alpha)
        if rel <= refine_tol or (it > 0 and rel > 0.9 * info["residuals"][-2]):
            break
        alpha, residual = candidate, residual_c
    info["residual"], alpha, k_alpha = best
    info["converged"] = info["residual"] <= refine_tol
    info["refine_iterations"] = len(info["residuals"])
    info["solve_seconds"] = time.perf_counter() - t0
    info["k_alpha"] = k_alpha  # K α in float64 for the best α, reused by the caller (one n² pass saved)
    return alpha, info


def _diag_tile(gram, rows, dtype, jitter):
    """The diagonal tile of K over `rows`, plus jitter·I."""
    t = gram.tile(rows, rows, dtype)
    if jitter:
        t[np.diag_indices(rows[1] - rows[0])] += jitter
    return t


def accumulate_linear_gram(chunks, n, n_test, tile=TILE, dtype=np.float32, progress=None):
    """The linear kernels K = X Xᵀ (lower tiles) and K_test = X_test Xᵀ from feature chunks, never holding X.

    Args:
      chunks: iterable of (train block (n, k), test block (n_test, k)) feature columns; Σ k = d.

    Entries of K are sums of non-negative terms, accurate to eps · sqrt(#chunks) relative, but K's small eigenvalues
    are not: accumulate in float64 for a float64 solve (see plan_tile_solve).
    Returns:
      (TileGram, K_test (n_test, n) float32, d).
    """
    from scipy.linalg import blas

    pre = "d" if dtype == np.float64 else "s"
    syrk, gemm = getattr(blas, pre + "syrk"), getattr(blas, pre + "gemm")
    bounds = tile_bounds(n, tile)
    tiles = {(i, j): np.zeros((bounds[i][1] - bounds[i][0], bounds[j][1] - bounds[j][0]), dtype, order="F")
             for i in range(len(bounds)) for j in range(i + 1)}
    k_test = np.zeros((n_test, n), np.float32, order="F")  # only argmax(K_test α) uses it: float32 suffices
    d, t0 = 0, time.perf_counter()
    for c, (train, test) in enumerate(chunks):
        train, test = np.asarray(train, dtype), np.asarray(test, np.float32)
        d += train.shape[1]
        for (i, j), t in tiles.items():
            a = train[bounds[i][0]:bounds[i][1]]
            if i == j:
                tiles[i, j] = syrk(1.0, a, beta=1.0, c=t, lower=1, overwrite_c=1)
            else:
                tiles[i, j] = gemm(1.0, a, train[bounds[j][0]:bounds[j][1]], beta=1.0, c=t, trans_b=1,
                                   overwrite_c=1)
        k_test = blas.sgemm(1.0, test, train.astype(np.float32, copy=False), beta=1.0, c=k_test, trans_b=1,
                            overwrite_c=1)
        if progress:
            progress(f"linear gram: chunk {c + 1}, {d:,} features ({time.perf_counter() - t0:.0f} s)")
    for i in range(len(bounds)):  # syrk fills the lower triangle only: mirror it so tiles are true blocks of K
        t = tiles[i, i]
        tiles[i, i] = np.asfortranarray(np.tril(t) + np.tril(t, -1).T)
    return TileGram(tiles, bounds), k_test, d


def solve_tf(kernel, x, y, ridge=0.0, block_size=2048, check_subset=1000, allow_large=False):
    """tf.linalg Cholesky solve in float64 (accelerator path), guarded: size limit, NaN check, CPU cross-check."""
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
