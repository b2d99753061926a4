"""Source -> corruption -> preprocessing -> (materialize) -> per-epoch shuffle -> batch -> whiten -> prefetch.

Three datasets per run:
  * train: the corrupted labels/pixels, shuffled with a seed derived from (shuffle_seed, epoch), random crop or
    augmentation if asked, `drop_remainder=True`; it starts at `first_epoch`, so a resumed run sees exactly
    the batches an uninterrupted run would have seen;
  * train_eval: the same corrupted examples, in key order, no augmentation (train accuracy on the labels actually
    trained on);
  * test: clean labels unless `corrupt_test_labels`; pixel corruptions apply (the paper permutes test pixels too).

Order: the deterministic, per-example work (crop to the model input, corruption) runs once, before
the data are materialized in memory; the random work (shuffle, crop, flips, rotation) runs after, keyed on
(seed, epoch, key) with counter-based hashes. Training batches are gathered whole from the in-memory arrays (one
gather per batch, not one map call per example), then cropped, flipped, rotated and whitened as a batch, in one XLA
program. CIFAR-10/MNIST/Fashion-MNIST are held in memory as uint8 (118 MB for CIFAR-10's 50,000 28×28×3 crops, 150 MB
for the 32×32 images that --random_crop keeps; float32 only for Gaussian pixels). Without random crops or augmentation nothing random touches the pixels, so the
training images are also held whitened, as the float32 model input (470 MB more for CIFAR-10, up to
MODEL_INPUT_LIMIT_BYTES), and a batch is one gather. ImageNet is streamed (imagenet_stream.py) and only label
corruptions apply to it.
"""

import dataclasses
import math
import re

import numpy as np
import tensorflow as tf

from rethink_tf.data import corruption as corruption_lib
from rethink_tf.data import keyed_random as kr
from rethink_tf.data import preprocessing, sources
from rethink_tf.errors import UserError

AUTOTUNE = tf.data.AUTOTUNE
CIFAR_CROP = 28  # Appendix A: the CIFAR-10 models see 28×28×3 crops
# Training sets without random crops or augmentation are held whitened, as float32 model input, up to this size
# (CIFAR-10: 470 MB beside its 118 MB of uint8); larger ones are whitened per batch.
MODEL_INPUT_LIMIT_BYTES = 2 << 30


@dataclasses.dataclass
class Datasets:
    """What `build` returns.

    Attributes:
      train: callable (first_epoch, first_step=0, shard=None) -> tf.data.Dataset of (image, label) batches from that
        step of that epoch to the end of `epochs`: exactly the batches an uninterrupted run sees from there.
        shard=(num_pipelines, index, per_replica_batch): one worker's input under a multi-worker strategy, batches
        of per_replica_batch, the same number of steps on every worker: each worker's columns of the
        global batches' indices, gathered and augmented by that worker alone (see _shard for the rule).
      train_eval, test: tf.data.Datasets of (image, label) batches.
      steps_per_epoch: optimizer steps per epoch (train size // batch size).
      train_size, test_size: examples per split.
      input_shape: the model input shape.
      num_classes: number of classes.
      corruption: the Corruption applied.
      summary: the corruption record for results.json (label fingerprint, changed fraction, data origin).
      changed: for an in-memory label corruption with 0 < p < 1, a bool array over train_eval's examples: whose
        label the corruption changed (memorization metrics); else None.
    """

    train: object
    train_eval: object
    test: object
    steps_per_epoch: int
    train_size: int
    test_size: int
    input_shape: tuple
    num_classes: int
    corruption: object
    summary: dict
    changed: object = None
    train_labels: object = None  # in-memory: {key, clean, trained, index} arrays of the training set in key order
    extra_test: dict = dataclasses.field(default_factory=dict)  # --extra_test: {name: (image, label) batches}
    device_source: object = None  # in-memory: a DeviceSource, what --device_data trains from (a Datasets whose
    # train is replaced must drop it: --device_data, the default under several replicas, would train from it)


@dataclasses.dataclass
class DeviceSource:
    """The in-memory training set for --device_data: the arrays a training loop places on its devices once, each
    epoch's batch indices as one tensor, and the per-batch transform, so that a step gathers, crops, augments and
    whitens its batch on the device inside the compiled loop, with no tf.data element per step (without
    augmentation the set is held whitened, `prepared`, and the step only gathers).

    arrays() -> (images, labels, keys), what the loop places on its devices; rows(epoch, shard=None) -> int64
    [steps_per_epoch, worker batch]: row s holds the examples of the epoch's step s, exactly those (and in the order)
    of `train`'s batches, sharded the same way (replica_columns splits a worker's row between its replicas as
    `train` does); batch(images, labels, keys, idx, epoch) -> (x, y): the very batch `train` yields for them (the
    same gather, crop, flip, rotation and whitening).
    """

    images: object  # an array, or a function that makes it on first use (the whitened set: see prepared)
    labels: object
    keys: object
    rows: object
    transform: object
    image_shape: tuple = None  # uint8 images are held packed as int32 rows (see packed)
    prepared: bool = False  # images are the model input already (whitened once): a batch is one gather
    nbytes: int = 0  # what the images take on each device

    @classmethod
    def packed(cls, images, labels, keys, rows, transform):
        """uint8 images held as int32 rows of 4 bytes each: TF has no GPU gather kernel for uint8 (it would run on
        the host and copy the set back each step), it has one for int32; the step unpacks with a bitcast."""
        if images.dtype == np.uint8 and images[0].size % 4 == 0:
            packed = np.ascontiguousarray(images).reshape(len(images), -1).view(np.int32)
            return cls(packed, labels, keys, rows, transform, tuple(images.shape[1:]), nbytes=packed.nbytes)
        return cls(images, labels, keys, rows, transform, nbytes=images.nbytes)

    def arrays(self):
        images = self.images() if callable(self.images) else self.images
        return images, self.labels, self.keys

    def batch(self, images, labels, keys, idx, epoch):
        x = tf.gather(images, idx)
        if self.prepared:
            return x, tf.gather(labels, idx)
        if self.image_shape is not None:  # int32 rows back to the uint8 images they hold (bytes in memory order)
            x = tf.reshape(tf.bitcast(x, tf.uint8), (-1, *self.image_shape))
        return self.transform(x, tf.gather(keys, idx), epoch), tf.gather(labels, idx)


def model_input_shape(spec):
    """The input shape the models see: 28×28×3 for CIFAR-10 (centre crop), 299² for ImageNet, else the stored shape
    (28×28×1 for (Fashion-)MNIST; a tfds:NAME or user dataset as it is)."""
    if spec.name == "cifar10":
        return (CIFAR_CROP, CIFAR_CROP, 3)
    if spec.image_shape is None:
        return (preprocessing.INCEPTION_SIZE, preprocessing.INCEPTION_SIZE, 3)
    return tuple(spec.image_shape)


def check_combination(cfg):
    """Rejects corruption/augmentation combinations that the paper does not define, with one line each."""
    corruption_lib.check_kind(cfg.corrupt, cfg.corrupt_prob, cfg.noise_matrix, cfg.noise_std, cfg.train_label_feature)
    if cfg.train_label_feature and not cfg.dataset.startswith(sources.TFDS_PREFIX):
        raise UserError(f"--train_label_feature reads the annotators' labels of a tfds dataset (--dataset=tfds:cifar10_n"
                        f" or tfds:cifar100_n); {cfg.dataset} has none")
    if cfg.extra_test and cfg.corrupt_test_labels:
        raise UserError("--extra_test scores other test sets on their own labels; with --corrupt_test_labels they "
                        "would be corrupted with the test split's draws (and flip's threshold): drop one of them")
    if cfg.extra_test and cfg.dataset == "imagenet2012":
        raise UserError("--extra_test evaluates in-memory test sets of the run's image shape; imagenet2012 is streamed")
    if cfg.data_service and cfg.dataset != "imagenet2012":
        raise UserError("--data_service decodes the streamed ImageNet input; the in-memory datasets need none")
    if cfg.data_service and not re.fullmatch(r"grpc://[^:/]+:\d+", cfg.data_service):
        raise UserError(f"--data_service must be grpc://HOST:PORT; received {cfg.data_service!r}")
    if cfg.corrupt in corruption_lib.PIXEL_KINDS and (cfg.random_crop or cfg.augment or cfg.imagenet_augment):
        raise UserError(f"--corrupt={cfg.corrupt} permutes or replaces the model-input pixels; combining it with "
                        "random crops or augmentation is not defined by the paper")
    if cfg.dataset == "imagenet2012" and cfg.corrupt in corruption_lib.PIXEL_KINDS:
        raise UserError(f"--corrupt={cfg.corrupt} is a CIFAR-10 experiment; on imagenet2012 only label corruptions apply")
    if cfg.dataset != "cifar10" and cfg.random_crop:
        raise UserError(f"--random_crop takes 28x28 windows of CIFAR-10's 32x32 images; {cfg.dataset} has no margin")
    if cfg.dataset != "imagenet2012" and cfg.imagenet_augment:
        raise UserError("--imagenet_augment is the Inception V3 ImageNet augmentation; use --augment for CIFAR-10")
    if cfg.dataset == "imagenet2012" and (cfg.augment or cfg.random_crop):
        raise UserError("on imagenet2012 use --imagenet_augment (the TF inception distortions)")


def _materialize(ds, size):
    """Runs a deterministic per-example pipeline once and returns its output as numpy arrays."""
    parts = list(ds.batch(max(1, min(size, 4096))).as_numpy_iterator())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def build(cfg, batch_size, epochs, num_replicas=1, deterministic=False, splits=None, service_job=None):
    """Builds the train / train_eval / test datasets of a run.

    Args:
      cfg: a DataConfig.
      batch_size: the global batch size.
      epochs: the last epoch (exclusive) the train stream covers.
      num_replicas: replicas in sync; the global batch must divide evenly.
      deterministic: keep the streamed (ImageNet) input's order a function of the seed; the in-memory
        pipelines are deterministic whatever this says.
      splits: (train, test) sources.Splits already loaded (a user's data, sources.from_arrays) instead of cfg's
        dataset.
      service_job: with cfg.data_service, the name this run's trainers share on the dispatcher, the same in each of
        them and unique to the run and attempt (training.run passes the run's name and a token the trainers agree
        on); None: unique to this call.

    Raises:
      UserError: bad combinations, missing data, a batch larger than the training set.
    """
    check_combination(cfg)
    if batch_size % num_replicas:
        raise UserError(f"global batch size {batch_size} does not split evenly over {num_replicas} replicas")
    if splits is None:
        load = dict(data_dir=cfg.data_dir, source=cfg.source, manual_dir=cfg.manual_dir,
                    prepare_imagenet=cfg.prepare_imagenet, download=cfg.download, image_feature=cfg.image_feature,
                    label_feature=cfg.label_feature)
        splits = (sources.load(cfg.dataset, "train", num_examples=cfg.train_examples,
                               train_label_feature=cfg.train_label_feature, **load),
                  sources.load(cfg.dataset, "test", num_examples=cfg.test_examples, **load))
    train, test = splits
    spec = train.spec
    if train.size < batch_size:
        raise UserError(f"the training set has {train.size} examples, fewer than one batch of {batch_size}")
    shape = model_input_shape(spec)
    mean = std = None
    if cfg.corrupt == "gaussian":
        mean, std = corruption_lib.dataset_moments(preprocessing.center_crop(train.arrays["image"], shape[0]))
    corr = corruption_lib.make(cfg.corrupt, cfg.corrupt_prob, cfg.corrupt_seed, spec.num_classes, mean, std,
                               cfg.corrupt_test_labels, classes=spec.classes, noise_matrix=cfg.noise_matrix,
                               noise_std=cfg.noise_std, train_label_feature=cfg.train_label_feature)
    if corr.kind == "flip":
        if not spec.in_memory:
            raise UserError(f"--corrupt=flip selects exactly round(p·n) examples of the whole split, which needs every "
                            f"example's key up front; {cfg.dataset} is streamed: use --corrupt=labels")
        corr = corruption_lib.with_flip_thresholds(corr, {"train": train.arrays["key"], "test": test.arrays["key"]})
    steps = train.size // batch_size
    summary = {"train_origin": train.origin, "test_origin": test.origin, "train_size": train.size,
               "test_size": test.size, "data_fingerprint": sources.fingerprint(train, test),
               "example_keys": sources.KEY_SCHEME if spec.in_memory else "file_name"}
    if spec.in_memory:
        summary["train_labels"] = corruption_lib.label_summary(corr, train.arrays["label"], train.arrays["key"], "train",
                                                               given=train.arrays.get("human_label"))
        summary["test_labels"] = corruption_lib.label_summary(corr, test.arrays["label"], test.arrays["key"], "test")
        if mean is not None:
            summary["gaussian_mean"], summary["gaussian_std"] = list(mean), list(std)
        return _build_in_memory(cfg, corr, train, test, shape, batch_size, epochs, steps, summary)
    from rethink_tf.data import imagenet_stream  # it builds on this module's Datasets and batch sharding

    return imagenet_stream.build(cfg, corr, train, test, shape, batch_size, epochs, steps, summary, deterministic,
                                 service_job)


def _prepared(corr, split, shape, crop):
    """Deterministic part, per example: [centre crop] -> corruption. Materialized once.

    Images stay uint8 (a quarter of float32's memory: 150 MB for CIFAR-10's training set) unless the corruption
    makes new values (gaussian, additive_gaussian): the permutations of shuffled/random pixels move uint8 values exactly, so the
    [0, 1] float image the corruption sees is converted back without loss. Float images (a user's data) are taken
    in their own units and stay float32.
    """
    side = shape[0]

    def prepare(ex):
        image = preprocessing.to_unit(ex["image"]) if ex["image"].dtype == tf.uint8 else ex["image"]
        if crop:
            image = preprocessing.center_crop(image, side)
        return {**ex, "image": image}

    ds = split.dataset().map(prepare, num_parallel_calls=AUTOTUNE)
    ds = ds.map(corruption_lib.example_map(corr, split.name), num_parallel_calls=AUTOTUNE)
    if corr.kind not in corruption_lib.NEW_VALUES and split.arrays["image"].dtype == np.uint8:  # uint8 again: no float copy
        ds = ds.map(lambda ex: {**ex, "image": tf.cast(tf.round(ex["image"] * 255.0), tf.uint8)},
                    num_parallel_calls=AUTOTUNE)
    return _materialize(ds, split.size)


def _to_model_input(images):
    """uint8 (or gaussian float) batch -> whitened float32: /255 and per_image_whitening (Appendix A)."""
    if images.dtype == tf.uint8:
        images = preprocessing.to_unit(images)
    return preprocessing.whiten(images)


def _eval_dataset(arrays, batch_size):
    ds = tf.data.Dataset.from_tensor_slices((arrays["image"], arrays["label"])).batch(batch_size)
    return ds.map(lambda x, y: (_to_model_input(x), y), num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)


def augment_params(images, keys, shuffle_seed, epoch, side, random_crop, augment):
    """Each image's crop offsets, angle and flip: pure functions of (shuffle_seed, epoch, key), the same whatever
    batch or position the image lands in (hence identical on resume).

    uniform(shuffle_seed, AUGMENT, epoch, key, j) for j = 0, 1: crop offsets (uniform over the H − side + 1 positions);
    j = 2: flip if < 1/2; j = 3: angle uniform in ±25°. Returns (top, left, radians, flip): top and left int32
    (None without random_crop), radians float32 and flip bool (None without augment).
    """
    def u(j):
        return kr.uniform(shuffle_seed, kr.AUGMENT, epoch, keys, j)

    top = left = radians = flip = None
    if random_crop:
        span = tf.shape(images, out_type=tf.int64)[1] - side + 1
        top = tf.cast(tf.floor(u(0) * tf.cast(span, tf.float64)), tf.int32)
        left = tf.cast(tf.floor(u(1) * tf.cast(span, tf.float64)), tf.int32)
    if augment:
        degrees = tf.cast((2.0 * u(3) - 1.0) * preprocessing.ROTATION_DEGREES, tf.float32)
        radians, flip = degrees * (math.pi / 180.0), u(2) < 0.5
    return top, left, radians, flip


def augment_batch(images, keys, shuffle_seed, epoch, side, random_crop, augment):
    """Table 1's random crop and Table 4's flip + rotation for a batch, with augment_params' randomness, step by step
    and not yet whitened (uint8 windows for a crop alone, else [0, 1] floats): the reference that augmented_input,
    what training runs, is tested against."""
    top, left, radians, flip = augment_params(images, keys, shuffle_seed, epoch, side, random_crop, augment)
    if random_crop:
        images = preprocessing.crop_batch(images, top, left, side)
    if augment:  # flip, then rotate: one sampling pass (the flip is a mirrored sampling coordinate)
        images = preprocessing.rotate_batch(images, radians, flip)
    return images


def augmented_input(images, keys, shuffle_seed, epoch, side, random_crop, augment):
    """augment_batch then whitening, as one XLA program (preprocessing.augmented_input: the crop folded into the
    rotation's gathers, each pixel read once): the model input of an augmented training batch."""
    top, left, radians, flip = augment_params(images, keys, shuffle_seed, epoch, side, random_crop, augment)
    if top is None:  # no random crop: the whole (already centre-cropped) image is the window
        top = left = tf.zeros(tf.shape(keys), tf.int32)
    return preprocessing.augmented_input_xla(images, top, left, side, radians, flip)


def _build_in_memory(cfg, corr, train, test, shape, batch_size, epochs, steps, summary):
    needs_crop = train.spec.image_shape[0] != shape[0]
    # With a random crop the full 32×32 image is kept and cropped per epoch; otherwise the centre crop is final.
    train_full = _prepared(corr, train, shape, crop=needs_crop and not cfg.random_crop)
    train_eval = _prepared(corr, train, shape, crop=needs_crop) if cfg.random_crop else train_full
    test_arr = _prepared(corr, test, shape, crop=needs_crop)
    extra = {}
    for name in cfg.extra_test_names():  # prepared as the test set is: same crop, pixel corruption, whitening
        split = sources.load_extra_test(name, cfg.data_dir, cfg.download)
        if split.spec.image_shape != train.spec.image_shape or split.spec.num_classes != train.spec.num_classes:
            raise UserError(f"--extra_test={name} holds {split.spec.num_classes} classes of "
                            f"{'x'.join(map(str, split.spec.image_shape))} images; the run's data hold "
                            f"{train.spec.num_classes} of {'x'.join(map(str, train.spec.image_shape))}")
        extra[name] = _eval_dataset(_prepared(corr, split, shape, crop=needs_crop), batch_size)
        summary.setdefault("extra_test", {})[name] = {"origin": split.origin, "size": split.size,
                                                      "data_fingerprint": sources.fingerprint(split)}
    labels, keys = (tf.constant(train_full[k]) for k in ("label", "key"))
    side, size = shape[0], train.size

    def transform(x, k, epoch):
        if not (cfg.random_crop or cfg.augment):
            return _to_model_input(x)
        return augmented_input(x, k, cfg.shuffle_seed, epoch, side, cfg.random_crop, cfg.augment)

    # Nothing random touches the pixels without random crops or augmentation: the model input is then a pure
    # function of the stored image, made once (bitwise what per-batch whitening makes on the host: tested), and a
    # training batch is one gather, in a plain map (tf.data's default map_parallelization decides its threads).
    # The host then does no per-step arithmetic, which under several replicas on one host competes with their steps
    # for the cores. Made on the host CPU, on the first train() call (or --device_data's first placement).
    prepared = not (cfg.random_crop or cfg.augment) and 4 * train_full["image"].size <= MODEL_INPUT_LIMIT_BYTES
    held = {}

    def host_images():
        if "images" not in held:
            with tf.init_scope(), tf.device("/CPU:0"):  # eager, whatever context train() is called in
                if prepared:  # chunk by chunk: the whole set's float temporaries would take several times its size
                    held["images"] = tf.concat([_to_model_input(tf.constant(train_full["image"][i:i + 4096]))
                                                for i in range(0, size, 4096)], axis=0)
                else:
                    held["images"] = tf.constant(train_full["image"])
        return held["images"]

    def epoch_rows(epoch, first_step=0, shard=None):
        # The epoch's order is a pure function of (shuffle_seed, epoch): argsort of hashed uniforms. It does not
        # depend on TF's shuffle implementation or global seed, so a resumed run replays the same batches; a
        # mid-epoch resume drops the first first_step batches' indices before any image is touched. Rows are the
        # global batches (the remainder dropped); a shard keeps its worker's columns (_shard's rule, applied to
        # indices: each worker gathers and augments only its share).
        order = tf.argsort(kr.uniform(cfg.shuffle_seed, kr.EPOCH_ORDER, epoch, tf.range(size, dtype=tf.int64)),
                           stable=True)
        rows = tf.reshape(order[first_step * batch_size:steps * batch_size], [-1, batch_size])
        if shard is not None:
            local = worker_batch(batch_size, shard)
            rows = rows[:, shard[1] * local:(shard[1] + 1) * local]
        return rows

    def epoch_indices(epoch, first_step=0, shard=None):
        return tf.data.Dataset.from_tensor_slices(epoch_rows(epoch, first_step, shard))

    def epochs_from(first_epoch, first_step, one_epoch):
        ds = one_epoch(first_epoch, first_step)
        if first_epoch + 1 < epochs:
            ds = ds.concatenate(tf.data.Dataset.range(first_epoch + 1, epochs).flat_map(one_epoch))
        return ds

    def train_stream(first_epoch=0, first_step=0, shard=None):
        images = host_images()

        def one_epoch(epoch, first_step=0):
            def batch(idx):  # one gather per batch, then vectorized (XLA-compiled) augmentation and whitening
                x = tf.gather(images, idx)
                if not prepared:
                    x = transform(x, tf.gather(keys, idx), tf.cast(epoch, tf.int64))
                return x, tf.gather(labels, idx)

            return epoch_indices(epoch, first_step, shard).map(batch, num_parallel_calls=None if prepared else AUTOTUNE)

        # the replicas' batches are split from the worker's one gathered batch: a tf.data element costs more than
        # its gather (2 logical CPUs: 0.9 against 0.8 ms per step of a tiny model when each replica gathered its own)
        return _per_replica(epochs_from(first_epoch, first_step, one_epoch), batch_size, shard).prefetch(AUTOTUNE)

    def device_rows(epoch, shard=None):  # --device_data: the epoch's batches as indices, in one tensor
        # int64: TensorFlow keeps int32 tensors placed on a GPU in host memory (each step would copy its indices)
        with tf.init_scope(), tf.device("/CPU:0"):
            return tf.cast(epoch_rows(tf.constant(epoch, tf.int64), 0, shard), tf.int64)

    changed = train_eval["label"] != train.arrays["label"]  # train_eval is in key order, like train.arrays
    if corr.kind == "random_labels" or not changed.any() or changed.all():
        changed = None  # nothing to compare: every label is random, or none changed
    index = train.arrays.get("index", np.full(train.size, -1, np.int64))  # -1: a user's data, no source order
    train_labels = {"key": train.arrays["key"], "clean": train.arrays["label"], "trained": train_eval["label"],
                    "index": index}
    if prepared:  # the set the tf.data path gathers from, whitened once: the step's batch is one gather, and the
        # same bits as the tf.data path's (whitening in the compiled step costs more than the whole step of a small
        # model on CPU; the float set takes 4x the uint8 set's device memory: CIFAR-10, 470 MB per device)
        device = DeviceSource(host_images, train_full["label"], train_full["key"], device_rows, transform,
                              prepared=True, nbytes=4 * train_full["image"].size)
    else:
        device = DeviceSource.packed(train_full["image"], train_full["label"], train_full["key"], device_rows,
                                     transform)
    return Datasets(train_stream, _eval_dataset(train_eval, batch_size), _eval_dataset(test_arr, batch_size),
                    steps, train.size, test.size, shape, train.spec.num_classes, corr, summary, changed,
                    train_labels, extra, device)


def _shard(ds, batch_size, shard):
    """One worker's share of a stream of global (image, label) batches: rows [index·b/n, (index+1)·b/n) of each, in
    per-replica batches (the benchmarks' synthetic streams; the in-memory pipeline applies the same rule to each
    batch's indices, before any image is gathered).

    Every worker keeps its slice of the same global batches, so the global batch a multi-worker step averages over
    is exactly the one-device batch (same examples, labels and augmentation): the trajectory differs only by
    all-reduce rounding.
    """
    if shard is None:
        return ds
    local = worker_batch(batch_size, shard)
    lo, hi = shard[1] * local, (shard[1] + 1) * local
    return per_replica(ds.map(lambda x, y: (x[lo:hi], y[lo:hi]), num_parallel_calls=AUTOTUNE), local, shard)


def _per_replica(ds, batch_size, shard):
    """A worker's stream of its share of each global batch, split into its replicas' batches."""
    return ds if shard is None else per_replica(ds, worker_batch(batch_size, shard), shard)


def worker_batch(batch_size, shard):
    """The batch one worker of `shard` = (num_pipelines, index, per_replica_batch) contributes: batch / num."""
    if batch_size % shard[0]:
        raise UserError(f"global batch size {batch_size} does not split evenly over {shard[0]} workers")
    return batch_size // shard[0]


def replica_columns(rows, shard, replica):
    """The columns of a worker's batch rows that its local replica `replica` trains on: per_replica's split (rebatch
    into per-replica batches, which tf.distribute hands to the worker's replicas in turn), applied to indices."""
    if shard is None:
        return rows
    return rows[:, replica * shard[2]:(replica + 1) * shard[2]]


def per_replica(ds, local, shard):
    """A worker's batches of `local` examples, split into its replicas' batches (several replicas per worker)."""
    return ds.rebatch(shard[2]) if shard is not None and shard[2] != local else ds


