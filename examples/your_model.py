"""The paper's randomization test on *your* Keras model and *your* tf.data dataset.

    python examples/your_model.py [--data_dir=DIR] [--train_examples=1000] [--workdir=runs/your_model]

By default it reads the Fashion-MNIST subset the package ships (rethink_tf/data/builtin/fashion_mnist_5k: 5,000
training and 1,000 test images in the original idx.gz format), so it needs no download; --data_dir points it at the
full set (e.g. Debian's /usr/share/datasets/fashion-mnist, 60,000 / 10,000). Its runs are kept under --workdir:
rerunning the command returns finished runs and resumes killed ones.

Your side: a Keras CNN of your own, Fashion-MNIST read from its idx files into a tf.data dataset, and your optimizer
(Adam). Ours: `rethink_tf.randomization_test`, which corrupts the data exactly as the paper does (fixed across epochs,
keyed on each example's content), trains one run per corruption with the package's loop (checkpoints, resume,
results.json, time to fit) and returns the table. It is the paper's point: the same network memorizes random labels
as well as it fits true ones, and then generalizes no better than chance. (`rethink_tf.randomize` alone corrupts a
tf.data dataset for a training loop of your own.)
"""

import argparse
import gzip
import os
import sys

from rethink_tf import console

console.quiet()  # before TensorFlow is imported: no log banners

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import rethink_tf  # noqa: E402


def read_idx(path):
    """An MNIST-style idx.gz file -> numpy array (your loader: nothing of rethink_tf here)."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def my_cnn(input_shape, num_classes):
    """Any Keras model giving logits. It receives the package's preprocessing: pixels / 255, then per-image whitening
    (the paper's CIFAR-10 preprocessing), so it needs no rescaling layer of its own."""
    inputs = tf.keras.Input(input_shape)
    x = tf.keras.layers.Conv2D(32, 3, activation="relu")(inputs)
    x = tf.keras.layers.MaxPooling2D()(x)
    x = tf.keras.layers.Conv2D(64, 3, activation="relu")(x)
    x = tf.keras.layers.MaxPooling2D()(x)
    x = tf.keras.layers.Flatten()(x)
    x = tf.keras.layers.Dense(256, activation="relu")(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(num_classes)(x))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    builtin = os.path.join(os.path.dirname(rethink_tf.__file__), "data", "builtin", "fashion_mnist_5k")
    ap.add_argument("--data_dir", default=builtin, help="folder of the four Fashion-MNIST idx.gz files (default: "
                    "the package's 5,000 / 1,000-image subset)")
    ap.add_argument("--train_examples", type=int, default=1000, help="first N training images (default 1000)")
    ap.add_argument("--test_examples", type=int, default=1000, help="first N test images (default 1000)")
    ap.add_argument("--epochs", type=int, default=60, help="epochs per run (default 60)")
    ap.add_argument("--workdir", default="runs/your_model", help="where the runs are kept (default runs/your_model)")
    args = ap.parse_args()
    paths = {k: os.path.join(args.data_dir, f"{k}-ubyte.gz") for k in
             ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1")}
    missing = [p for p in paths.values() if not os.path.exists(p)]
    if missing:
        print(f"error: {missing[0]} not found (apt-get install dataset-fashion-mnist, or --data_dir)", file=sys.stderr)
        return 2
    x, y = read_idx(paths["train-images-idx3"])[:args.train_examples, ..., None], read_idx(paths["train-labels-idx1"])
    xt, yt = read_idx(paths["t10k-images-idx3"])[:args.test_examples, ..., None], read_idx(paths["t10k-labels-idx1"])
    n, m = len(x), len(xt)  # what the files hold, when fewer than asked for
    y, yt = y[:n], yt[:m]
    train = tf.data.Dataset.from_tensor_slices((x, y.astype(np.int64)))
    test = tf.data.Dataset.from_tensor_slices((xt, yt.astype(np.int64)))
    print(f"my_cnn on Fashion-MNIST ({n:,} train / {m:,} test images), Adam 1e-3, {args.epochs} epochs")
    rows = rethink_tf.randomization_test(
        my_cnn, train, test, corruptions=("none", "random_labels"), epochs=args.epochs, batch_size=64,
        optimizer=lambda: tf.keras.optimizers.Adam(1e-3), workdir=args.workdir, name="my_cnn", verbose=2)
    print(rethink_tf.format_table(rows))
    print()
    print("| labels | train accuracy | test accuracy | generalization gap | steps to fit |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['corruption']} | {100 * r['train_accuracy']:.2f}% | {100 * r['test_accuracy']:.2f}% | "
              f"{100 * r['generalization_gap']:.2f} points | {r['steps_to_fit'] or 'not fitted'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
