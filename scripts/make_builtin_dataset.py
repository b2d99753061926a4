"""Writes rethink_tf/data/builtin/fashion_mnist_5k/: 5,000 training and 1,000 test images of Fashion-MNIST.

    python scripts/make_builtin_dataset.py [--source=/usr/share/datasets/fashion-mnist]

The files are the original idx format, gzipped, holding the first N examples in key order (the order every source
gives the in-memory datasets: sources.in_key_order), so the built-in dataset `fashion_mnist_5k` has the same
examples, keys and corruptions as `--dataset=fashion_mnist --train_examples=5000 --test_examples=1000`. Fashion-MNIST is (c) 2017 Zalando
SE, MIT licence; the licence travels with the files (LICENSE.txt).
"""

import argparse
import gzip
import os
import sys

import numpy as np

from rethink_tf.data import sources

OUT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "rethink_tf", "data", "builtin",
                   "fashion_mnist_5k")
SIZES = {"train": ("train", 5_000), "t10k": ("test", 1_000)}


def idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=sources.DEFAULT_DIRS["fashion_mnist"])
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for prefix, (split, n) in SIZES.items():
        try:
            arrays = sources.load("fashion_mnist", split, data_dir=args.source, source="archive", num_examples=n).arrays
        except sources.UserError as e:
            print(f"error: {e} (apt-get install dataset-fashion-mnist)", file=sys.stderr)
            return 2
        for kind, arr in (("images-idx3", arrays["image"][..., 0]), ("labels-idx1", arrays["label"])):
            name = f"{prefix}-{kind}-ubyte.gz"
            # mtime=0: the same input gives byte-identical files
            with open(os.path.join(OUT, name), "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                                                           compresslevel=9) as f:
                f.write(idx_bytes(arr))
    print(f"wrote {OUT}: " + ", ".join(f"{f} {os.path.getsize(os.path.join(OUT, f)):,} B" for f in sorted(os.listdir(OUT))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
