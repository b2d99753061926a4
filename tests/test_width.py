"""Capacity sweeps (--width, beyond the paper): parameter counts against the architectures' arithmetic written out
here, run names, refusals, a two-width sweep and its figure, and the Adam recipe of Nakkiran et al. 2020."""

import dataclasses
import os

import keras
import numpy as np
import pytest

from conftest import write_cifar_binary
from rethink_tf import models, results
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.errors import UserError
from rethink_tf.reporting import figures
from rethink_tf.train import run


def _mlp_count(h, depth=1, inputs=28 * 28 * 3, classes=10):
    return (inputs + 1) * h + (depth - 1) * (h + 1) * h + (h + 1) * classes


def _alexnet_count(c, f1, f2, classes=10):
    return (5 * 5 * 3 * c + c) + (5 * 5 * c * c + c) + (7 * 7 * c * f1 + f1) + (f1 * f2 + f2) + (f2 * classes + classes)


def _inception_count(w, classes=10):
    """Figure 3 with BN (conv without bias + BN beta): each conv k*k*cin*cout + cout."""
    def s(n):
        return max(1, round(n * w))

    total, ch = 0, 3

    def conv(k, cin, cout):
        return k * k * cin * cout + cout

    total += conv(3, ch, s(96))
    ch = s(96)
    for kind, *a in [("i", 32, 32), ("i", 32, 48), ("d", 80), ("i", 112, 48), ("i", 96, 64), ("i", 80, 80),
                     ("i", 48, 96), ("d", 96), ("i", 176, 160), ("i", 176, 160)]:
        if kind == "i":
            total += conv(1, ch, s(a[0])) + conv(3, ch, s(a[1]))
            ch = s(a[0]) + s(a[1])
        else:
            total += conv(3, ch, s(a[0]))
            ch = s(a[0]) + ch
    return total + ch * classes + classes


@pytest.mark.parametrize("w", [0.25, 1.0, 1.5])
def test_parameter_counts_follow_the_width(w):
    assert models.trainable_count(models.build("mlp_1x512", (28, 28, 3), 10, width_multiplier=w)) == _mlp_count(
        round(512 * w))
    assert models.trainable_count(models.build("mlp_3x512", (28, 28, 3), 10, width_multiplier=w)) == _mlp_count(
        round(512 * w), depth=3)
    assert models.trainable_count(models.build("small_alexnet", (28, 28, 3), 10, width_multiplier=w)) == \
        _alexnet_count(round(64 * w), round(384 * w), round(192 * w))
    assert models.trainable_count(models.build("small_inception", (28, 28, 3), 10, width_multiplier=w)) == \
        _inception_count(w)
    if w == 1.0:  # Table 1
        assert _inception_count(1.0) == 1_649_402 and _alexnet_count(64, 384, 192) == 1_387_786


def test_width_names_the_run_only_when_it_is_not_the_papers():
    paper = TrainConfig(model="mlp_1x512")
    assert dataclasses.replace(paper, width=1.0).resolved().name() == paper.resolved().name()
    half = dataclasses.replace(paper, width=0.5).resolved()
    assert half.name() != paper.resolved().name() and "-w0.5-" in half.name()
    with pytest.raises(UserError, match="--width does not apply to --model=inception_v3"):
        from rethink_tf.training.run import model_options

        model_options(TrainConfig(model="inception_v3", width=2.0))
    with pytest.raises(UserError, match="--momentum does not apply to --optimizer=adam"):
        TrainConfig(model="mlp_1x512", optimizer="adam", momentum=0.9).resolved()


def test_adam_is_kerass_adam_with_the_recipes_schedule():
    from rethink_tf.training import optim

    cfg = TrainConfig(model="mlp_1x512", optimizer="adam", learning_rate=1e-3, lr_decay=1.0).resolved()
    assert cfg.momentum is None
    opt = optim.make_optimizer(cfg)
    keras.utils.set_random_seed(0)
    w = keras.Variable(np.array([1.0, -2.0], np.float32))
    grads = [np.array([0.5, 0.25], np.float32), np.array([-1.0, 0.75], np.float32)]
    m = v = np.zeros(2)
    x = np.array([1.0, -2.0])
    for t, g in enumerate(grads, start=1):  # Kingma & Ba's update, Keras' epsilon placement (outside the sqrt)
        opt.apply_gradients([(g, w)])
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        lr = 1e-3 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
        x = x - lr * m / (np.sqrt(v) + 1e-7)
    np.testing.assert_allclose(w.numpy(), x, rtol=1e-6)


def test_a_two_width_sweep_records_its_parameters_and_draws_the_figure(tmp_path):
    data_dir = tmp_path / "cifar"
    data_dir.mkdir()
    write_cifar_binary(str(data_dir), per_batch=12, test=10)
    runs = []
    for width in (0.125, 0.25):
        for p in (0.0, 0.5):
            cfg = TrainConfig(model="mlp_1x512", epochs=2, batch_size=12, tensorboard=False, learning_rate=0.05,
                              width=width, data=DataConfig(dataset="cifar10", data_dir=str(data_dir),
                                                           corrupt="flip", corrupt_prob=p))
            runs.append(results.read_json(run(cfg, str(tmp_path / "runs"), verbose=0)))
    assert [r["metrics"]["trainable_parameters"] for r in runs] == [_mlp_count(64)] * 2 + [_mlp_count(128)] * 2
    assert len({r["config"]["width"] for r in runs}) == 2
    paths = figures.width_sweep(runs, str(tmp_path / "fig"))
    assert [os.path.basename(p) for p in paths] == ["width_sweep.png", "width_sweep.pdf"]
