"""The package's running accuracy (training/metrics.py) against Keras' own accuracy metrics, which it replaces for
speed: the same value on integer and one-hot labels, ties, [b, 1] labels and sample weights, accumulated over
several batches, and the same total/count variables the mid-epoch checkpoint adds to."""

import keras
import numpy as np
import pytest

from rethink_tf.training import metrics


def _batches(rng, one_hot):
    out = []
    for n in (7, 16, 1):
        logits = rng.normal(size=(n, 5)).astype(np.float32)
        logits[0, 1] = logits[0, 3] = logits[0].max() + 1.0  # a tie: the first index wins, as in tf.argmax
        labels = rng.integers(0, 5, n)
        labels[0] = 3
        y = np.eye(5, dtype=np.float32)[labels] * 0.9 + 0.02 if one_hot else labels  # smoothed one-hot targets
        out.append((y, logits, rng.uniform(0.1, 2.0, n).astype(np.float32)))
    return out


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_accuracy_equals_keras(one_hot, weighted):
    ours = metrics.Accuracy(one_hot=one_hot)
    keras_metric = keras.metrics.CategoricalAccuracy() if one_hot else keras.metrics.SparseCategoricalAccuracy()
    hits = weights = 0.0
    for y, logits, w in _batches(np.random.default_rng(0), one_hot):
        sw = w if weighted else None
        ours.update_state(y, logits, sample_weight=sw)
        keras_metric.update_state(y, logits, sample_weight=sw)
        true = y.argmax(1) if one_hot else y
        hits += float(((logits.argmax(1) == true) * (w if weighted else 1.0)).sum())  # NumPy twin
        weights += float(w.sum()) if weighted else len(true)
    assert float(ours.result()) == pytest.approx(float(keras_metric.result()), abs=1e-7)
    assert float(ours.result()) == pytest.approx(hits / weights, abs=1e-6)
    assert [float(v) for v in ours.variables] == pytest.approx([hits, weights], abs=1e-4)
    ours.reset_state()
    assert float(ours.result()) == 0.0


def test_accuracy_takes_column_labels_and_serializes():
    ours = metrics.Accuracy()
    ours.update_state(np.array([[2], [0]]), np.array([[0.0, 1.0, 3.0], [1.0, 0.0, 0.0]], np.float32))
    assert float(ours.result()) == 1.0
    again = keras.metrics.deserialize(keras.metrics.serialize(metrics.Accuracy(one_hot=True)))
    assert isinstance(again, metrics.Accuracy) and again.one_hot and again.name == "accuracy"


RUNNING_RESULTS = r"""
import json, sys
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from rethink_tf.training import metrics


class Counted(keras.metrics.Metric):  # an int32 and a mean-aggregated variable: a second dtype group, a mean
    def __init__(self, name="counted"):
        super().__init__(name=name)
        self.n = self.add_variable(shape=(2,), initializer="zeros", dtype="int32", name="n")
        self.m = self.add_variable(shape=(), initializer="zeros", dtype="float32", aggregation="mean", name="m")

    def update_state(self, y_true, y_pred, sample_weight=None):
        self.n.assign_add(tf.stack([tf.size(y_true), 7]))
        self.m.assign_add(1.0)

    def result(self):
        return tf.cast(self.n[0] * 1000 + self.n[1], tf.float32) + self.m


out = {}
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
for classes in (10, 100):
    with strategy.scope():
        inputs = keras.Input((6,))
        model = keras.Model(inputs, keras.layers.Dense(classes)(inputs))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=keras.losses.SparseCategoricalCrossentropy(
            from_logits=True), metrics=[metrics.Accuracy(), keras.metrics.SparseTopKCategoricalAccuracy(5),
                                        Counted()])
        model.optimizer.build(model.trainable_variables)
    rng = np.random.default_rng(classes)
    x = rng.normal(size=(48, 6)).astype(np.float32)
    y = rng.integers(0, classes, 48)
    # different data on each replica: the running sums differ per replica, so a read of one replica is caught
    dist = iter(strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(8)))

    @tf.function
    def steps():
        for _ in range(6):
            strategy.run(model.train_step, args=(next(dist),))

    steps()
    packed = tf.function(lambda: metrics.running_results(model, strategy))()
    keras_read = tf.function(model.get_metrics_result)()
    locals_ = [[float(np.sum(v)) for v in strategy.experimental_local_results(model.metrics[0].variables[0].value)]]
    out[classes] = {"packed": {k: float(v) for k, v in packed.items()},
                    "keras": {k: float(v) for k, v in keras_read.items()}, "loss_totals": locals_}
print("RESULT" + json.dumps(out))
"""


def test_running_results_equal_keras_read_on_two_replicas():
    """The one-collective read of the running metrics (what the strategy.run loop logs) against Keras' own read of
    each on-read variable, after 6 steps on 2 replicas that saw different batches: the same numbers, exactly (the
    same two values summed), for the loss, the accuracy, top-5 and a metric with an int32 and a mean variable."""
    from conftest import run_result_script

    out = run_result_script(RUNNING_RESULTS)
    for classes in ("10", "100"):
        packed, keras_read = out[classes]["packed"], out[classes]["keras"]
        assert set(packed) == set(keras_read) == {"loss", "accuracy", "sparse_top_k_categorical_accuracy", "counted"}
        assert packed == keras_read
        totals = out[classes]["loss_totals"][0]
        assert totals[0] != totals[1]  # the replicas' running sums differ: reading one replica would be caught
        # 6 steps x 2 replicas of 4 examples and of 7; the mean variable: 6 on each replica, averaged (not summed)
        assert keras_read["counted"] == 48 * 1000 + 6 * 2 * 7 + 6
