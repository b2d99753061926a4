"""Per-example training dynamics (--per_example, beyond the paper): the measures against a hand-built history, and
a real run's export against the run's own final evaluation and the archive's file order."""

import dataclasses
import os

import numpy as np
import pytest

from conftest import write_cifar_binary
from rethink_tf import dynamics, results
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.reporting import figures
from rethink_tf.train import run

# 5 examples over epochs 1..4: predicted classes, the labels trained on and the original labels
PREDICTIONS = np.array([[0, 1, 2, 9, 4],
                        [0, 9, 2, 3, 4],
                        [1, 1, 2, 3, 7],
                        [0, 1, 5, 3, 7]])
TRAINED = np.array([0, 1, 2, 3, 7])  # example 4's label was changed (4 -> 7), example 2's too (5 -> 2)
CLEAN = np.array([0, 1, 5, 3, 4])


def test_first_learned_epoch_and_forgetting_events_by_hand():
    correct = PREDICTIONS == TRAINED
    # ex 0: right, right, wrong, right -> learned at 1, forgotten once
    # ex 1: right, wrong, right, right -> learned at 1, forgotten once
    # ex 2: right, right, right, wrong -> learned at 1, forgotten once (at the last epoch)
    # ex 3: wrong, right, right, right -> learned at 2, never forgotten
    # ex 4: wrong, wrong, right, right -> learned at 3, never forgotten
    np.testing.assert_array_equal(dynamics.first_learned_epoch(correct, [1, 2, 3, 4]), [1, 1, 1, 2, 3])
    np.testing.assert_array_equal(dynamics.forgetting_events(correct), [1, 1, 1, 0, 0])
    never = np.zeros((3, 2), bool)
    never[1, 1] = True
    np.testing.assert_array_equal(dynamics.first_learned_epoch(never, [5, 6, 7]), [0, 6])  # 0: never learned
    curves = dynamics.changed_curves(PREDICTIONS, TRAINED, CLEAN, TRAINED != CLEAN)
    # changed examples 2 and 4, per epoch: memorized {2} {2} {2, 4} {4}; original {4} {4} {} {2}
    assert curves["memorized"] == [0.5, 0.5, 1.0, 0.5]
    assert curves["predicts_original"] == [0.5, 0.5, 0.0, 0.5]
    assert curves["other"] == [0.0, 0.0, 0.0, 0.0]


def test_export_reads_the_epoch_files_and_clear_drops_retrained_epochs(tmp_path):
    d = str(tmp_path)
    for e, p in enumerate(PREDICTIONS, start=1):
        dynamics.save_epoch(d, e, p, num_classes=10)
    arrays = {"key": np.arange(5) * 3, "clean": CLEAN, "trained": TRAINED, "index": np.array([4, 0, 3, 1, 2])}
    history = [{"epoch": e} for e in (1, 2, 3, 4, 5)]  # epoch 5 trained without --per_example
    s = dynamics.export(d, history, arrays)
    assert s["epochs"] == [1, 2, 3, 4] and s["epochs_missing"] == [5]
    assert s["changed"]["examples"] == 2 and s["changed"]["forgetting_events_mean"] == 0.5
    assert s["intact"]["first_learned_epoch_median"] == 1.0 and s["all"]["never_learned_fraction"] == 0.0
    a = dynamics.read_export(d)
    np.testing.assert_array_equal(a["trainset_predictions"], PREDICTIONS)
    np.testing.assert_array_equal(a["trainset_correctness"], PREDICTIONS == TRAINED)
    assert a["trainset_mask"].all() and a["trainset_mask"].shape == (4, 5)
    np.testing.assert_array_equal(a["source_index"], arrays["index"])
    dynamics.clear(d, 2)  # a resume from epoch 2's checkpoint retrains 3 and 4
    assert sorted(os.listdir(os.path.join(d, dynamics.FOLDER))) == ["epoch_0001.npy", "epoch_0002.npy"]


def test_a_run_with_per_example_exports_what_its_model_predicts(tmp_path):
    data_dir = tmp_path / "cifar"
    data_dir.mkdir()
    _, batches = write_cifar_binary(str(data_dir), per_batch=12, test=10)  # 60 train images, file order known
    cfg = TrainConfig(model="mlp_1x512", epochs=3, batch_size=12, tensorboard=False, learning_rate=0.05,
                      per_example=True, data=DataConfig(dataset="cifar10", data_dir=str(data_dir), corrupt="flip",
                                                        corrupt_prob=0.25))
    path = run(cfg, str(tmp_path / "runs"), verbose=0)
    r = results.read_json(path)
    a = dynamics.read_export(os.path.dirname(path))
    assert r["per_example"]["epochs"] == [1, 2, 3] and a["trainset_predictions"].shape == (3, 60)
    assert a["changed"].sum() == 15  # flip: exactly 25% of 60
    # the last epoch's predictions are the final model's: its separately evaluated training accuracy agrees
    assert a["trainset_correctness"][-1].mean() == pytest.approx(r["metrics"]["train_accuracy"], abs=1e-6)
    # the history's changed/intact accuracies are the same predictions, split
    last = r["history"][-1]
    assert a["trainset_correctness"][-1][a["changed"]].mean() == pytest.approx(last["train_accuracy_changed"])
    assert "train_predicts_clean_changed" in last
    # source_index points back into the archive's file order: the clean labels are the files' labels
    file_labels = np.concatenate([batches[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    np.testing.assert_array_equal(file_labels[a["source_index"]], a["clean_labels"])
    np.testing.assert_array_equal(a["labels"] != a["clean_labels"], a["changed"])
    # the figure draws from results.json and per_example.npz
    paths = figures.dynamics([{**r, "run_dir": os.path.dirname(path)}], str(tmp_path / "fig"))
    assert paths and all(os.path.getsize(p) > 0 for p in paths)
    # off by default: no folder, no record, and the same run name (it records, it does not change training)
    plain = dataclasses.replace(cfg, per_example=False)
    assert plain.name() == cfg.name()
