"""Raw examples `{image: uint8 HxWxC, label: int64, key: int64}` from local files, or downloaded once through tfds.

Three kinds of source (the paper's §1 datasets), one module each:
  * archives.py, the original archives on disk: CIFAR-10 binary (`cifar-10-binary.tar.gz` or `cifar-10-batches-bin/`)
    and python (`cifar-10-python.tar.gz` or `cifar-10-batches-py/`) versions, MNIST-style
    `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` files (MNIST, Fashion-MNIST). Tarballs are read in
    place (nothing is extracted), and the python pickles go through an unpickler that only builds numpy
    arrays, so a hostile archive can neither write files nor run code;
  * tfds_source.py and imagenet.py, TensorFlow Datasets prepared under `data_dir` (download.py downloads). When they are absent and `download` is on, CIFAR-10, MNIST and
    Fashion-MNIST are downloaded and prepared by tfds itself (its download manager and progress bar), after a
    5-second reachability check of the dataset's host, so a machine without network gets one clear line instead
    of a hang. ImageNet is never downloaded (its licence): it is prepared from the two ILSVRC2012 tars in
    `manual_dir` only when asked to;
  * the built-in `fashion_mnist_5k`: the first 5,000 training and 1,000 test images of Fashion-MNIST in key order, shipped with
    the package in idx format (MIT licence, rethink_tf/data/builtin/fashion_mnist_5k/LICENSE.txt), so a first run
    needs nothing at all.

`key` identifies an example independently of read order, sharding and shuffling, and of the source that read it:
for the in-memory datasets a FarmHash of the example's content (image bytes and label; split.content_key), and
their arrays are kept in key order, so the archive and a tfds-prepared copy give the same keys, subsets and batches;
for ImageNet a FarmHash of `file_name` (stable when ImageNet is prepared again with another shard layout).
Corruptions are pure functions of (seed, split, key), so this key is what makes them fixed (see corruption.py).

The small datasets (CIFAR-10, MNIST, Fashion-MNIST) are held in memory as uint8 arrays (150 MB for CIFAR-10);
ImageNet is streamed as encoded records (`Records`) and decoded by the preprocessing.
"""

import dataclasses
import os

from rethink_tf.data.sources import archives, imagenet, tfds_source
from rethink_tf.data.sources.download import NO_NETWORK_ENV  # noqa: F401  (the switch tests and users set)
from rethink_tf.data.sources.split import (  # noqa: F401  (re-exported)
    KEY_SCHEME, DatasetSpec, Split, content_key, fingerprint, from_arrays, in_key_order, string_key)
from rethink_tf.data.sources.tfds_source import TFDS_PREFIX
from rethink_tf.errors import UserError

DATASETS = {
    "cifar10": DatasetSpec(
        "cifar10", (32, 32, 3), 10, 50_000, 10_000, "cifar10", "test", True,
        "cifar-10-binary.tar.gz, cifar-10-python.tar.gz, or their extracted cifar-10-batches-bin/ or "
        "cifar-10-batches-py/ folder (from https://www.cs.toronto.edu/~kriz/cifar.html)", "cifar",
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"),
    "mnist": DatasetSpec(
        "mnist", (28, 28, 1), 10, 60_000, 10_000, "mnist", "test", True,
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz", "idx", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
    "fashion_mnist": DatasetSpec(
        "fashion_mnist", (28, 28, 1), 10, 60_000, 10_000, "fashion_mnist", "test", True,
        "train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz (Debian: apt-get install dataset-fashion-mnist)", "idx",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
    "fashion_mnist_5k": DatasetSpec(
        "fashion_mnist_5k", (28, 28, 1), 10, 5_000, 1_000, None, "test", True,
        "the package's own rethink_tf/data/builtin/fashion_mnist_5k/ (reinstall the package)", "idx",
        full_train_size=60_000),  # the recipe's decay period is the full set's, as with --train_examples=5000
    "imagenet2012": DatasetSpec(
        "imagenet2012", None, 1000, 1_281_167, 50_000, "imagenet2012", "validation", False,
        "a tfds-prepared imagenet2012/ folder there, or ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
        "--manual_dir together with --prepare_imagenet (tfds's builder; a subset of the classes also works)"),
}

BUILTIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "builtin")
# Where Debian's dataset packages put the files, and the built-in data; used when no data_dir is given.
DEFAULT_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist",
                "fashion_mnist_5k": os.path.join(BUILTIN_DIR, "fashion_mnist_5k")}
SOURCES = ("auto", "archive", "tfds")
SPLITS = ("train", "test")


def spec(name, data_dir=None, image_feature="image", label_feature="label", train_label_feature=None):
    """Returns the DatasetSpec of `name` (a key of DATASETS, or "tfds:NAME" for any tfds image classification
    dataset prepared under data_dir), or raises UserError naming the known datasets."""
    if name.startswith(TFDS_PREFIX):
        return tfds_source.spec(name[len(TFDS_PREFIX):], data_dir, image_feature, label_feature, train_label_feature)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}, or tfds:NAME")
    if name == "imagenet2012":  # sizes and classes of what was prepared (a subset of the classes works too)
        return imagenet.prepared_spec(DATASETS[name], data_dir)
    return DATASETS[name]


def load(name, split, data_dir=None, source="auto", num_examples=None, manual_dir=None, prepare_imagenet=False,
         download=False, image_feature="image", label_feature="label", train_label_feature=None):
    """Loads one split of a dataset from local files (downloading it through tfds first if asked and absent).

    Args:
      name: a key of DATASETS.
      split: "train" or "test" (ImageNet's "test" is its 50,000-image validation set, as in the paper).
      data_dir: folder holding the archives or the tfds-prepared data. Defaults to Debian's folder for
        Fashion-MNIST/MNIST, else ~/tensorflow_datasets.
      source: "archive", "tfds", or "auto" (archives if present, else tfds).
      num_examples: keep only the first N examples in key order (a pseudo-random subset, the same whichever
        source reads the data; ImageNet: the first N records of the prepared shards), for quick runs.
      manual_dir: ImageNet's ILSVRC2012 tars, for tfds preparation.
      prepare_imagenet: allow the (hours-long) tfds preparation of ImageNet from manual_dir.
      download: when neither archives nor tfds data are found, download and prepare CIFAR-10/MNIST/Fashion-MNIST
        with tfds into data_dir (default ~/tensorflow_datasets).
      image_feature, label_feature: the feature names of a "tfds:NAME" dataset.
      train_label_feature: a "tfds:NAME" dataset's feature of human training labels (CIFAR-10N's worse_label, ...),
        read into arrays["human_label"] of the train split (the test split has none: its clean labels are scored).

    Returns:
      A Split.

    Raises:
      UserError: unknown dataset/split/source, missing or truncated files, a bad subset size.
    """
    human = train_label_feature if split == "train" else None
    if human and not name.startswith(TFDS_PREFIX):
        raise UserError(f"--train_label_feature reads a tfds:NAME dataset's human labels; {name} has none")
    ds_spec = spec(name, data_dir, image_feature, label_feature, human)
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; use one of {SPLITS}")
    if source not in SOURCES:
        raise UserError(f"unknown source {source!r}; use one of {SOURCES}")
    if num_examples is not None and not 0 < num_examples:
        raise UserError(f"a subset must have at least one example; received num_examples={num_examples}")
    if data_dir is None or ds_spec.tfds_name is None:  # the built-in data live in the package, whatever data_dir
        data_dir = DEFAULT_DIRS.get(name) if os.path.isdir(DEFAULT_DIRS.get(name, "/nonexistent")) else data_dir
    # A --data_dir that does not exist yet is where a download goes; without download it is a mistake (reported).
    search = (source in ("auto", "archive") and data_dir and ds_spec.archive_format
              and (os.path.isdir(data_dir) or not download or not ds_spec.download_url))
    archive = archives.find(ds_spec, data_dir) if search else None
    if archive is not None:
        arrays = archives.read(ds_spec, archive, split)
        arrays = in_key_order(arrays["image"], arrays["label"])
        return _subset(Split(ds_spec, split, len(arrays["label"]), archive, arrays=arrays), num_examples)
    if source == "archive" or ds_spec.tfds_name is None:
        raise UserError(f"no {name} archive found in {data_dir or '(no --data_dir given)'}; expected {ds_spec.archive_help}")
    loaded = tfds_source.load(ds_spec, split, data_dir, manual_dir, prepare_imagenet, download, human)
    if loaded.arrays is not None:
        more = {"human_label": loaded.arrays["human_label"]} if human else {}
        loaded = dataclasses.replace(loaded, arrays=in_key_order(loaded.arrays["image"], loaded.arrays["label"], **more))
    return _subset(loaded, num_examples)


def _subset(split, num_examples):
    if num_examples is not None and num_examples > split.size:
        flag = "--train_examples" if split.name == "train" else "--test_examples"
        raise UserError(f"{flag}={num_examples} is more than the {split.size:,} examples of {split.spec.name}'s "
                        f"{split.name} split ({split.origin})")
    if num_examples is None or num_examples == split.size:
        return split
    if split.arrays is not None:
        arrays = {k: v[:num_examples] for k, v in split.arrays.items()}
        return dataclasses.replace(split, size=num_examples, arrays=arrays)
    return dataclasses.replace(split, size=num_examples, records=split.records.take(num_examples))


def load_extra_test(name, data_dir=None, download=False, image_feature="image", label_feature="label"):
    """The evaluation split of an extra test set ("tfds:NAME", e.g. tfds:cifar10_1, tfds:cifar10_1/v6) as a
    Split named "test" in key order (content keys, as every in-memory split), for --extra_test."""
    if not name.startswith(TFDS_PREFIX):
        raise UserError(f"--extra_test takes tfds:NAME datasets (e.g. tfds:cifar10_1); received {name!r}")
    ds_spec = tfds_source.extra_test_spec(name[len(TFDS_PREFIX):], data_dir, download, image_feature, label_feature)
    loaded = tfds_source.load(ds_spec, "test", data_dir, None, False)
    return dataclasses.replace(loaded, arrays=in_key_order(loaded.arrays["image"], loaded.arrays["label"]))
