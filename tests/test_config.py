"""Config fields are declared once: every field has its flag (same name, same default) and every flag its field."""

import dataclasses

from absl import flags

from rethink_tf import flags_lib
from rethink_tf.config import DataConfig, KernelConfig, TrainConfig


def _flags(define):
    fv = flags.FlagValues()
    define(fv)
    fv(["prog"])
    return fv


def _fields(*classes):
    return {f.name: f.default for cls in classes for f in dataclasses.fields(cls)
            if f.name != "data" and f.name not in flags_lib.DERIVED_FIELDS}


def test_train_flags_and_config_fields_match_one_to_one():
    fv = _flags(flags_lib.define_train_flags)
    fields = _fields(TrainConfig, DataConfig)
    assert set(fv) - flags_lib.NON_CONFIG_FLAGS == set(fields)
    assert {k: fv[k].default for k in fields} == fields  # a flag's default is its field's default
    assert flags_lib.config_from_flags(fv) == TrainConfig()  # so defaults agree end to end


def test_kernel_flags_and_config_fields_match_one_to_one():
    fv = _flags(flags_lib.define_kernel_flags)
    fields = _fields(KernelConfig)
    assert set(fv) - flags_lib.NON_CONFIG_FLAGS == set(fields)
    assert {k: fv[k].default for k in fields} == fields
    assert flags_lib.kernel_config_from_flags(fv) == KernelConfig()


def test_a_flag_reaches_its_field():
    fv = flags.FlagValues()
    flags_lib.define_train_flags(fv)
    fv(["prog", "--seed=3", "--corrupt=labels", "--corrupt_prob=0.5", "--model=mlp_1x512", "--epochs=2"])
    cfg = flags_lib.config_from_flags(fv)
    assert (cfg.seed, cfg.data.shuffle_seed, cfg.data.corrupt, cfg.data.corrupt_prob, cfg.model, cfg.epochs) == (
        3, 3, "labels", 0.5, "mlp_1x512", 2)


def test_run_names_written_by_the_first_named_version_are_kept():
    # tests/data/run_names_v1.json: config.json contents and run directory names written by the code before the
    # house change (commit 5819c5d), for six runs of the paper's kinds
    import json
    import os

    cases = json.load(open(os.path.join(os.path.dirname(__file__), "data", "run_names_v1.json")))
    for case in cases:
        stored = TrainConfig.from_dict(case["config.json"])
        if stored.ema_decay:  # the Table 2 recipe changed since (RMSProp's accumulator starts at 1, the weight
            # average is the reference's, not Keras'): a new run, by design
            assert stored.name() != case["name"] and stored.resolved().name() != case["name"]
            continue
        assert stored.name() == case["name"]  # the stored config still names its directory
        assert stored.resolved().name() == case["name"]  # and today's recipe resolves to the same run


def test_adding_a_field_renames_no_run_unless_it_is_set():
    newer = dataclasses.make_dataclass("NewerConfig", [("future_knob", int, dataclasses.field(default=0))],
                                       bases=(TrainConfig,), frozen=True)
    base = TrainConfig(model="mlp_1x512", data=DataConfig(dataset="cifar10", corrupt="random_labels")).resolved()
    same = newer(**{f.name: getattr(base, f.name) for f in dataclasses.fields(TrainConfig)})
    assert same.name() == base.name()
    assert dataclasses.replace(same, future_knob=1).name() != base.name()


def test_kernel_run_names_are_kept_and_a_new_kernel_field_renames_none_unless_set():
    from rethink_tf.config import KernelConfig

    # names written by the code before kernel names froze their field set (commit bdf09a4)
    assert KernelConfig().name() == "kernel-mnist-none-gaussian-none-f93d7ca3"
    assert KernelConfig(dataset="cifar10", features="random_conv", corrupt="random_labels",
                        train_examples=2000).name() == "kernel-cifar10-random_conv-gaussian-random_labels-n2000-fb6f41ed"
    assert KernelConfig(kernel="polynomial", normalize=True, corrupt="labels",
                        corrupt_prob=0.5).name() == "kernel-mnist-none-polynomial-labels-c0740beb"
    newer = dataclasses.make_dataclass("NewerKernelConfig", [("future_knob", int, dataclasses.field(default=0))],
                                       bases=(KernelConfig,), frozen=True)
    assert newer().name() == KernelConfig().name() != newer(future_knob=1).name()


def test_what_trains_differently_names_a_different_run():
    """Per-replica BatchNorm normalizes over batch / replicas images: a BN model on 8 replicas is another run than
    on one; a model without BN, synchronized BN, or one replica change only where the steps run."""
    bn = TrainConfig(model="small_inception", batch_size=128).resolved()
    assert bn.bn_replica_batch(1) is None and bn.bn_replica_batch(8) == 16
    assert bn.name(8) != bn.name(1) == bn.name() and bn.name(8) != bn.name(4)
    synced = dataclasses.replace(bn, sync_batchnorm=True)
    assert synced.name(8) == synced.name(1) and synced.bn_replica_batch(8) is None
    for model in ("small_inception_nobn", "mlp_1x512", "small_alexnet"):
        cfg = TrainConfig(model=model).resolved()
        assert cfg.name(8) == cfg.name(1)
    assert TrainConfig(model="inception_v3").resolved().bn_replica_batch(2) is not None
