"""The running training accuracy that every step updates, in the fewest ops.

The paper's curves are train (and test) accuracy per epoch; every step adds its batch to the running accuracy.
Keras' SparseCategoricalAccuracy / CategoricalAccuracy reach the same number through its generic metric wrappers
(rank checks, masks, sample-weight broadcasting), ops that each replica runs every step: under MirroredStrategy on
2 logical CPUs they cost about 0.1 ms of a tiny model's 0.8 ms step (an exploratory run with
benchmarks/step_overhead.py's model, not a committed output). `Accuracy` computes the same value — the fraction
of examples whose arg-max logit is the label, the first index on ties as tf.argmax breaks them — in the same two float32 variables (total, count: additive, which the mid-epoch checkpoint's
running totals rely on). Tested against Keras' metrics, ties and sample weights included. One difference: Keras'
ops.argmax ranks +0.0 above −0.0, tf.argmax calls them a tie (first index); logits that are exactly ±0.0 at the top
do not occur in training.
"""

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="rethink_tf")
class Accuracy(keras.metrics.Metric):
    """Running accuracy of logits against integer labels, or against one-hot labels with `one_hot=True` (label
    smoothing trains on one-hot targets; their arg-max is the class)."""

    def __init__(self, name="accuracy", one_hot=False, dtype="float32"):
        super().__init__(name=name, dtype=dtype)
        self.one_hot = one_hot
        self.total = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype=self.dtype, name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        predicted = tf.argmax(y_pred, axis=-1, output_type=tf.int32)
        if self.one_hot:
            true = tf.argmax(y_true, axis=-1, output_type=tf.int32)
        else:  # [b] or [b, 1] integer (or float-coded) labels
            true = tf.reshape(tf.cast(y_true, tf.int32), tf.shape(predicted))
        hit = tf.cast(tf.equal(true, predicted), self.dtype)
        if sample_weight is None:
            total, count = tf.reduce_sum(hit), tf.cast(tf.size(hit), self.dtype)
        else:
            weight = tf.reshape(tf.cast(sample_weight, self.dtype), tf.shape(hit))
            total, count = tf.reduce_sum(hit * weight), tf.reduce_sum(weight)
        self.total.assign_add(total)
        self.count.assign_add(count)

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"name": self.name, "one_hot": self.one_hot, "dtype": self.dtype}


def running_results(model, strategy):
    """`model.get_metrics_result()` under `strategy`, with every metric variable all-reduced in ONE collective per
    dtype (float32 only, for the package's metrics), for a tf.function in cross-replica context.

    Keras' read reduces each on-read metric variable by itself: four collectives for the loss and the accuracy,
    which under a multi-worker strategy run one after another (2 local workers: 4.4 ms per read; packed, 1.1 ms;
    exploratory timings with benchmarks/step_overhead.py's tiny model). Here each replica packs its local values
    into one vector, the vector is summed across replicas once, and each metric's own `result()` runs on the
    summed values (`stateless_result`), so the numbers are Keras' own: the same sums of the same values (tested
    against get_metrics_result on 2 replicas). A metric variable aggregated otherwise than by sum or mean, or a
    non-float one averaged (where the quotient's type and rounding would be ours, not Keras'), falls back to
    Keras' read.
    """
    metrics = model.metrics
    variables = [v for m in metrics for v in m.variables]
    if not variables or any(v.aggregation not in ("sum", "mean")
                            or (v.aggregation == "mean" and not tf.as_dtype(v.dtype).is_floating) for v in variables):
        return model.get_metrics_result()
    groups = {}  # dtype -> indices into variables
    for i, v in enumerate(variables):
        groups.setdefault(v.dtype, []).append(i)

    def local_sums():
        ctx = tf.distribute.get_replica_context()
        return {dtype: ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.concat(
                    [tf.reshape(tf.convert_to_tensor(variables[i].value), [-1]) for i in idx], axis=0))
                for dtype, idx in groups.items()}

    summed = {d: strategy.experimental_local_results(t)[0] for d, t in strategy.run(local_sums).items()}
    values = [None] * len(variables)
    for dtype, idx in groups.items():
        start = 0
        for i in idx:
            v = variables[i]
            size = _size(v.shape)
            value = tf.reshape(summed[dtype][start:start + size], v.shape)
            if v.aggregation == "mean":
                value = value / tf.cast(strategy.num_replicas_in_sync, value.dtype)
            values[i], start = value, start + size
    out, start = {}, 0
    for m in metrics:
        n = len(m.variables)
        result = m.stateless_result(values[start:start + n])
        start += n
        out.update(result if isinstance(result, dict) else {m.name: result})
    return out


def _size(shape):
    """Elements of a fully defined shape (a tuple or TensorShape; () -> 1)."""
    size = 1
    for d in shape:
        size *= int(d)
    return size
