"""TensorFlow Datasets prepared under a data_dir: the small datasets read into memory, and any tfds:NAME dataset.

The readers return images and labels in tfds's prepared order; sources.load keys them by content (split.in_key_order),
so the keys do not depend on how tfds laid the examples out. ImageNet's prepared records are imagenet.py's.
"""

import os

import numpy as np

from rethink_tf.data.sources import download as download_lib
from rethink_tf.data.sources import imagenet
from rethink_tf.data.sources.split import DatasetSpec, Split
from rethink_tf.errors import UserError

TFDS_PREFIX = "tfds:"


def _builder(tfds_name, data_dir, flag):
    """(tfds's builder of tfds_name, the data_dir it reads: ~/tensorflow_datasets by default); a name tfds does not
    know is one line naming `flag`."""
    import tensorflow_datasets as tfds

    data_dir = data_dir or os.path.expanduser("~/tensorflow_datasets")
    try:
        return tfds.builder(tfds_name, data_dir=data_dir), data_dir
    except (tfds.core.registered.DatasetNotFoundError, ValueError) as e:
        raise UserError(f"{flag}={TFDS_PREFIX}{tfds_name}: tfds knows no such dataset "
                        f"({str(e).splitlines()[0][:120]})") from None


def spec(tfds_name, data_dir=None, image_feature="image", label_feature="label", train_label_feature=None):
    """The DatasetSpec of a tfds image classification dataset prepared under data_dir (a user's own data).

    It is held in memory like CIFAR-10 (so its images must have one fixed shape), its keys are content keys,
    and it is never downloaded here: prepare it with `tfds build` (tfds's own downloader) first.
    """
    import tensorflow_datasets as tfds

    name = TFDS_PREFIX + tfds_name
    builder, data_dir = _builder(tfds_name, data_dir, "--dataset")
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
    if train_label_feature:
        human = features[train_label_feature] if train_label_feature in features else None
        if not isinstance(human, tfds.features.ClassLabel) or human.num_classes != label.num_classes:
            raise UserError(f"--dataset={name} has no class-label feature {train_label_feature!r} over the "
                            f"{label.num_classes} classes of {label_feature!r} (features: {names}); CIFAR-10N's are "
                            "aggre_label, worse_label, random_label1..3, CIFAR-100N's noise_label")
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


def load(ds_spec, split, data_dir, manual_dir, prepare_imagenet, download=False, human_label_feature=None):
    """One split of a tfds-prepared dataset as a Split (in tfds's order); `human_label_feature`: also read that
    feature (CIFAR-N's annotators' labels) into arrays["human_label"], checked to be labels of the classes."""
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
        imagenet.prepare(data_dir, manual_dir)
    if not ds_spec.in_memory:
        return imagenet.open_records(ds_spec, tfds_split, split, data_dir, missing)
    not_found = (AssertionError, FileNotFoundError, tfds.core.registered.DatasetNotFoundError)
    read = lambda: tfds.load(ds_spec.tfds_name, split=tfds_split, data_dir=data_dir, download=False, try_gcs=False,
                             shuffle_files=False)
    try:
        ds = read()
    except not_found as e:
        if not (download and ds_spec.download_url):
            raise UserError(missing + f" [tfds: {str(e).splitlines()[0]}]") from None
        download_lib.download_and_prepare(ds_spec, data_dir)
        ds = read()

    def to_example(ex):
        image = ex[ds_spec.image_feature]
        if image.shape.rank == 2:
            image = image[..., None]
        image = image if image.dtype == tf.uint8 else tf.cast(image, tf.float32)
        out = {"image": image, "label": tf.cast(ex[ds_spec.label_feature], tf.int64)}
        if human_label_feature:
            out["human_label"] = tf.cast(ex[human_label_feature], tf.int64)
        return out

    ds = ds.map(to_example, num_parallel_calls=tf.data.AUTOTUNE)
    origin = f"tfds:{ds_spec.tfds_name}/{tfds_split} in {data_dir}"
    batches = list(tfds.as_numpy(ds.batch(10_000)))
    names = ("image", "label", "human_label") if human_label_feature else ("image", "label")
    arrays = {k: np.concatenate([b[k] for b in batches]) for k in names}
    if human_label_feature:
        human = arrays["human_label"]
        bad = (human < 0) | (human >= ds_spec.num_classes)
        if bad.any():
            raise UserError(f"--train_label_feature={human_label_feature}: {int(bad.sum())} of {len(human)} "
                            f"{ds_spec.name} {tfds_split} examples have no annotator label (values "
                            f"{sorted(set(human[bad].tolist()))[:3]}); it must label every training example")
        origin += f", trained on its {human_label_feature} labels"
    return Split(ds_spec, split, len(arrays["label"]), origin, arrays=arrays)


def extra_test_spec(tfds_name, data_dir=None, download=False, image_feature="image", label_feature="label"):
    """The DatasetSpec of a test-only tfds dataset evaluated beside a run's test set (--extra_test, e.g.
    cifar10_1, Recht et al. 2019's new CIFAR-10 test set): its "test" split, else "validation", else its only
    split. Not prepared and `download` on: tfds's own download and prepare (small sets; its host probed first)."""
    import tensorflow_datasets as tfds

    name = TFDS_PREFIX + tfds_name
    builder, data_dir = _builder(tfds_name, data_dir, "--extra_test")
    if not builder.is_prepared():
        homepage = builder.info.homepage or "https://github.com"
        ok, why = download_lib.network_reachable(homepage) if download else (False, "--nodownload")
        if not ok:
            raise UserError(f"--extra_test={name} is not prepared in {data_dir} and cannot be downloaded ({why}): "
                            f"run `tfds build {tfds_name} --data_dir={data_dir}` on a machine with internet and copy "
                            f"{data_dir}/{tfds_name.split('/')[0]}/ here")
        print(f"downloading {name} with tensorflow_datasets into {data_dir} (once)", flush=True)
        try:
            builder.download_and_prepare(download_config=tfds.download.DownloadConfig(try_download_gcs=False))
        except (OSError, tfds.core.download.DownloadError) as e:
            raise UserError(f"downloading {name} into {data_dir} failed: {type(e).__name__}: {e}") from None
    features = builder.info.features
    image, label = features[image_feature] if image_feature in features else None, (
        features[label_feature] if label_feature in features else None)
    if not isinstance(image, tfds.features.Image) or not isinstance(label, tfds.features.ClassLabel):
        raise UserError(f"--extra_test={name} has no image feature {image_feature!r} and class label "
                        f"{label_feature!r} (features: {', '.join(sorted(features.keys()))})")
    splits = builder.info.splits
    split = next((t for t in ("test", "validation") if t in splits), None) or (
        next(iter(splits.keys())) if len(splits) == 1 else None)
    if split is None:
        raise UserError(f"--extra_test={name} has no test or validation split ({', '.join(splits.keys())})")
    return DatasetSpec(name, tuple(image.shape), label.num_classes, 0, splits[split].num_examples, tfds_name, split,
                       True, f"a tfds-prepared {tfds_name}/ folder", image_feature=image_feature,
                       label_feature=label_feature)
