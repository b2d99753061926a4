"""Raw examples `{image: uint8 HxWxC, label: int64, key: int64}` from local files, or downloaded once through tfds.

Three kinds of source (PAPER.md §1; REQUIREMENTS.md 17):
  * the original archives on disk: CIFAR-10 binary (`cifar-10-binary.tar.gz` or `cifar-10-batches-bin/`)
    and python (`cifar-10-python.tar.gz` or `cifar-10-batches-py/`) versions, MNIST-style
    `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` files (MNIST, Fashion-MNIST). Tarballs are read in
    place (nothing is extracted), and the python pickles go through an unpickler that only builds numpy
    arrays, so a hostile archive can neither write files nor run code;
  * TensorFlow Datasets prepared under `data_dir`. When they are absent and `download` is on, CIFAR-10, MNIST and
    Fashion-MNIST are downloaded and prepared by tfds itself (its download manager and progress bar), after a
    5-second reachability check of the dataset's host, so a machine without network gets one clear line instead
    of a hang. ImageNet is never downloaded (its licence): it is prepared from the two ILSVRC2012 tars in
    `manual_dir` only when asked to;
  * the built-in `fashion_mnist_5k`: the first 5,000 training and 1,000 test images of Fashion-MNIST, shipped with
    the package in idx format (MIT licence, rethink_tf/data/builtin/fashion_mnist_5k/LICENSE.txt), so a first run
    needs nothing at all.

`key` identifies an example independently of read order, sharding and shuffling: the index in the original
file order for archives, a FarmHash fingerprint of `tfds_id` for the small tfds datasets and of `file_name` for
ImageNet (stable when ImageNet is prepared again with another shard layout). Corruptions are pure functions of
(seed, split, key), so this key is what makes them fixed (see corruption.py).

The small datasets (CIFAR-10, MNIST, Fashion-MNIST) are held in memory as uint8 arrays (150 MB for CIFAR-10);
ImageNet is streamed as encoded records (`Records`) and decoded by the preprocessing.
"""

import dataclasses
import gzip
import os
import pickle
import tarfile
from typing import Optional

import numpy as np

from rethink_tf.errors import UserError


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """What we know about a dataset without reading it (the sizes are the full datasets'; a streamed split's size is
    the prepared one, from its tfds split info)."""

    name: str
    image_shape: Optional[tuple]  # stored image shape; None where it varies (ImageNet)
    num_classes: int
    train_size: int
    test_size: int
    tfds_name: str
    tfds_test_split: str
    in_memory: bool
    archive_help: str  # what to put where, for the "data not found" message
    archive_format: Optional[str] = None  # "cifar", "idx" or None (tfds only)
    download_url: Optional[str] = None  # what tfds downloads from (its host is probed first); None: never download
    image_feature: str = "image"  # tfds feature names (tfds:NAME datasets may name them otherwise)
    label_feature: str = "label"


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
        "the package's own rethink_tf/data/builtin/fashion_mnist_5k/ (reinstall the package)", "idx"),
    "imagenet2012": DatasetSpec(
        "imagenet2012", None, 1000, 1_281_167, 50_000, "imagenet2012", "validation", False,
        "a tfds-prepared imagenet2012/ folder there, or ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in "
        "--manual_dir together with --prepare_imagenet (tfds's builder; a subset of the classes also works)"),
}

BUILTIN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtin")
# Where Debian's dataset packages put the files, and the built-in data; used when no data_dir is given.
DEFAULT_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist", "mnist": "/usr/share/datasets/mnist",
                "fashion_mnist_5k": os.path.join(BUILTIN_DIR, "fashion_mnist_5k")}
NO_NETWORK_ENV = "RETHINK_TF_NO_NETWORK"  # set (e.g. by the test suite): never try to reach the network
CONNECT_TIMEOUT_S = 5.0
SOURCES = ("auto", "archive", "tfds")
SPLITS = ("train", "test")


TFDS_PREFIX = "tfds:"


def string_key(value):
    """The int64 example key of a string tensor: FarmHash64 into [0, 2**62), stable across runs, platforms and
    TF versions. Every string-derived key (tfds_id, ImageNet's file_name, a user feature, content bytes) is this."""
    import tensorflow as tf

    return tf.strings.to_hash_bucket_fast(value, 2**62)


def spec(name, data_dir=None, image_feature="image", label_feature="label"):
    """Returns the DatasetSpec of `name` (a key of DATASETS, or "tfds:NAME" for any tfds image classification
    dataset prepared under data_dir), or raises UserError naming the known datasets."""
    if name.startswith(TFDS_PREFIX):
        return tfds_spec(name[len(TFDS_PREFIX):], data_dir, image_feature, label_feature)
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}, or tfds:NAME")
    return DATASETS[name]


def tfds_spec(tfds_name, data_dir=None, image_feature="image", label_feature="label"):
    """The DatasetSpec of a tfds image classification dataset prepared under data_dir (issue 11: plug-in data).

    It is held in memory like CIFAR-10 (so its images must have one fixed shape), its keys are FarmHashes of
    `tfds_id`, and it is never downloaded here: prepare it with `tfds build` (tfds's own downloader) first.
    """
    import tensorflow_datasets as tfds

    data_dir = data_dir or os.path.expanduser("~/tensorflow_datasets")
    name = TFDS_PREFIX + tfds_name
    try:
        builder = tfds.builder(tfds_name, data_dir=data_dir)
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
        raise UserError(f"--dataset={name}: tfds knows no such dataset ({str(e).splitlines()[0][:120]})") from None
    if not builder.is_prepared():
        raise UserError(f"--dataset={name} is not prepared in {data_dir}: run `tfds build {tfds_name} "
                        f"--data_dir={data_dir}` (on a machine with internet), then point --data_dir there")
    features = builder.info.features
    names = ", ".join(sorted(features.keys()))
    image = features[image_feature] if image_feature in features else None
    label = features[label_feature] if label_feature in features else None
    if not isinstance(image, tfds.features.Image):
        raise UserError(f"--dataset={name} has no image feature {image_feature!r} (features: {names}); "
                        "name it with --image_feature")
    if not isinstance(label, tfds.features.ClassLabel):
        raise UserError(f"--dataset={name} has no class-label feature {label_feature!r} (features: {names}); "
                        "name it with --label_feature")
    if any(d is None for d in image.shape):
        raise UserError(f"--dataset={name}: its images vary in shape {image.shape}; only fixed-size images are "
                        "held in memory (resize them in a tfds config, or pass a tf.data dataset to "
                        "rethink_tf.randomization_test)")
    splits = builder.info.splits
    test = next((t for t in ("test", "validation") if t in splits), None)
    if "train" not in splits or test is None:
        raise UserError(f"--dataset={name} needs a train split and a test or validation split; it has "
                        f"{', '.join(splits.keys())}")
    return DatasetSpec(name, tuple(image.shape), label.num_classes, splits["train"].num_examples,
                       splits[test].num_examples, tfds_name,
                       test, True, f"a tfds-prepared {tfds_name}/ folder", image_feature=image_feature,
                       label_feature=label_feature)


def from_arrays(name, split, images, labels, num_classes, keys):
    """A Split of a user's in-memory data (rethink_tf.randomization_test): uint8 images are kept as they are,
    others as float32; (N, H, W) images get a channel axis."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise UserError(f"{name}: images must be (H, W) or (H, W, C); received shape {images.shape[1:]}")
    if images.dtype != np.uint8:
        images = images.astype(np.float32)
    labels = np.asarray(labels).astype(np.int64).reshape(-1)
    if len(labels) != len(images) or not len(labels):
        raise UserError(f"{name}/{split}: {len(images)} images and {len(labels)} labels")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise UserError(f"{name}/{split}: labels must lie in [0, {num_classes}); found {labels.min()}..{labels.max()}")
    ds_spec = DatasetSpec(name, images.shape[1:], num_classes, len(labels), len(labels), None, split, True,
                          "a tf.data dataset")
    arrays = {"image": images, "label": labels, "key": np.asarray(keys, np.int64)}
    return Split(ds_spec, split, len(labels), f"user data {name}", arrays=arrays)


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset: in-memory arrays (small datasets) or a tf.data stream (ImageNet).

    Attributes:
      spec: the dataset's DatasetSpec.
      name: "train" or "test".
      size: number of examples (after any subset).
      origin: where the examples were read from, for the run record.
      arrays: dict of numpy arrays image (N,H,W,C) uint8, label (N,) int64, key (N,) int64; or None.
      stream: a tf.data.Dataset of the same dicts; or None.
    """

    spec: DatasetSpec
    name: str
    size: int
    origin: str
    arrays: Optional[dict] = None
    records: Optional["Records"] = None

    def dataset(self):
        """The in-memory split as a tf.data.Dataset of {image, label, key} dicts in key order (archives)."""
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices(self.arrays)


@dataclasses.dataclass(frozen=True)
class Records:
    """A tfds-prepared split read as *encoded* records (ImageNet): decoding is left to the preprocessing, which
    decodes only the crop window (TF Model Garden's input path).

    Attributes:
      files: the split's TFRecord shards, in shard order.
      counts: examples read from each shard (all of them; a subset reads a prefix of the shards).
      features: the builder's tfds FeaturesDict, which parses a serialized record.
      key_feature: the feature hashed into the example key. ImageNet's `file_name` (e.g. n01440764_10026.JPEG) is
        the same however ImageNet is prepared; `tfds_id` names the shard and index, which change with the shard
        layout, so label corruptions keyed on it would change on re-preparation.
    """

    files: tuple
    counts: tuple
    features: object
    key_feature: str = "file_name"

    @property
    def size(self):
        return int(sum(self.counts))

    def take(self, n):
        """The first n examples in shard order (a fixed subset, whatever the per-epoch file order)."""
        counts, left = [], n
        for c in self.counts:
            if left <= 0:
                break
            counts.append(min(c, left))
            left -= counts[-1]
        return dataclasses.replace(self, files=self.files[:len(counts)], counts=tuple(counts))

    def shard(self, num_shards, index):
        """Every num_shards-th file from `index`: one input pipeline's share (multi-worker input)."""
        if len(self.files) < num_shards:
            raise UserError(f"{len(self.files)} record files cannot be split over {num_shards} input pipelines")
        return dataclasses.replace(self, files=self.files[index::num_shards], counts=self.counts[index::num_shards])

    def ordered(self, order_seed=None):
        """(files, counts) tensors: the shards permuted by `order_seed` (a stateless seed, shape [2], which may be a
        tensor inside a tf.data function), or in shard order."""
        import tensorflow as tf

        files, counts = tf.constant(self.files), tf.constant(self.counts, tf.int64)
        if order_seed is None:
            return files, counts
        order = tf.argsort(tf.random.stateless_uniform([len(self.files)], order_seed))
        return tf.gather(files, order), tf.gather(counts, order)

    def read(self, order_seed=None, deterministic=True, cycle_length=16):
        """A tf.data.Dataset of serialized records: the shards in a permuted order when `order_seed` (a stateless
        seed, shape [2]) is given, else in shard order; `cycle_length` shards are read in parallel, interleaved."""
        import tensorflow as tf

        shards = tf.data.Dataset.from_tensor_slices(self.ordered(order_seed))
        if order_seed is None and deterministic:  # evaluation: one pass in shard order
            cycle_length = 1
        return shards.interleave(
            lambda f, c: tf.data.TFRecordDataset(f, buffer_size=8 << 20).take(c),
            cycle_length=min(cycle_length, len(self.files)), block_length=1,
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic)

    def parse(self, serialized):
        """{jpeg: the encoded image, label: int64, key: int64 FarmHash of key_feature} from one serialized record."""
        import tensorflow as tf
        import tensorflow_datasets as tfds

        ex = self.features.deserialize_example(serialized, decoders={"image": tfds.decode.SkipDecoding()})
        return {"jpeg": ex["image"], "label": tf.cast(ex["label"], tf.int64),
                "key": string_key(ex[self.key_feature])}


def load(name, split, data_dir=None, source="auto", num_examples=None, manual_dir=None, prepare_imagenet=False,
         download=False, image_feature="image", label_feature="label"):
    """Loads one split of a dataset from local files (downloading it through tfds first if asked and absent).

    Args:
      name: a key of DATASETS.
      split: "train" or "test" (ImageNet's "test" is its 50,000-image validation set, as in the paper).
      data_dir: folder holding the archives or the tfds-prepared data. Defaults to Debian's folder for
        Fashion-MNIST/MNIST, else ~/tensorflow_datasets.
      source: "archive", "tfds", or "auto" (archives if present, else tfds).
      num_examples: keep only the first N examples (in file order for archives), for quick runs.
      manual_dir: ImageNet's ILSVRC2012 tars, for tfds preparation.
      prepare_imagenet: allow the (hours-long) tfds preparation of ImageNet from manual_dir.
      download: when neither archives nor tfds data are found, download and prepare CIFAR-10/MNIST/Fashion-MNIST
        with tfds into data_dir (default ~/tensorflow_datasets).
      image_feature, label_feature: the feature names of a "tfds:NAME" dataset.

    Returns:
      A Split.

    Raises:
      UserError: unknown dataset/split/source, missing or truncated files, a bad subset size.
    """
    ds_spec = spec(name, data_dir, image_feature, label_feature)
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
    archive = _find_archive(ds_spec, data_dir) if search else None
    if archive is not None:
        arrays = _read_archive(ds_spec, archive, split)
        return _subset(Split(ds_spec, split, len(arrays["label"]), archive, arrays=arrays), num_examples)
    if source == "archive" or ds_spec.tfds_name is None:
        raise UserError(f"no {name} archive found in {data_dir or '(no --data_dir given)'}; expected {ds_spec.archive_help}")
    return _subset(_load_tfds(ds_spec, split, data_dir, manual_dir, prepare_imagenet, download),
                   num_examples)


def _subset(split, num_examples):
    if num_examples is None or num_examples >= split.size:
        return split
    if split.arrays is not None:
        arrays = {k: v[:num_examples] for k, v in split.arrays.items()}
        return dataclasses.replace(split, size=num_examples, arrays=arrays)
    return dataclasses.replace(split, size=num_examples, records=split.records.take(num_examples))


# --------------------------------------------------------------------------------------------- archives

_CIFAR_BIN = ("cifar-10-batches-bin", "cifar-10-binary.tar.gz")
_CIFAR_PY = ("cifar-10-batches-py", "cifar-10-python.tar.gz")
_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def _find_archive(ds_spec, data_dir):
    """Returns the path of a recognised archive under data_dir (or data_dir/<name>), or None."""
    if not os.path.isdir(data_dir):
        raise UserError(f"--data_dir {data_dir} does not exist or is not a folder")
    roots = [data_dir] + [os.path.join(data_dir, d) for d in (ds_spec.name, ds_spec.name.replace("_", "-"))]
    for root in roots:
        if ds_spec.archive_format == "cifar":
            for candidate in _CIFAR_BIN + _CIFAR_PY:
                if os.path.exists(os.path.join(root, candidate)):
                    return os.path.join(root, candidate)
        elif ds_spec.archive_format == "idx":
            first = _IDX["train"][0]
            for candidate in (first + ".gz", first):
                if os.path.exists(os.path.join(root, candidate)):
                    return root
    return None


def _read_archive(ds_spec, path, split):
    try:
        if ds_spec.archive_format == "cifar":
            if "python" in os.path.basename(path) or "-py" in os.path.basename(path):
                return _read_cifar_python(path, split)
            return _read_cifar_binary(path, split)
        return _read_idx_pair(path, split)
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError, gzip.BadGzipFile) as e:
        raise UserError(f"cannot read {ds_spec.name} {split} split from {path}: {type(e).__name__}: {e}") from None


def _cifar_members(split, kind):
    if split == "train":
        names = [f"data_batch_{i}" for i in range(1, 6)]
    else:
        names = ["test_batch"]
    return [n + ".bin" for n in names] if kind == "bin" else names


def _read_members(path, folder, names):
    """Yields (name, bytes) of the named files, from an extracted folder or a tarball read in place."""
    if os.path.isdir(path):
        for n in names:
            f = os.path.join(path, n)
            if not os.path.exists(f):
                raise UserError(f"{f} is missing; expected {', '.join(names)} in {path}")
            with open(f, "rb") as fh:
                yield n, fh.read()
        return
    with tarfile.open(path, "r:gz") as tar:
        for n in names:
            try:
                member = tar.getmember(f"{folder}/{n}")
            except KeyError:
                raise UserError(f"{path} has no member {folder}/{n}; is it the original CIFAR-10 archive?") from None
            if not member.isfile():
                raise UserError(f"{path}: {folder}/{n} is not a regular file")
            yield n, tar.extractfile(member).read()


def _read_cifar_binary(path, split):
    """CIFAR-10 binary version: records of 1 label byte + 3072 image bytes (R, G, B planes of 32x32)."""
    images, labels = [], []
    for n, raw in _read_members(path, _CIFAR_BIN[0], _cifar_members(split, "bin")):
        if len(raw) == 0 or len(raw) % 3073:
            raise UserError(f"{path}: {n} is truncated or corrupt ({len(raw)} bytes is not a multiple of 3073)")
        rec = np.frombuffer(raw, np.uint8).reshape(-1, 3073)
        labels.append(rec[:, 0].astype(np.int64))
        images.append(rec[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
    return _arrays(np.concatenate(images), np.concatenate(labels), path, 10)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts/lists/bytes/numpy arrays only: CIFAR-10's python batches need nothing else."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"),
                ("_codecs", "encode")}  # how Python 3 writes bytes into protocol-2 pickles; encodes a str, nothing more

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: CIFAR-10 batches contain only numpy arrays")


def _read_cifar_python(path, split):
    """CIFAR-10 python version: pickled dicts with b'data' (N, 3072) uint8 and b'labels'."""
    images, labels = [], []
    for n, raw in _read_members(path, _CIFAR_PY[0], _cifar_members(split, "py")):
        import io

        batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise UserError(f"{path}: {n} is not a CIFAR-10 batch (no b'data'/b'labels' entries)")
        data = np.asarray(batch[b"data"], np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(batch[b"labels"]):
            raise UserError(f"{path}: {n} has data of shape {data.shape} for {len(batch[b'labels'])} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], np.int64))
    return _arrays(np.concatenate(images), np.concatenate(labels), path, 10)


def _read_idx(path):
    """An MNIST-style idx file (optionally gzipped): magic 0x0000 08 <ndim>, big-endian int32 dims, uint8 data."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = np.frombuffer(raw[4:4 + 4 * ndim], ">i4").astype(np.int64)
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(dims) != ndim or len(raw) != expected:
        raise UserError(f"{path} is truncated or corrupt: {len(raw)} bytes, header says {expected}")
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_idx_pair(folder, split):
    paths = []
    for stem in _IDX[split]:
        p = os.path.join(folder, stem + ".gz")
        paths.append(p if os.path.exists(p) else os.path.join(folder, stem))
        if not os.path.exists(paths[-1]):
            raise UserError(f"{p} is missing; expected {stem}.gz in {folder}")
    images, labels = (_read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{folder}: {len(images)} images of shape {images.shape[1:]} for {len(labels)} labels")
    return _arrays(images[..., None], labels.astype(np.int64), folder, 10)


def _arrays(images, labels, origin, num_classes):
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{origin}: labels must lie in [0, {num_classes - 1}], found {labels.min()}..{labels.max()}")
    return {"image": np.ascontiguousarray(images), "label": labels,
            "key": np.arange(len(labels), dtype=np.int64)}


# ------------------------------------------------------------------------------------------------ tfds

def network_reachable(url, timeout=CONNECT_TIMEOUT_S):
    """(True, "") if a TCP connection to url's host opens within timeout, else (False, why). Never hangs."""
    import socket
    import urllib.parse

    if os.environ.get(NO_NETWORK_ENV):
        return False, f"network use disabled by {NO_NETWORK_ENV}"
    parsed = urllib.parse.urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        return True, ""
    except OSError as e:
        return False, f"{parsed.hostname}:{port}: {e.strerror or type(e).__name__}"


def download_and_prepare(ds_spec, data_dir):
    """tfds's own download and prepare of a small dataset into data_dir, with its progress bar."""
    import tensorflow_datasets as tfds

    ok, why = network_reachable(ds_spec.download_url)
    if not ok:
        raise UserError(
            f"{ds_spec.name} is not in {data_dir} and cannot be downloaded (no network: {why}); either put "
            f"{ds_spec.archive_help} in --data_dir, or run once on a machine with internet (it downloads and "
            f"prepares itself) and copy {data_dir}/{ds_spec.tfds_name}/ here; --dataset=fashion_mnist_5k needs no data")
    print(f"downloading {ds_spec.name} with tensorflow_datasets into {data_dir} (once)", flush=True)
    try:
        # from the original archive (not a GCS copy): the same files a user could have put there by hand
        tfds.builder(ds_spec.tfds_name, data_dir=data_dir).download_and_prepare(
            download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    except OSError as e:  # the connection dropped mid-way, the disk is full, ...
        raise UserError(f"downloading {ds_spec.name} into {data_dir} failed: {type(e).__name__}: {e}") from None


def _load_tfds(ds_spec, split, data_dir, manual_dir, prepare_imagenet, download=False):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tfds_split = "train" if split == "train" else ds_spec.tfds_test_split
    data_dir = data_dir or os.path.expanduser("~/tensorflow_datasets")
    missing = (f"{ds_spec.name} not found in {data_dir}: put {ds_spec.archive_help} there, or a tfds-prepared "
               f"{ds_spec.tfds_name}/ folder (made with `tfds build {ds_spec.tfds_name}` on a machine with internet)")
    if not ds_spec.archive_format:  # tfds only: the help says it all
        missing = f"{ds_spec.name} not found in {data_dir}: expected {ds_spec.archive_help}"
    if ds_spec.download_url and not download:
        missing += ", or drop --nodownload to download it"
    if prepare_imagenet and ds_spec.name == "imagenet2012":
        _prepare_imagenet(data_dir, manual_dir)
    if not ds_spec.in_memory:
        return _open_records(ds_spec, tfds_split, split, data_dir, missing)
    not_found = (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError)
    read = lambda: tfds.load(ds_spec.tfds_name, split=tfds_split, data_dir=data_dir, download=False, try_gcs=False,
                             shuffle_files=False, read_config=tfds.ReadConfig(add_tfds_id=True))
    try:
        ds = read()
    except not_found as e:
        if not (download and ds_spec.download_url):
            raise UserError(missing + f" [tfds: {str(e).splitlines()[0]}]") from None
        download_and_prepare(ds_spec, data_dir)
        ds = read()

    def to_example(ex):
        image = ex[ds_spec.image_feature]
        if image.shape.rank == 2:
            image = image[..., None]
        key = string_key(ex["tfds_id"])
        image = image if image.dtype == tf.uint8 else tf.cast(image, tf.float32)
        return {"image": image, "label": tf.cast(ex[ds_spec.label_feature], tf.int64), "key": key}

    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    origin = f"tfds:{ds_spec.tfds_name}/{tfds_split} in {data_dir}"
    batches = list(tfds.as_numpy(ds.batch(10_000)))
    arrays = {k: np.concatenate([b[k] for b in batches]) for k in ("image", "label", "key")}
    return Split(ds_spec, split, len(arrays["label"]), origin, arrays=arrays)


def _open_records(ds_spec, tfds_split, split, data_dir, missing):
    """The shards of a prepared tfds split (ImageNet), read as encoded records. The size is the prepared one:
    a full ImageNet has 1,281,167 / 50,000 examples, a partial preparation fewer."""
    import tensorflow_datasets as tfds

    builder = tfds.builder(ds_spec.tfds_name, data_dir=data_dir)
    if not builder.is_prepared() or tfds_split not in builder.info.splits:
        raise UserError(missing)
    info = builder.info.splits[tfds_split]
    records = Records(tuple(os.fspath(f) for f in info.filepaths), tuple(int(n) for n in info.shard_lengths),
                      builder.info.features)
    if not records.size:
        raise UserError(f"{ds_spec.name}/{tfds_split} in {data_dir} has no examples")
    origin = f"tfds:{ds_spec.tfds_name}/{tfds_split} in {builder.data_dir}"
    return Split(ds_spec, split, records.size, origin, records=records)


def _prepare_imagenet(data_dir, manual_dir):
    import tensorflow_datasets as tfds

    manual_dir = manual_dir or os.path.join(data_dir, "downloads", "manual")
    needed = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
    absent = [n for n in needed if not os.path.exists(os.path.join(manual_dir, n))]
    if absent:
        raise UserError(f"ImageNet preparation needs {' and '.join(absent)} in {manual_dir} (--manual_dir)")
    print(f"preparing imagenet2012 in {data_dir} from {manual_dir}: this writes ~150 GB of TFRecords and takes hours",
          flush=True)
    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                                              try_download_gcs=False))
