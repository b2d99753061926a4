"""--init_from (beyond the paper: Maennel et al. 2020's pre-training on random labels): a run starts from another
finished run's final weights, checked against that run's checkpoint read separately; names and refusals."""

import dataclasses
import os
import shutil

import keras
import numpy as np
import pytest

from conftest import write_cifar_binary
from rethink_tf import models, results
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.errors import UserError
from rethink_tf.train import run
from rethink_tf.training import checkpoint


def test_a_run_starts_from_the_source_runs_final_weights_with_a_fresh_optimizer(tmp_path):
    data_dir = tmp_path / "cifar"
    data_dir.mkdir()
    write_cifar_binary(str(data_dir), per_batch=12, test=10)
    pre = TrainConfig(model="mlp_1x512", epochs=2, batch_size=12, tensorboard=False, learning_rate=0.05,
                      data=DataConfig(dataset="cifar10", data_dir=str(data_dir), corrupt="random_labels"))
    source = os.path.dirname(run(pre, str(tmp_path / "pre"), verbose=0))
    expected = models.build("mlp_1x512", (28, 28, 3), 10)
    expected.load_weights(os.path.join(source, checkpoint.CHECKPOINT))
    started = []

    class Start(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            started.append([w.numpy() for w in self.model.trainable_weights])
            started.append(int(self.model.optimizer.iterations.numpy()))

    fine = dataclasses.replace(pre, init_from=source, data=DataConfig(dataset="cifar10", data_dir=str(data_dir)))
    path = run(fine, str(tmp_path / "fine"), verbose=0, extra_callbacks=[Start()])
    for got, want in zip(started[0], [w.numpy() for w in expected.trainable_weights]):
        np.testing.assert_array_equal(got, want)
    assert started[1] == 0  # a fresh optimizer: the schedule starts again
    r = results.read_json(path)
    assert r["init_from"]["name"] == os.path.basename(source) and r["init_from"]["corrupt"] == "random_labels"
    assert r["metrics"]["steps_trained"] == 10
    scratch = dataclasses.replace(fine, init_from=None)
    assert "-init-" in fine.name() and fine.name() != scratch.name()
    assert fine.protocol() != scratch.protocol()  # never one figure curve or seed average with runs from scratch
    moved = tmp_path / "elsewhere" / os.path.basename(source)  # the same source found at another path
    shutil.copytree(source, moved)
    assert dataclasses.replace(fine, init_from=str(moved)).name() == fine.name()
    # refusals, each one line before training: not a finished run, another architecture
    with pytest.raises(UserError, match="no finished run there"):
        run(dataclasses.replace(fine, init_from=str(tmp_path / "nowhere")), str(tmp_path / "x"), verbose=0)
    with pytest.raises(UserError, match="trained mlp_1x512 at width 1; this run builds mlp_3x512"):
        run(dataclasses.replace(fine, model="mlp_3x512"), str(tmp_path / "y"), verbose=0)
    assert not os.path.exists(tmp_path / "x") and not os.path.exists(tmp_path / "y")  # nothing written
    assert results.read_json(os.path.join(os.path.dirname(path), "config.json"))["init_from_sha256"] == \
        r["init_from"]["sha256"]
    # an explicit run name that trained from scratch is not taken for a warm start (nor the reverse)
    named = dataclasses.replace(scratch, run_name="mine", epochs=1)
    run(named, str(tmp_path / "named"), verbose=0)
    with pytest.raises(UserError, match=r"the --init_from run \(None then, "):
        run(dataclasses.replace(named, init_from=source, measures=True), str(tmp_path / "named"), verbose=0)
