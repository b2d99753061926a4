"""The model registry: `build(name, input_shape, num_classes, **options) -> keras.Model` returning logits.

Names and Table 1 trainable counts (28×28×3 input, 10 classes): small_inception 1,649,402,
small_inception_nobn 1,649,402, small_alexnet 1,387,786, mlp_1x512 1,209,866, mlp_3x512 1,735,178;
inception_v3 for ImageNet (299×299×3, 1000 classes).
"""

import functools
import inspect

from rethink_tf.errors import UserError
from rethink_tf.models import inception_v3, mlp, small_alexnet, small_inception

# name -> (builder, smallest H and W it accepts)
MODELS = {
    "small_inception": (functools.partial(small_inception.build, batchnorm=True), 8),
    "small_inception_nobn": (functools.partial(small_inception.build, batchnorm=False), 8),
    "small_alexnet": (small_alexnet.build, 4),
    "mlp_1x512": (functools.partial(mlp.build, depth=1, width=512), 1),
    "mlp_3x512": (functools.partial(mlp.build, depth=3, width=512), 1),
    "inception_v3": (inception_v3.build, 75),
}


# XLA default per device kind and model: a measured table, not a constant (XLA helps some models and hurts others,
# and not the same ones on every device). "cpu", from benchmarks/train_throughput.py on 2 CPU cores (batch 128,
# images/s with / without XLA, docs/benchmarks/train_throughput.jsonl): the MLPs gain a little (mlp_1x512 22.1k /
# 21.2k, mlp_3x512 13.2k / 12.4k), the convnets lose (small_alexnet 301 / 320, small_inception 67 / 73). "gpu": not
# measured yet (benchmarks/gpu.sh measures every model with XLA on and off; enter what it finds): Keras' default, off.
# A model missing from its device kind's table gets XLA off. --jit_compile / --nojit_compile override the table; XLA
# is off under multi-replica strategies whatever the setting.
XLA_DEFAULTS = {"cpu": {"mlp_1x512": True, "mlp_3x512": True}, "gpu": {}}
XLA_DEFAULT = XLA_DEFAULTS["cpu"]  # the CPU table, as older code and notebooks name it


# Where XLA compiles the strategy.run loop's whole call (k steps and their --device_data gathers: no op dispatched
# between steps) rather than each step, with XLA on and one device: measured per device kind and model
# (benchmarks/train_throughput.py --jit_scope both, README: training throughput): on CPU the MLPs ran 1.07x and
# 1.15x faster with the call compiled whole, small AlexNet at 11 images/s against 693 per step (XLA:CPU's convolutions
# inside a loop); a model missing from its table gets "step" (--jit_scope overrides it).
XLA_CALL_DEFAULTS = {"cpu": {"mlp_1x512": True, "mlp_3x512": True}, "gpu": {}}


def jit_scope_default(model, kind=None):
    """ "call" or "step": what XLA compiles by default for `model` on this machine's device kind (XLA_CALL_DEFAULTS)."""
    return "call" if XLA_CALL_DEFAULTS.get(kind or device_kind(), {}).get(model, False) else "step"


def device_kind():
    """ "gpu" when TensorFlow sees a GPU, else "cpu": the row of XLA_DEFAULTS a run on this machine uses."""
    import tensorflow as tf

    return "gpu" if tf.config.list_physical_devices("GPU") else "cpu"


def xla_default(model, kind=None):
    """Whether XLA is on by default for `model` on this machine's device kind (XLA_DEFAULTS; off when unmeasured)."""
    return XLA_DEFAULTS.get(kind or device_kind(), {}).get(model, False)


def is_plugin(name):
    """A user's model given as "package.module:function" (the function builds an uncompiled keras.Model)."""
    return ":" in name


def load_plugin(spec):
    """The builder function named by "package.module:function", or UserError in one line."""
    import importlib

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UserError(f"--model={spec}: a plug-in model is 'package.module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"--model={spec}: cannot import {module_name} ({e}); is it on PYTHONPATH?") from None
    builder = getattr(module, attr, None)
    if not callable(builder):
        raise UserError(f"--model={spec}: {module_name} has no function {attr!r}")
    return builder


def options_of(name):
    """The keyword options a model's builder accepts (besides input_shape and num_classes); none for plug-ins."""
    if is_plugin(name):
        return []
    builder, _ = MODELS[name]
    fixed = builder.keywords if isinstance(builder, functools.partial) else {}
    params = inspect.signature(builder).parameters
    return sorted(p for p in params if p not in ("input_shape", "num_classes", "name") and p not in fixed)


def has_batchnorm(name):
    """Whether a registered model normalizes with BatchNorm (a plug-in's layers are unknown until it is built:
    False)."""
    if is_plugin(name) or name not in MODELS:
        return False
    builder, _ = MODELS[name]
    fixed = builder.keywords if isinstance(builder, functools.partial) else {}
    return "bn_synchronized" in options_of(name) and fixed.get("batchnorm", True)


def option_defaults(name):
    """{option: the builder's default} for the options a model takes (what a None option resolves to)."""
    if is_plugin(name):
        return {}
    builder, _ = MODELS[name]
    params = inspect.signature(builder).parameters
    return {p: params[p].default for p in options_of(name)}


def build(name, input_shape, num_classes, builder=None, **options):
    """Builds a registered model, a plug-in, or a user's builder function.

    Args:
      name: a key of MODELS, or "package.module:function".
      input_shape: (H, W, C) of the (preprocessed) images.
      num_classes: number of logits.
      builder: a function (input_shape, num_classes) -> uncompiled keras.Model, used instead of loading `name`
        (rethink_tf.randomization_test; name then only labels the run).
      **options: builder options, see options_of(name); None values are dropped (builder defaults apply).

    Raises:
      UserError: unknown model, unsupported options, or an input shape the model cannot take.
    """
    if builder is not None or is_plugin(name):
        return _build_plugin(name, input_shape, num_classes, options, builder)
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; known: {', '.join(MODELS)}, or package.module:function")
    builder, min_side = MODELS[name]
    shape = tuple(input_shape)
    if len(shape) != 3 or any(not isinstance(d, int) or d <= 0 for d in shape):
        raise UserError(f"{name} takes images of shape (H, W, C); received input_shape={input_shape}")
    if min(shape[:2]) < min_side:
        raise UserError(f"{name} needs images of at least {min_side}x{min_side}; received input_shape={shape}")
    if name == "inception_v3" and shape[2] != 3:
        raise UserError(f"inception_v3 takes RGB images (3 channels); received input_shape={shape}")
    if num_classes < 2:
        raise UserError(f"num_classes must be at least 2; received {num_classes}")
    options = {k: v for k, v in options.items() if v is not None}
    unknown = sorted(set(options) - set(options_of(name)))
    if unknown:
        raise UserError(f"{name} does not take option(s) {', '.join(unknown)}; it takes {', '.join(options_of(name))}")
    return builder(shape, num_classes, **options)


def _build_plugin(spec, input_shape, num_classes, options, builder=None):
    import keras

    options = {k: v for k, v in options.items() if v}
    if options:
        raise UserError(f"--model={spec} is a plug-in: put {', '.join(sorted(options))} in its builder instead")
    model = (builder or load_plugin(spec))(tuple(input_shape), num_classes)
    if not isinstance(model, keras.Model):
        raise UserError(f"--model={spec} returned {type(model).__name__}, not a keras.Model "
                        "(build(input_shape, num_classes) must return an uncompiled keras.Model giving logits)")
    if tuple(model.output_shape[1:]) != (num_classes,):
        raise UserError(f"--model={spec} outputs shape {model.output_shape}; it must give {num_classes} logits")
    return model


def all_layers(layer):
    """The layer and every layer nested in it (functional models, nested models and blocks), depth first."""
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from all_layers(child)


def trainable_count(model):
    """Trainable parameters, the count Table 1 reports (BN moving statistics excluded)."""
    return int(sum(int(v.numpy().size) for v in model.trainable_weights))
