"""ImageNet (ILSVRC2012) as tfds prepares it, read as encoded records; and its preparation from the original tars.

The records stay encoded: decoding is left to the preprocessing, which decodes only the crop window (TF Model
Garden's input path). The key of an example is a FarmHash fingerprint of its `file_name`, stable when ImageNet is
prepared again with another shard layout.
"""

import dataclasses
import os

from rethink_tf.data.sources.split import Split, string_key
from rethink_tf.errors import UserError


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


def open_records(ds_spec, tfds_split, split, data_dir, missing):
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


FULL_TRAIN_SIZE = 1_281_167
CLASSES_FILE = "rethink_tf_classes.json"  # beside a prepared ImageNet: the label ids its training split holds


def prepared_spec(ds_spec, data_dir):
    """ImageNet's DatasetSpec with the sizes of the split prepared under data_dir, and, when only some classes were
    prepared, the label ids present (a random label is drawn from those). The decay period of the recipe (2 epochs)
    then follows the prepared epoch, not 2 x 1,281,167. Unprepared: ds_spec unchanged (loading reports it).

    The classes of a partial preparation are found once by reading the training labels and kept in
    rethink_tf_classes.json beside the records (recomputed when the records change or the folder is read-only)."""
    import dataclasses
    import json

    import tensorflow_datasets as tfds

    builder = tfds.builder(ds_spec.tfds_name, data_dir=data_dir or os.path.expanduser("~/tensorflow_datasets"))
    splits = builder.info.splits if builder.is_prepared() else {}
    if "train" not in splits or ds_spec.tfds_test_split not in splits:
        return ds_spec
    train = splits["train"]
    spec = dataclasses.replace(ds_spec, train_size=int(train.num_examples),
                               test_size=int(splits[ds_spec.tfds_test_split].num_examples))
    if spec.train_size >= FULL_TRAIN_SIZE:
        return spec
    layout = [[os.path.basename(os.fspath(f)) for f in train.filepaths], [int(n) for n in train.shard_lengths]]
    cache = os.path.join(os.fspath(builder.data_dir), CLASSES_FILE)
    try:
        with open(cache) as f:
            stored = json.load(f)
        if stored.get("layout") == layout:
            return dataclasses.replace(spec, classes=tuple(stored["classes"]))
    except (OSError, ValueError, AttributeError):
        pass
    records = Records(tuple(os.fspath(f) for f in train.filepaths), tuple(layout[1]), builder.info.features)
    labels = set()
    for batch in records.read().map(lambda r: records.parse(r)["label"]).batch(4096):
        labels.update(int(v) for v in batch.numpy())
    classes = sorted(labels)
    try:
        with open(cache + ".tmp", "w") as f:
            json.dump({"layout": layout, "classes": classes}, f)
        os.replace(cache + ".tmp", cache)
    except OSError:
        pass  # a read-only copy: recomputed next time
    return dataclasses.replace(spec, classes=tuple(classes) if len(classes) < spec.num_classes else None)


def prepare(data_dir, manual_dir):
    """tfds's own imagenet2012 preparation from the ILSVRC2012 tars in manual_dir; nothing when already prepared."""
    import tensorflow_datasets as tfds

    builder = tfds.builder("imagenet2012", data_dir=data_dir)
    if builder.is_prepared():
        return
    manual_dir = manual_dir or os.path.join(data_dir, "downloads", "manual")
    needed = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
    absent = [n for n in needed if not os.path.exists(os.path.join(manual_dir, n))]
    if absent:
        raise UserError(f"ImageNet preparation needs {' and '.join(absent)} in {manual_dir} (--manual_dir)")
    print(f"preparing imagenet2012 in {data_dir} from {manual_dir}: this writes ~150 GB of TFRecords and takes hours",
          flush=True)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir,
                                                                              try_download_gcs=False))
