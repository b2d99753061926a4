"""The recipe's optimizer: SGD (or RMSProp) with momentum, a staircase learning-rate decay, and the weight average.

* SGD with momentum 0.9 (Appendix A) and a staircase exponential decay, lr = lr0 · decay^floor(step / period).
  The period is given in *examples seen* and turned into steps with the floor, as the TF CIFAR-10 code of the
  paper's era does (`decay_steps = int(50000 / 128 * epochs_per_decay)` = 390): with `drop_remainder` an epoch is
  also 390 steps, so decay k falls exactly at the start of epoch k+1, "0.95 per training epoch" (Appendix A).
* Weight decay is in the models (TF l2_loss semantics, through momentum); the optimizer's decoupled `weight_decay`
  is never used.
* `ema_decay` keeps the TF inception package's moving average inside the optimizer (ReferenceAverage: a warm-up
  decay min(ema_decay, (1 + t) / (10 + t)) over the trainable weights *and* BatchNorm's moving statistics); it never
  overwrites the trained weights: `ema_weights` swaps it in for evaluation.

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


def make_optimizer(cfg, model=None):
    """The optimizer of a resolved TrainConfig, with its schedule and, if asked, the reference's weight moving
    average (over `model`'s trainable weights and BatchNorm statistics)."""
    ema = {"use_ema": True, "ema_momentum": cfg.ema_decay} if cfg.ema_decay else {}
    if cfg.optimizer == "sgd":
        opt = AveragedSGD(make_schedule(cfg), momentum=cfg.momentum, **ema)
    elif cfg.optimizer == "adam":  # beyond the paper: Nakkiran et al. 2020's double-descent recipe (Keras defaults)
        opt = AveragedAdam(make_schedule(cfg), **ema)
    elif cfg.optimizer == "rmsprop":  # the TF inception package: decay 0.9, momentum 0.9, epsilon 1.0
        opt = ReferenceRMSprop(make_schedule(cfg), rho=0.9, momentum=cfg.momentum, epsilon=1.0,
                               initial_ms=cfg.rmsprop_initial_ms, **ema)
    else:
        raise UserError(f"unknown optimizer {cfg.optimizer!r}; use sgd, rmsprop or adam")
    if cfg.ema_decay:
        # Keras' fit() ends by overwriting the weights with the average (finalize_variable_values). That would
        # corrupt a run trained in two fit() calls (a mid-epoch resume) and the checkpoint; we swap explicitly
        # for evaluation instead (ema_weights).
        opt.finalize_variable_values = lambda var_list: None
        if model is not None:
            opt.average_also(batchnorm_statistics(model))
    return opt


def batchnorm_statistics(model):
    """The moving means and variances of a model's BatchNormalization layers (tf.moving_average_variables() in
    TF1), in layer order."""
    from rethink_tf import models

    return [v for layer in models.all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)
            for v in (layer.moving_mean, layer.moving_variance)]


class ReferenceAverage:
    """Mixin for a Keras optimizer: the weight average the TF inception package evaluates (Table 2's numbers).

    The reference builds `tf.train.ExponentialMovingAverage(0.9999, global_step)` and applies it to
    `tf.trainable_variables() + tf.moving_average_variables()` with every training step; its eval restores the
    averages of both. With `num_updates` TF1 uses the decay min(decay, (1 + t) / (10 + t)): 0.1 at the first step,
    0.9 at t = 80, the full decay only after (1 + t) / (10 + t) passes it (t = 89,991 for 0.9999). Each average
    starts at its variable's value when the optimizer is built (TF1 initializes the shadow to the variable's
    initial value). Keras' own `use_ema` differs on all three: a constant decay from the second step (after 3,000
    steps 0.9999^3000 = 74% of its first value would still be in the average), a first average that copies the
    weights after step one, and BatchNorm's statistics left raw. Here t is the number of steps before this one
    (Keras increments its step count after the average is updated).
    """

    def average_also(self, variables):
        """Also average these non-trainable variables (BatchNorm's moving statistics); before the first step."""
        object.__setattr__(self, "_also_averaged", list(variables))  # plain lists: not tracked as optimizer state

    def build(self, variables):
        super().build(variables)
        if not self.use_ema:
            return
        extra = getattr(self, "_also_averaged", [])
        object.__setattr__(self, "_extra_averages", [self.add_variable_from_reference(v, name="stat_average")
                                                     for v in extra])
        for average, var in zip(self._model_variables_moving_average + self._extra_averages, list(variables) + extra):
            average.assign(var)

    def _update_model_variables_moving_average(self, trainable_variables):
        if not self.use_ema:
            return
        t = keras.ops.cast(self.iterations, "float32")
        decay = keras.ops.minimum(keras.ops.cast(self.ema_momentum, "float32"), (1.0 + t) / (10.0 + t))
        pairs = zip(list(trainable_variables) + getattr(self, "_also_averaged", []),
                    self._model_variables_moving_average + getattr(self, "_extra_averages", []))
        for var, average in pairs:
            d = keras.ops.cast(decay, average.dtype)
            self.assign(average, d * average + (1.0 - d) * keras.ops.cast(var, average.dtype))

    def averaged_pairs(self, trainable_variables):
        """[(variable, its average)] of everything averaged: the trainable weights, then BatchNorm's statistics."""
        return list(zip(list(trainable_variables) + getattr(self, "_also_averaged", []),
                        self._model_variables_moving_average + getattr(self, "_extra_averages", [])))


class AveragedSGD(ReferenceAverage, keras.optimizers.SGD):
    """SGD with the reference's weight average (ReferenceAverage) when use_ema is set; plain SGD otherwise."""


class AveragedAdam(ReferenceAverage, keras.optimizers.Adam):
    """Adam (beta 0.9 / 0.999, epsilon 1e-7: Keras' defaults) with the reference's weight average when use_ema is
    set; not a recipe of the paper (Nakkiran et al. 2020 train their double-descent sweeps with it)."""


class ReferenceRMSprop(ReferenceAverage, keras.optimizers.RMSprop):
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
    """Within the block the model's trainable weights (and, with the reference's average, BatchNorm's statistics)
    are the optimizer's moving averages (no-op without EMA)."""

    def __init__(self, model):
        # the optimizer averages the variables it was built with: the model's trainable variables, in that order
        self.opt, self.variables, self.saved = model.optimizer, model.trainable_variables, None

    def __enter__(self):
        if getattr(self.opt, "use_ema", False):
            if isinstance(self.opt, ReferenceAverage):
                self.pairs = self.opt.averaged_pairs(self.variables)
            else:  # a user's Keras optimizer: its own average of the trainable weights
                self.pairs = list(zip(self.variables, self.opt._model_variables_moving_average))
            self.saved = [v.numpy() for v, _ in self.pairs]
            for v, avg in self.pairs:
                v.assign(avg)

    def __exit__(self, *exc):
        if self.saved is not None:
            for (v, _), value in zip(self.pairs, self.saved):
                v.assign(value)
