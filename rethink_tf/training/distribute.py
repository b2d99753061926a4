"""The one-host strategies: no strategy, or tf.distribute.MirroredStrategy on this host's GPUs (multi-host:
training.cluster).

Notes for users:
  * The batch size in every config is the *global* batch; it must split evenly over the replicas (checked).
  * BatchNormalization statistics are per replica (Keras' default `synchronized=False`), as in the paper's era.
  * XLA (`jit_compile`) is forced off under a multi-replica strategy: Keras disables it there anyway.
  * Multi-host (MultiWorkerMirroredStrategy) is created by training.cluster.connect, from TF_CONFIG; Keras 3
    `fit` does not support it (keras#20585), so those runs train in loop.fit_distributed.
"""

import tensorflow as tf

from rethink_tf.errors import UserError

STRATEGIES = ("none", "mirrored", "multi_worker")
CROSS_DEVICE_OPS = ("auto", "nccl", "hierarchical_copy", "one_device")


def get_strategy(kind="none", num_gpus=None, cross_device_ops="auto"):
    """Returns a tf.distribute.Strategy.

    Args:
      kind: "none" (the default strategy: one device) or "mirrored" (synchronous data parallelism on local GPUs).
      num_gpus: how many GPUs to mirror over (None: all visible).
      cross_device_ops: "auto", "nccl", "hierarchical_copy" or "one_device" (ReductionToOneDevice, the
        maintainers' suggestion when NCCL all-reduce gives NaNs: tensorflow#105552).

    Raises:
      UserError: mirrored without GPUs, more GPUs asked than visible, multi-worker.
    """
    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "multi_worker":
        raise UserError("--strategy=multi_worker is created by training.cluster.connect (TF_CONFIG), not here")
    if kind != "mirrored":
        raise UserError(f"unknown strategy {kind!r}; use one of {STRATEGIES[:2]}")
    gpus = [d.name for d in tf.config.list_logical_devices("GPU")]
    if not gpus:
        raise UserError("--strategy=mirrored needs GPUs, and TensorFlow sees none on this machine")
    if num_gpus is not None:
        if num_gpus > len(gpus):
            raise UserError(f"--num_gpus={num_gpus} but only {len(gpus)} GPU(s) are visible")
        gpus = gpus[:num_gpus]
    key = (tuple(gpus), cross_device_ops)
    if key not in _MIRRORED:
        ops = {"auto": None, "nccl": tf.distribute.NcclAllReduce(),
               "hierarchical_copy": tf.distribute.HierarchicalCopyAllReduce(),
               "one_device": tf.distribute.ReductionToOneDevice()}[cross_device_ops]
        _MIRRORED[key] = tf.distribute.MirroredStrategy(gpus, cross_device_ops=ops)
    return _MIRRORED[key]


# One MirroredStrategy per device set and reduction, for the whole process: several runs in one process
# (randomization_test, a notebook) would otherwise each make their own, and strategy objects number their
# collectives from the same keys, so a second model of another size meets the first one's collective instance
# ("Shape mismatch in the collective instance", seen on 2 logical CPUs with CollectiveAllReduce).
_MIRRORED = {}
