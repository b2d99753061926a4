"""Complexity measures of a trained network (beyond the paper; `--measures`, or `compute` on any Keras model).

Why: §2.2 and §6 of the paper conclude that neither model family nor regularization explains why the same network
generalizes on true labels and memorizes random ones, and call for a measure of complexity that does. The follow-up
literature proposes such measures and evaluates them exactly on the paper's experiment (true → random labels):

* norms per layer (Frobenius, spectral, Bartlett's (2,1) norm) and their products, and Bartlett, Foster and
  Telgarsky (2017)'s spectral complexity R_A = Π ||A_i||_σ · (Σ ||A_i^T||_{2,1}^{2/3} / ||A_i||_σ^{2/3})^{3/2};
* the PAC-Bayes quantity of Neyshabur, Bhojanapalli and Srebro (2018), Π ||W_i||_σ² · Σ ||W_i||_F² / ||W_i||_σ²
  (without its depth, width and log constants);
* the distance from the initialization (Nagarajan and Kolter 2019; Neyshabur et al. 2017);
* the margin distribution on the training set (on the labels trained on) and Bartlett et al.'s normalized margin
  γ / (R_A · ||X||_F / n);
* the Frobenius norm of the input-output Jacobian of the softmax on test points (Novak et al. 2018);
* sharpness: the largest eigenvalue of the training loss's Hessian (Keskar et al. 2017 relate flat minima to
  generalization), by Lanczos on Hessian-vector products.

Layers: every Dense and convolution kernel (a k×k convolution's kernel reshaped to (k·k·c_in) × c_out, as Neyshabur
et al. 2017 and Jiang et al. 2020 do; its operator norm as a convolution differs). Biases and BatchNorm's scales are
not in the norm products (for a BatchNorm network the kernels' scale is free, so the products measure little there;
the margins, Jacobian and sharpness still apply). Everything runs on the weights given, in inference mode.
"""

import math
import time

import numpy as np

JACOBIAN_POINTS = 256  # test points for the input Jacobian (Novak et al. use 2,000-10,000 at CIFAR size)
SHARPNESS_EXAMPLES = 1024  # training examples in the loss whose Hessian is probed
MAX_HESSIAN_PRODUCTS = 200  # Lanczos' budget of Hessian-vector products over SHARPNESS_EXAMPLES (typically ~30)
MARGIN_QUANTILES = (0.05, 0.1, 0.25, 0.5, 0.75, 0.9)


def kernel_matrices(model):
    """[(layer name, 2-D kernel as NumPy)] of every Dense and convolution layer, in the model's order."""
    import keras

    from rethink_tf import models

    out = []
    for layer in models.all_layers(model):
        if isinstance(layer, (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)):
            kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float64)
            out.append((layer.name, kernel.reshape(-1, kernel.shape[-1])))
    return out


def spectral_norm(matrix, tol=1e-10, max_iterations=1000):
    """The largest singular value, by power iteration on M^T M (a GPU-friendly matrix-vector loop; the tests check
    it against NumPy's SVD)."""
    m = np.asarray(matrix, np.float64)
    if not m.size or not np.any(m):
        return 0.0
    small = m if m.shape[0] >= m.shape[1] else m.T  # iterate in the smaller dimension
    v = np.random.default_rng(0).standard_normal(small.shape[1])
    v /= np.linalg.norm(v)
    sigma = 0.0
    for _ in range(max_iterations):
        w = small.T @ (small @ v)
        norm = np.linalg.norm(w)
        if norm == 0.0:
            return 0.0
        v = w / norm
        new = math.sqrt(norm)
        if abs(new - sigma) <= tol * new:
            return new
        sigma = new
    return sigma


def layer_norms(model, initial=None):
    """Per kernel: Frobenius, spectral and (2,1) norm (Σ over output units of the L2 norm of its incoming weights,
    Bartlett et al.'s ||A^T||_{2,1} for A = W^T), and with `initial` (the same model's weights at initialization,
    a list in model.get_weights() order or a model) the Frobenius distance from it."""
    kernels = kernel_matrices(model)
    start = dict(kernel_matrices(initial)) if initial is not None else {}
    rows = []
    for name, w in kernels:
        row = {"layer": name, "shape": list(w.shape), "frobenius": float(np.linalg.norm(w)),
               "spectral": spectral_norm(w), "l21": float(np.linalg.norm(w, axis=0).sum())}
        if name in start:
            row["distance_from_init"] = float(np.linalg.norm(w - start[name]))
        rows.append(row)
    return rows


def norm_summary(rows):
    """Products and complexities over the layers of layer_norms (logs base 10: products of 100 layers overflow)."""
    spec = np.array([r["spectral"] for r in rows], np.float64)
    frob = np.array([r["frobenius"] for r in rows], np.float64)
    l21 = np.array([r["l21"] for r in rows], np.float64)
    if not len(rows) or np.any(spec <= 0):
        return {}
    log_spec = float(np.sum(np.log10(spec)))
    ratio_sum = float(np.sum(frob ** 2 / spec ** 2))
    bartlett_sum = float(np.sum(l21 ** (2 / 3) / spec ** (2 / 3)))
    out = {"kernels": len(rows), "log10_product_frobenius": float(np.sum(np.log10(frob))),
           "log10_product_spectral": log_spec, "sum_frobenius_sq_over_spectral_sq": ratio_sum,
           "log10_spectral_complexity": log_spec + 1.5 * math.log10(bartlett_sum),
           "log10_pac_bayes_complexity": 2 * log_spec + math.log10(ratio_sum)}
    if all("distance_from_init" in r for r in rows):
        out["distance_from_init"] = float(math.sqrt(sum(r["distance_from_init"] ** 2 for r in rows)))
        out["relative_distance_from_init"] = out["distance_from_init"] / float(np.sqrt(np.sum(frob ** 2)))
    return out


def margins(logits, labels):
    """γ_i = f(x_i)[y_i] − max_{j≠y_i} f(x_i)[j] on the logits (negative: misclassified)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    n = np.arange(len(labels))
    true = logits[n, labels]
    others = logits.copy()
    others[n, labels] = -np.inf
    return true - others.max(axis=1)


def margin_summary(gammas, log10_scale=None):
    """Quantiles of the margins, and of γ / scale (Bartlett et al.'s normalization, scale = R_A ||X||_F / n, given
    as its log10: R_A of a deep network can exceed float range; a normalized margin below ~1e-300 reads 0)."""
    out = {"examples": int(len(gammas)), "fraction_negative": float(np.mean(gammas < 0)),
           "quantiles": {f"{q:g}": float(np.quantile(gammas, q)) for q in MARGIN_QUANTILES}}
    if log10_scale is not None:
        out["normalized_quantiles"] = {f"{q:g}": float(np.quantile(gammas, q)) * 10.0 ** -log10_scale
                                       for q in MARGIN_QUANTILES}
        out["log10_normalization"] = log10_scale
    return out


def _first_images(dataset, limit):
    """The first `limit` images of a dataset of (image, label) batches, as one NumPy array."""
    xs, n = [], 0
    for x, _ in dataset:
        xs.append(np.asarray(x))
        n += len(xs[-1])
        if n >= limit:
            break
    return np.concatenate(xs)[:limit]


JACOBIAN_EXACT_CLASSES = 16  # up to this many classes the whole Jacobian; beyond, a Gaussian-projection estimate
JACOBIAN_PROJECTIONS = 16


def input_jacobian_norms(model, images, batch_size=32, seed=0):
    """||∂ softmax(f(x)) / ∂x||_F per image (Novak et al. 2018), in inference mode. With more than
    JACOBIAN_EXACT_CLASSES classes (ImageNet's 1,000) the full Jacobian is 1,000 backward passes and 1 GB per
    image: it is estimated instead as sqrt(mean over JACOBIAN_PROJECTIONS Gaussian vectors v of ||vᵀJ||²), which
    is unbiased for ||J||_F² (E[vvᵀ] = I)."""
    import tensorflow as tf

    images = np.asarray(images, np.float32)
    classes = int(model.output_shape[-1])
    per_image = classes * int(np.prod(images.shape[1:])) if classes <= JACOBIAN_EXACT_CLASSES else 0
    batch = max(1, min(batch_size, int(2e8 // per_image))) if per_image else batch_size  # <= 0.8 GB Jacobian

    @tf.function(reduce_retracing=True)
    def exact(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            probs = tf.nn.softmax(tf.cast(model(x, training=False), tf.float32))
        jac = tape.batch_jacobian(probs, x)  # (b, classes, *input)
        return tf.reduce_sum(tf.reshape(jac, [tf.shape(jac)[0], -1]) ** 2, axis=1)

    @tf.function(reduce_retracing=True)
    def projected(x, v):  # ||vᵀ J||² per image for one Gaussian v per image
        with tf.GradientTape() as tape:
            tape.watch(x)
            probs = tf.nn.softmax(tf.cast(model(x, training=False), tf.float32))
            dot = tf.reduce_sum(probs * v)
        g = tape.gradient(dot, x)
        return tf.reduce_sum(tf.reshape(g, [tf.shape(g)[0], -1]) ** 2, axis=1)

    rng = np.random.default_rng(seed)
    out = []
    for i in range(0, len(images), batch):
        x = tf.constant(images[i:i + batch])
        if per_image:
            out.append(exact(x).numpy())
        else:
            draws = [projected(x, tf.constant(rng.standard_normal((len(images[i:i + batch]), classes)), tf.float32))
                     .numpy() for _ in range(JACOBIAN_PROJECTIONS)]
            out.append(np.mean(draws, axis=0))
    return np.sqrt(np.concatenate(out).astype(np.float64))


def top_hessian_eigenvalue(model, images, labels, max_products=MAX_HESSIAN_PRODUCTS, batch_size=256, tol=1e-4):
    """The largest eigenvalue of the Hessian of the mean cross-entropy over (images, labels) with respect to the
    trainable weights (regularizers not included), in inference mode: Lanczos (SciPy's eigsh; plain power
    iteration stalls when the top two eigenvalues are close) on exact Hessian-vector products (double
    backpropagation). Returns (eigenvalue, Hessian-vector products used)."""
    import tensorflow as tf
    from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

    weights = model.trainable_weights
    shapes = [tuple(w.shape) for w in weights]
    sizes = [int(np.prod(s)) for s in shapes]
    n = len(labels)

    @tf.function(reduce_retracing=True)
    def hvp_batch(x, y, vector):
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                logits = tf.cast(model(x, training=False), tf.float32)
                loss = tf.reduce_sum(tf.keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            grads = inner.gradient(loss, weights)
            dot = tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32) * v) for g, v in zip(grads, vector)])
        return outer.gradient(dot, weights)

    calls = [0]

    def hvp(flat):
        calls[0] += 1
        parts = np.split(np.asarray(flat, np.float64).ravel(), np.cumsum(sizes)[:-1])
        vector = [tf.constant(p.reshape(s), tf.float32) for p, s in zip(parts, shapes)]
        total = np.zeros(sum(sizes), np.float64)
        for i in range(0, n, batch_size):
            part = hvp_batch(tf.constant(images[i:i + batch_size], tf.float32),
                             tf.constant(labels[i:i + batch_size], tf.int64), vector)
            total += np.concatenate([np.asarray(g, np.float64).ravel() for g in part])
        return total / n

    operator = LinearOperator((sum(sizes), sum(sizes)), matvec=hvp, dtype=np.float64)
    start = np.random.default_rng(0).standard_normal(sum(sizes))
    try:
        value = eigsh(operator, k=1, which="LA", v0=start, tol=tol, ncv=min(sum(sizes), 20),
                      maxiter=max(1, max_products // 20), return_eigenvectors=False)[0]
    except ArpackNoConvergence as e:  # the best estimate so far, when there is one
        if not len(e.eigenvalues):
            return float("nan"), calls[0]
        value = e.eigenvalues[0]
    return float(value), calls[0]


def compute(model, train, test, initial=None, jacobian_points=JACOBIAN_POINTS,
            sharpness_examples=SHARPNESS_EXAMPLES, max_products=MAX_HESSIAN_PRODUCTS):
    """Every measure of this module for one model; a JSON-able dict (results.json's "measures").

    Args:
      model: a Keras model giving logits (its current weights are measured).
      train: the training set as trained on: a dataset of (image, label) batches, unaugmented (margins over all of
        it; the Hessian over its first `sharpness_examples`).
      test: the test set, same form (the Jacobian at its first `jacobian_points`).
      initial: the same architecture at its initialization (a model), for the distance from it; None: not measured.
    """
    import keras

    start = time.perf_counter()
    rows = layer_norms(model, initial)
    out = {"layers": rows, **norm_summary(rows)}
    gammas, kept_x, kept_y, square_sum = [], [], [], 0.0
    kept = 0
    for x, y in train:  # one pass, keeping one margin per example and only the Hessian's images
        x = np.asarray(x)
        y = np.asarray(y)
        y = y.argmax(axis=-1) if y.ndim == 2 else y  # one-hot (label smoothing)
        gammas.append(margins(keras.ops.convert_to_numpy(model(x, training=False)), y))
        square_sum += float(np.sum(x.astype(np.float64) ** 2))
        if kept < sharpness_examples:
            kept_x.append(x[:sharpness_examples - kept])
            kept_y.append(y[:sharpness_examples - kept])
            kept += len(kept_x[-1])
    gammas = np.concatenate(gammas)
    log10_scale = None
    if "log10_spectral_complexity" in out:  # Bartlett et al.: γ / (R_A ||X||_F / n), in logs (R_A may pass 1e308)
        log10_scale = out["log10_spectral_complexity"] + math.log10(math.sqrt(square_sum) / len(gammas))
    out["margins"] = margin_summary(gammas, log10_scale=log10_scale)
    tx = _first_images(test, jacobian_points)
    jac = input_jacobian_norms(model, tx)
    out["input_jacobian"] = {"points": int(len(jac)), "mean": float(jac.mean()), "std": float(jac.std()),
                             "median": float(np.median(jac)),
                             "method": "exact" if int(model.output_shape[-1]) <= JACOBIAN_EXACT_CLASSES else
                             f"estimate from {JACOBIAN_PROJECTIONS} Gaussian projections"}
    sx, sy = np.concatenate(kept_x), np.concatenate(kept_y)
    eigen, products = top_hessian_eigenvalue(model, sx, sy, max_products)
    out["sharpness"] = {"top_hessian_eigenvalue": eigen, "examples": int(len(sy)),
                        "hessian_vector_products": products}
    out["seconds"] = time.perf_counter() - start
    return out


SCALARS = {  # results.json measures key path -> axis label (the figure of measures against p)
    "log10_product_spectral": "log10 Π ||W||₂",
    "log10_spectral_complexity": "log10 spectral complexity R_A",
    "distance_from_init": "||θ − θ₀||",
    "margins.normalized_quantiles.0.5": "median normalized margin",
    "input_jacobian.mean": "mean ||∂softmax/∂x||_F (test)",
    "sharpness.top_hessian_eigenvalue": "top Hessian eigenvalue",
}


def scalar(record, path):
    """A measure by dotted path ("margins.quantiles.0.5": the last part is the quantile's key), or None."""
    node = record
    parts = path.split(".")
    if parts[:2] in (["margins", "quantiles"], ["margins", "normalized_quantiles"]):
        parts = parts[:2] + [".".join(parts[2:])]
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node if isinstance(node, (int, float)) else None
