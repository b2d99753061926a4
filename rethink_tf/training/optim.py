"""The recipe's optimizer: SGD (or RMSProp) with momentum, a staircase learning-rate decay, and the weight average.

* SGD with momentum 0.9 (Appendix A) and a staircase exponential decay, lr = lr0 · decay^floor(step / period).
  The period is given in *examples seen* and turned into steps with the floor, as the TF CIFAR-10 code of the
  paper's era does (`decay_steps = int(50000 / 128 * epochs_per_decay)` = 390): with `drop_remainder` an epoch is
  also 390 steps, so decay k falls exactly at the start of epoch k+1, "0.95 per training epoch" (Appendix A).
* Weight decay is in the models (TF l2_loss semantics, through momentum); the optimizer's decoupled `weight_decay`
  is never used.
* `ema_decay` keeps a moving average of the trainable weights inside the optimizer (the TF inception package
  evaluates a 0.9999 average); it never overwrites the trained weights: `ema_weights` swaps it in for evaluation.

Keras exposes neither the schedule of a compiled optimizer nor its averaged variables publicly; the two private
reads below (`_learning_rate`, `_trainable_variables` / `_model_variables_moving_average`) are the only ones in
the package and are why setup.py bounds Keras to the versions tested.
"""

import keras

from rethink_tf.errors import UserError


def steps_per_decay(lr_decay_examples, batch_size):
    """Optimizer steps per LR decay period: floor(examples / batch), e.g. 50,000 / 128 -> 390 (TF's int())."""
    return max(1, lr_decay_examples // batch_size)


def make_schedule(cfg):
    """The staircase exponential decay of a resolved TrainConfig: a function of the optimizer step."""
    return keras.optimizers.schedules.ExponentialDecay(
        cfg.learning_rate, decay_steps=steps_per_decay(cfg.lr_decay_examples, cfg.batch_size),
        decay_rate=cfg.lr_decay, staircase=True)


def make_optimizer(cfg):
    """The optimizer of a resolved TrainConfig, with its schedule and, if asked, a weight moving average."""
    ema = {"use_ema": True, "ema_momentum": cfg.ema_decay} if cfg.ema_decay else {}
    if cfg.optimizer == "sgd":
        opt = keras.optimizers.SGD(make_schedule(cfg), momentum=cfg.momentum, **ema)
    elif cfg.optimizer == "rmsprop":  # the TF inception package: decay 0.9, momentum 0.9, epsilon 1.0
        opt = ReferenceRMSprop(make_schedule(cfg), rho=0.9, momentum=cfg.momentum, epsilon=1.0,
                               initial_ms=cfg.rmsprop_initial_ms, **ema)
    else:
        raise UserError(f"unknown optimizer {cfg.optimizer!r}; use sgd or rmsprop")
    if cfg.ema_decay:
        # Keras' fit() ends by overwriting the weights with the average (finalize_variable_values). That would
        # corrupt a run trained in two fit() calls (a mid-epoch resume) and the checkpoint; we swap explicitly
        # for evaluation instead (ema_weights).
        opt.finalize_variable_values = lambda var_list: None
    return opt


class ReferenceRMSprop(keras.optimizers.RMSprop):
    """RMSProp as TF1's `tf.train.RMSPropOptimizer` (the TF inception package's optimizer, Table 2) runs it: the mean
    square accumulator starts at `initial_ms` = 1 (--rmsprop_initial_ms), not at Keras' 0. The update is otherwise the same, ms ← ρ·ms + (1 − ρ)·g²,
    mom ← μ·mom + lr·g / sqrt(ms + ε), w ← w − mom; starting at 0 makes the first updates lr·g/sqrt((1 − ρ)·g² + ε),
    up to 3× larger with the reference's ε = 1."""

    def __init__(self, *args, initial_ms=1.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.initial_ms = 1.0 if initial_ms is None else float(initial_ms)

    def add_optimizer_variables(self, trainable_variables, name, initializer="zeros"):
        if name == "velocity":  # RMSprop's mean square accumulator
            initializer = keras.initializers.Constant(self.initial_ms)
        return super().add_optimizer_variables(trainable_variables, name, initializer=initializer)


def lr_schedule(optimizer):
    """step -> the learning rate a compiled optimizer uses at that step: its schedule (the recipe's staircase
    decay, or a user's), or its constant rate."""
    lr = optimizer._learning_rate  # Keras 3 keeps the schedule here; .learning_rate evaluates it at `iterations`
    if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
        return lr
    value = float(keras.ops.convert_to_numpy(lr))
    return lambda step: value


class ema_weights:  # noqa: N801 (a context manager used as `with ema_weights(model):`)
    """Within the block the model's trainable weights are the optimizer's moving averages (no-op without EMA)."""

    def __init__(self, model):
        # the optimizer averages the variables it was built with: the model's trainable variables, in that order
        self.opt, self.variables, self.saved = model.optimizer, model.trainable_variables, None

    def __enter__(self):
        if getattr(self.opt, "use_ema", False):
            self.saved = [v.numpy() for v in self.variables]
            for v, avg in zip(self.variables, self.opt._model_variables_moving_average):
                v.assign(avg)

    def __exit__(self, *exc):
        if self.saved is not None:
            for v, value in zip(self.variables, self.saved):
                v.assign(value)
