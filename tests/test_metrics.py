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
