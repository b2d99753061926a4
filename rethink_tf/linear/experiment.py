"""§5 "Implicit regularization: an appeal to linear models": minimum-norm kernel interpolation with LAPACK.

    python -m rethink_tf.linear_models --flagfile=flags/kernel_mnist_pixels.flags --workdir=runs

(the command line is rethink_tf/linear_models.py; the run's configuration is config.KernelConfig)

SGD from w = 0 on least squares stays in span{x_i}, so if it interpolates it returns w = Xᵀα with

    X Xᵀ α = y                                                     (Eq. 3)

the minimum-ℓ2-norm solution of Xw = y; with a kernel k, K α = Y with K_ij = k(x_i, x_j) and one-hot Y (n × 10).
Prediction: argmax_c (K_test,train α)_c. The "norm" is the RKHS norm sqrt(tr(αᵀ K α)): the paper does not say which
norm its 220 / 390 are; this is the most plausible reading.

Solver (linear/solve.py):
  * K is built as its lower-triangular tiles (never one, let alone two, n × n arrays) and factored in place by a
    tiled Cholesky on LAPACK/BLAS-3 (?potrf, ?trsm, ?syrk, ?gemm; n³/3 flops); memory ≈ n²/2 · 8 B (float64) or
    n²/2 · 4 B (float32). A single n × n ?potrf segfaults in OpenBLAS beyond 2³¹ elements (see the solve section).
  * precision "float32" factors in single precision and recovers float64 accuracy by iterative refinement:
    α ← α + K̃⁻¹ (Y − K α), where the residual is recomputed blockwise in float64 from the features (K itself was
    overwritten by its factor). "auto" picks float64 when it fits comfortably in available RAM.
  * If K is not numerically positive definite the factorization is retried with a diagonal jitter (relative to
    mean diag K, dtype-aware, ×10 per retry); refinement still targets the un-jittered K, so the reported residual
    is the true one.
  * The TF path (`--solver=tf`, tf.linalg in float64) is for accelerators; it is refused for n >= 46,341 (int32
    index overflow in TF <= 2.21 GPU kernels), checks for NaN explicitly (TF returns NaN instead of raising), and is
    cross-checked against SciPy on a subset.

  * Refinement keeps the best iterate. If its residual stays above --refine_tol or it misclassifies a training
    point, a float32 factor is redone in float64 when that fits in memory; otherwise the run warns, on the console
    and in results.json ("warnings").
  * Linear kernel on random_conv features (the paper's CIFAR-10 setting, d = 128,000): the features are never held
    whole. K = X Xᵀ and K_test = X_test Xᵀ are accumulated from chunks of filters (features.random_conv_chunks,
    solve.accumulate_linear_gram); the solve then works from those tiles (solve.TileGram).

Feature maps (pixels, Gabor, random conv) and the choices the paper leaves open are in linear/features.py.
"""

import math
import os
import resource
import time

import numpy as np
import scipy.linalg

from rethink_tf.config import KERNEL_NON_IDENTITY_FIELDS, PRECISIONS, SOLVERS
from rethink_tf.errors import UserError
from rethink_tf.linear import solve as kernel_solve
from rethink_tf.linear.features import FEATURES, feature_map, random_conv_chunks
from rethink_tf.linear.kernels import Kernel, kernel_matvec
from rethink_tf.linear.solve import available_memory, choose_precision, solve_tf

# Holding the random_conv features whole is allowed up to this many bytes (float64 train + test); beyond it, the
# linear kernel is accumulated from filter chunks (the paper's 32,000 filters on CIFAR-10 would be 61 GB).
WHOLE_FEATURES_MAX_BYTES = 2 * 2**30


# ------------------------------------------------------------------------------------- §5's SGD claim

def min_norm_solution(x, y):
    """w = Xᵀ (X Xᵀ)⁻¹ y: the minimum-ℓ2-norm solution of X w = y (X of full row rank n < d)."""
    return x.T @ scipy.linalg.solve(x @ x.T, y, assume_a="pos")


def sgd_least_squares(x, y, lr, epochs, seed=0):
    """Plain SGD on ½(wᵀx_i − y_i)² from w_0 = 0, one example at a time: w ← w − η e_t x_{i_t} (§5).

    Every update adds a multiple of some x_i, so w stays in span{x_i}; if it interpolates, it is Xᵀα with
    XXᵀα = y, i.e. the minimum-norm solution. min_norm_check() verifies this numerically.
    """
    w = np.zeros(x.shape[1])
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        for i in rng.permutation(len(x)):
            w -= lr * (x[i] @ w - y[i]) * x[i]
    return w


def min_norm_check(n=40, d=200, epochs=400, seed=0):
    """§5 on a planted problem: SGD from 0 reaches the min-norm interpolant, and random labels need a larger norm.

    Returns:
      dict with the relative distance between SGD's w and Xᵀ(XXᵀ)⁻¹y, the training residual, and the min-norm
      ‖w‖ for labels from a planted linear rule vs random ±1 labels.
    """
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)) / math.sqrt(d)
    y_true = np.sign(x @ rng.standard_normal(d))
    y_random = rng.choice([-1.0, 1.0], n)
    lr = 0.5 / float(np.max(np.sum(x * x, axis=1)))
    w_sgd = sgd_least_squares(x, y_true, lr, epochs, seed)
    w_min = min_norm_solution(x, y_true)
    return {"sgd_vs_min_norm": float(np.linalg.norm(w_sgd - w_min) / np.linalg.norm(w_min)),
            "sgd_residual": float(np.linalg.norm(x @ w_sgd - y_true) / np.linalg.norm(y_true)),
            "norm_true_labels": float(np.linalg.norm(w_min)),
            "norm_random_labels": float(np.linalg.norm(min_norm_solution(x, y_random)))}


# ------------------------------------------------------------------------------------------------ a run

def _one_hot(labels, num_classes):
    y = np.zeros((len(labels), num_classes))
    y[np.arange(len(labels)), labels] = 1.0
    return y


def _check_finite(name, a):
    if not np.all(np.isfinite(a)):
        raise UserError(f"{name} contains NaN or infinite values")


def _errors_and_metrics(cfg, labels, test_labels, alpha, k_alpha, test_scores, y, n, n_test, d):
    return {
        "n_train": n, "n_test": n_test, "dim": d,
        "train_error": float(np.mean(np.argmax(k_alpha, 1) != labels)),
        "test_error": float(np.mean(np.argmax(test_scores, 1) != test_labels)),
        "residual": float(np.linalg.norm(k_alpha + cfg.ridge * alpha - y) / np.linalg.norm(y)),
        "norm": float(math.sqrt(max(float(np.sum(alpha * k_alpha)), 0.0))),
    }


def _solve_checked(cfg, gram, y, labels, precision, fits_float64, log):
    """solve_gram, then checks: a float32 solve that did not converge, or that misclassifies a
    training point of an interpolation, is redone in float64 when it fits; otherwise warnings say so."""
    def attempt(p):
        alpha, info = kernel_solve.solve_gram(gram, y, p, cfg.ridge, cfg.refine_tol, cfg.max_refine,
                                              progress=log, kind=cfg.kernel)
        return alpha, info, float(np.mean(np.argmax(info["k_alpha"], 1) != labels))

    retry = precision == "float32" and fits_float64
    try:
        alpha, info, train_error = attempt(precision)
    except UserError as e:
        if not retry:
            raise
        why = f"float32 factor failed ({e})"
    else:
        retry = retry and not (info["converged"] and (cfg.ridge > 0 or train_error == 0))
        why = f"float32 solve: residual {info['residual']:.2e}, train error {train_error:.4f}"
    if retry:
        log(f"{why}; redoing in float64")
        alpha, info, train_error = attempt("float64")
    warnings = []
    if not info["converged"]:
        warnings.append(f"refinement stopped at relative residual {info['residual']:.2e} > --refine_tol "
                        f"{cfg.refine_tol:g} ({info['precision']} factor); the best iterate is reported")
    if cfg.ridge == 0 and train_error > 0:
        warnings.append(f"the interpolant misclassifies {train_error:.2%} of the training points (K is "
                        "numerically singular: duplicate points, or gamma too small)")
    for w in warnings:
        log(f"warning: {w}")
    info["warnings"] = warnings
    return alpha, info


def fit_and_evaluate(cfg, x_train, labels, x_test, test_labels, num_classes=10, log=print):
    """Solves Eq. 3 on features and reports train/test error, residual, norm, time, memory."""
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise UserError(f"train features {x_train.shape} and test features {x_test.shape} must be 2-D with the "
                        "same width")
    if len(labels) != len(x_train) or len(test_labels) != len(x_test):
        raise UserError(f"{len(x_train)} train points for {len(labels)} labels, {len(x_test)} test points for "
                        f"{len(test_labels)} labels")
    _check_finite("the training data", x_train)
    _check_finite("the test data", x_test)
    kernel = Kernel(cfg.kernel, cfg.gamma, cfg.degree, cfg.coef0)
    if cfg.normalize:
        x_train = x_train / np.maximum(np.linalg.norm(x_train, axis=1, keepdims=True), 1e-12)
        x_test = x_test / np.maximum(np.linalg.norm(x_test, axis=1, keepdims=True), 1e-12)
    n, d = x_train.shape
    y = _one_hot(labels, num_classes)
    t0 = time.perf_counter()
    if cfg.solver == "tf":
        alpha, info = solve_tf(kernel, x_train, y, cfg.ridge, cfg.block_size)
        k_alpha = kernel_matvec(kernel, x_train, x_train, alpha, cfg.block_size)
    else:
        available = available_memory()
        precision = choose_precision(cfg.precision, n, d, len(x_test), available)
        fits64 = kernel_solve.memory_needed(n, d, len(x_test), "float64") <= 0.9 * available
        gram = kernel_solve.FeatureGram(kernel, x_train, cfg.block_size)
        alpha, info = _solve_checked(cfg, gram, y, labels, precision, fits64, log)
        k_alpha = info.pop("k_alpha")
    test_scores = kernel_matvec(kernel, x_test, x_train, alpha, cfg.block_size)
    metrics = _errors_and_metrics(cfg, labels, test_labels, alpha, k_alpha, test_scores, y, n, len(x_test), d)
    metrics["seconds"] = time.perf_counter() - t0
    metrics["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return metrics, {**info, **kernel.describe()}


def fit_and_evaluate_chunked(cfg, chunks, n, n_test, labels, test_labels, num_classes=10, log=print, spill_dir=None):
    """Eq. 3 with the linear kernel of features that are only ever seen in column chunks (random_conv at scale).

    Memory: the lower tiles of K in the solve's precision (float64 preferred: n²/2 · 8 B, spilled to memory-mapped
    files in spill_dir when the factor copy needs the RAM), the factor, K_test (n_test × n, same precision) and one
    chunk of features; planned against available RAM before any feature is computed (plan_tile_solve).
    """
    import shutil
    import tempfile

    if cfg.kernel != "linear" or cfg.normalize or cfg.solver != "scipy":
        raise UserError("chunked features support --kernel=linear --nonormalize --solver=scipy only (a Gaussian "
                        "kernel needs whole feature rows); lower --num_filters or --train_examples")
    precision, spill = kernel_solve.plan_tile_solve(cfg.precision, n, n_test, available_memory())
    t0 = time.perf_counter()
    gram, k_test, d = kernel_solve.accumulate_linear_gram(
        chunks, n, n_test, dtype=np.float64 if precision == "float64" else np.float32, progress=log)
    features_seconds = time.perf_counter() - t0
    folder = tempfile.mkdtemp(prefix="rethink_tf-gram-", dir=spill_dir) if spill else None
    try:
        if spill:
            log(f"K tiles ({kernel_solve.tiles_elements(n) * 4 / 2**30:.1f} GiB) spilled to {folder} to leave RAM "
                f"for the {precision} factor")
            gram.spill(folder)
        y = _one_hot(labels, num_classes)
        alpha, info = _solve_checked(cfg, gram, y, labels, precision, precision == "float64", log)
        k_alpha = info.pop("k_alpha")
    finally:
        if folder:
            shutil.rmtree(folder, ignore_errors=True)
    # K_test is float32 (1.9 GB at 10,000 × 50,000): cast block by block, never whole (that copy would be 3.7 GB)
    test_scores = np.concatenate([k_test[i:i + 1024].astype(np.float64) @ alpha for i in range(0, n_test, 1024)])
    metrics = _errors_and_metrics(cfg, labels, test_labels, alpha, k_alpha, test_scores, y, n, n_test, d)
    metrics["seconds"] = time.perf_counter() - t0
    metrics["peak_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return metrics, {**info, "kernel": "linear", "features_and_gram_seconds": features_seconds,
                     "gram_storage": "float32 tiles accumulated over filter chunks" + (", spilled to disk" if spill
                                                                                       else "")}


def run(cfg, workdir, log=print):
    """Loads data, applies features and corruption, solves, and writes <workdir>/<run>/results.json."""
    from rethink_tf import results
    from rethink_tf.linear import features
    from rethink_tf.data import corruption, sources

    if cfg.precision not in PRECISIONS:
        raise UserError(f"unknown precision {cfg.precision!r}; use one of {PRECISIONS}")
    if cfg.solver not in SOLVERS:
        raise UserError(f"unknown solver {cfg.solver!r}; use one of {SOLVERS}")
    Kernel(cfg.kernel, cfg.gamma, cfg.degree, cfg.coef0)  # validate before any work
    if cfg.features not in FEATURES:
        raise UserError(f"unknown features {cfg.features!r}; known: {', '.join(FEATURES)}")
    run_dir = os.path.join(workdir, cfg.name())
    path = os.path.join(run_dir, results.RESULTS)
    if os.path.exists(path) and results.valid_results(path, kind="kernel"):
        stored = results.read_json(path)["config"]
        if any(stored.get(k) != v for k, v in cfg.to_dict().items() if k not in KERNEL_NON_IDENTITY_FIELDS):
            raise UserError(f"{run_dir} holds a kernel run with another config; choose another --run_name or "
                            "--workdir")
        log(f"{run_dir}: already complete")  # a rerun of a sweep does not solve the system again
        return path
    corr = corruption.make(cfg.corrupt, cfg.corrupt_prob, cfg.corrupt_seed)
    if corr.touches_pixels:
        raise UserError("kernel runs support label corruptions only (none, labels, random_labels)")
    train = sources.load(cfg.dataset, "train", cfg.data_dir, cfg.source, cfg.train_examples, download=cfg.download)
    test = sources.load(cfg.dataset, "test", cfg.data_dir, cfg.source, cfg.test_examples, download=cfg.download)
    if train.arrays is None:
        raise UserError(f"kernel runs need an in-memory dataset; {cfg.dataset} is streamed")
    labels = np.asarray(corruption.corrupt_labels(corr, train.arrays["label"], train.arrays["key"], "train"))
    log(f"features={cfg.features} on {train.size} train / {test.size} test {cfg.dataset} images")
    d = features.dimension(cfg.features, train.arrays["image"].shape[1:], cfg.num_filters)
    if cfg.features == "random_conv":  # the filter bank is drawn whole (float64, then float32): refuse up front
        bank = features.bank_bytes(train.arrays["image"].shape[-1], cfg.num_filters)
        if bank > 0.8 * available_memory():
            raise UserError(f"--num_filters={cfg.num_filters:,} needs a {bank / 2**30:,.1f} GiB filter bank; this "
                            f"process may allocate {available_memory() / 2**30:,.1f} GiB: use fewer filters")
    if cfg.features == "random_conv" and (train.size + test.size) * d * 8 > WHOLE_FEATURES_MAX_BYTES:
        log(f"{d:,} features x {train.size + test.size:,} images would be "
            f"{(train.size + test.size) * d * 8 / 2**30:.0f} GiB: accumulating the linear kernel over filter chunks")
        chunks = zip(random_conv_chunks(train.arrays["image"], cfg.num_filters, cfg.seed),
                     random_conv_chunks(test.arrays["image"], cfg.num_filters, cfg.seed))
        metrics, info = fit_and_evaluate_chunked(cfg, chunks, train.size, test.size, labels, test.arrays["label"],
                                                 train.spec.num_classes, log)
    else:
        x_train = feature_map(train.arrays["image"], cfg.features, cfg.num_filters, cfg.seed)
        x_test = feature_map(test.arrays["image"], cfg.features, cfg.num_filters, cfg.seed)
        metrics, info = fit_and_evaluate(cfg, x_train, labels, x_test, test.arrays["label"],
                                         train.spec.num_classes, log)
    record = {"schema_version": results.SCHEMA_VERSION, "kind": "kernel", "status": "completed",
              "config": cfg.to_dict(), "metrics": metrics, "solver": info, "env": results.environment(),
              "warnings": info.get("warnings", []),
              "corruption": {"train_labels": corruption.label_summary(corr, train.arrays["label"],
                                                                      train.arrays["key"])}}
    results.write_json(os.path.join(run_dir, results.CONFIG), cfg.to_dict())
    results.write_json(path, record)
    log(f"train error {metrics['train_error']:.4f}, test error {metrics['test_error']:.4f}, residual "
        f"{metrics['residual']:.2e}, norm {metrics['norm']:.1f}, {metrics['seconds']:.1f} s -> {path}")
    return path
