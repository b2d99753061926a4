"""One process of the multi-worker tests: trains through rethink_tf.train.run and saves the final weights.

    python tests/multi_worker_harness.py MODE OUT CONFIG_JSON [INDEX PORTS]

MODE: "worker" (MultiWorkerMirroredStrategy from --worker_hosts-style PORTS, this is worker INDEX), "mirrored"
(MirroredStrategy over 2 logical CPUs in one process), "single" (one device), or "fit" (Keras model.fit under
MultiWorkerMirroredStrategy: the expected failure of keras#20585; prints FIT_FAILED with the error type).
CONFIG_JSON: TrainConfig.to_dict() fields. OUT: a folder; <OUT>/<mode><index>.npz gets the weights and history.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    mode, out, config = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    index = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    ports = sys.argv[5].split(",") if len(sys.argv) > 5 else []
    if mode in ("worker", "fit"):
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{p}" for p in ports]},
                                              "task": {"type": "worker", "index": index}})
    if mode == "fit":
        return expected_fit_failure()
    import tensorflow as tf

    strategy = None
    if mode == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    import numpy as np

    from rethink_tf import results
    from rethink_tf.config import TrainConfig
    from rethink_tf.train import run

    cfg = TrainConfig.from_dict(config)
    if mode == "worker":
        import dataclasses

        cfg = dataclasses.replace(cfg, strategy="multi_worker", cluster_timeout=120)
    workdir = os.path.join(out, f"{mode}{index}")
    path = run(cfg, workdir, strategy=strategy, verbose=0, extra_callbacks=[SaveWeights(out, f"{mode}{index}")])
    if os.path.exists(path):
        r = results.read_json(path)
        np.savez(os.path.join(out, f"{mode}{index}-metrics.npz"), steps=r["metrics"]["steps_trained"])


class SaveWeights:
    """A Keras callback (built lazily: keras is imported after the strategy) saving weights and epoch losses."""

    def __new__(cls, out, name):
        import keras
        import numpy as np

        class _Save(keras.callbacks.Callback):
            def __init__(self):
                super().__init__()
                self.losses = []

            def on_train_begin(self, logs=None):  # the weights training starts from
                np.savez(os.path.join(out, f"{name}-init.npz"),
                         **{f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(self.model.weights)})

            def on_epoch_end(self, epoch, logs=None):
                self.losses.append(float(logs["loss"]))

            def on_train_end(self, logs=None):
                arrays = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(self.model.weights)}
                arrays["losses"] = np.array(self.losses)
                arrays["iterations"] = np.array(int(self.model.optimizer.iterations.numpy()))
                np.savez(os.path.join(out, f"{name}.npz"), **arrays)

        return _Save()


def expected_fit_failure():
    import tensorflow as tf

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    import keras
    import numpy as np

    with strategy.scope():
        inputs = keras.Input((4,))
        model = keras.Model(inputs, keras.layers.Dense(3)(inputs))
        model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = np.zeros((16, 4), np.float32), np.zeros(16, np.int64)
    try:
        model.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(8), epochs=1, verbose=0)
    except Exception as e:  # noqa: BLE001 (whatever Keras raises: the test only needs to see that fit fails)
        print(f"FIT_FAILED {type(e).__name__}", flush=True)
        os._exit(0)  # do not wait on the peer's collectives at exit
    print("FIT_WORKED", flush=True)
    os._exit(0)


if __name__ == "__main__":
    main()
