"""The original archives, read in place: CIFAR-10 binary and python versions, MNIST-style idx files.

CIFAR-10 binary (`cifar-10-binary.tar.gz` or `cifar-10-batches-bin/`) and python (`cifar-10-python.tar.gz` or
`cifar-10-batches-py/`), MNIST-style `{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]` (MNIST, Fashion-MNIST).
Tarballs are read in place (nothing is extracted), and the python pickles go through an unpickler that only builds
numpy arrays, so a hostile archive can neither write files nor run code. The readers return images and labels
in file order; sources.load keys them by content (split.in_key_order).
"""

import gzip
import io
import os
import pickle
import tarfile
import zlib

import numpy as np

from rethink_tf.errors import UserError

_CIFAR_BIN = ("cifar-10-batches-bin", "cifar-10-binary.tar.gz")

_CIFAR_PY = ("cifar-10-batches-py", "cifar-10-python.tar.gz")

_IDX = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def find(ds_spec, data_dir):
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


def read(ds_spec, path, split):
    try:
        if ds_spec.archive_format == "cifar":
            if "python" in os.path.basename(path) or "-py" in os.path.basename(path):
                return _read_cifar_python(path, split)
            return _read_cifar_binary(path, split)
        return _read_idx_pair(path, split)
    except (tarfile.TarError, EOFError, OSError, pickle.UnpicklingError, gzip.BadGzipFile, zlib.error) as e:
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
            _check_fits(path, member.size, f"{folder}/{n} declares")
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
        try:
            batch = _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="bytes").load()
        except pickle.UnpicklingError:
            raise  # a refused class: read() names it
        except Exception as e:  # a malformed pickle raises almost any exception type while it is parsed
            raise UserError(f"{path}: {n} is not a readable CIFAR-10 batch ({type(e).__name__}: {e})") from None
        if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
            raise UserError(f"{path}: {n} is not a CIFAR-10 batch (no b'data'/b'labels' entries)")
        data = np.asarray(batch[b"data"], np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072 or data.shape[0] != len(batch[b"labels"]):
            raise UserError(f"{path}: {n} has data of shape {data.shape} for {len(batch[b'labels'])} labels")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], np.int64))
    return _arrays(np.concatenate(images), np.concatenate(labels), path, 10)


def read_idx(path):
    """An MNIST-style idx file (optionally gzipped): magic 0x0000 08 <ndim>, big-endian int32 dims, uint8 data.

    The header's declared size is checked against the memory this process may allocate before the data are read,
    and the data are read up to that size only: a damaged or hostile file (a small gzip that expands to gigabytes)
    is one line, not an out-of-memory kill."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] != 0x08:
            raise UserError(f"{path} is not an idx file of unsigned bytes (bad magic number)")
        ndim = head[3]
        raw_dims = f.read(4 * ndim)
        if len(raw_dims) != 4 * ndim:
            raise UserError(f"{path} is truncated or corrupt: its header ends early")
        dims = np.frombuffer(raw_dims, ">i4").astype(np.int64)
        if (dims < 0).any():
            raise UserError(f"{path} is corrupt: its header declares negative dimensions {dims.tolist()}")
        expected = int(np.prod(dims))
        _check_fits(path, expected, "its header declares")
        data = f.read(expected + 1)
    if len(data) != expected:
        raise UserError(f"{path} is truncated or corrupt: {4 + 4 * ndim + len(data)} bytes or more, header says "
                        f"{4 + 4 * ndim + expected}")
    return np.frombuffer(data, np.uint8).reshape(dims)


def _check_fits(path, size, what):
    """UserError when `size` bytes would not fit in the memory this process may allocate."""
    from rethink_tf import memory

    left = memory.available()
    if size > 0.8 * left:
        raise UserError(f"{path}: {what} {size / 2**30:,.1f} GiB of data, more than this process may allocate "
                        f"({left / 2**30:,.1f} GiB): the file is damaged, or not the dataset it is named after")


def _read_idx_pair(folder, split):
    paths = []
    for stem in _IDX[split]:
        p = os.path.join(folder, stem + ".gz")
        paths.append(p if os.path.exists(p) else os.path.join(folder, stem))
        if not os.path.exists(paths[-1]):
            raise UserError(f"{p} is missing; expected {stem}.gz in {folder}")
    images, labels = (read_idx(p) for p in paths)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{folder}: {len(images)} images of shape {images.shape[1:]} for {len(labels)} labels")
    return _arrays(images[..., None], labels.astype(np.int64), folder, 10)


def _arrays(images, labels, origin, num_classes):
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise UserError(f"{origin}: labels must lie in [0, {num_classes - 1}], found {labels.min()}..{labels.max()}")
    return {"image": images, "label": labels}
