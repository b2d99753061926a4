"""Noise models beyond the paper (flip, class-conditional, partial pixel corruptions, additive Gaussian pixel noise,
CIFAR-10N's human labels through tfds's own builder), each against a NumPy twin or
the distribution it promises, keyed like the paper's: fixed across orders, recorded with their realized matrix."""

import dataclasses
import math
import os

import numpy as np
import pytest

from conftest import write_cifar_binary
from test_corruption import np_uniform
from rethink_tf import flags_lib
from rethink_tf.config import DataConfig, TrainConfig
from rethink_tf.data import corruption as C
from rethink_tf.data import pipeline, sources
from rethink_tf.errors import UserError

# CIFAR-10's class order, as its batches.meta.txt lists it (the dataset's own file, not the package's table)
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def np_flip(labels, keys, seed, p, k=10, split=0):
    """Flip in NumPy: the round(p·n) examples with the smallest hashed uniform (stream 23) move by 1 + a uniform
    shift over the k - 1 other classes (stream 29)."""
    u = np_uniform(seed, 23, split, keys)
    chosen = np.argsort(u, kind="stable")[:int(round(p * len(keys)))]
    out = labels.copy()
    shift = 1 + np.floor(np_uniform(seed, 29, split, keys) * (k - 1)).astype(np.int64)
    out[chosen] = (labels[chosen] + shift[chosen]) % k
    return out


@pytest.mark.parametrize("p", [0.0, 0.2, 0.37, 1.0])
def test_flip_moves_exactly_round_p_n_labels_to_another_class(p):
    n = 20_000
    rng = np.random.default_rng(1)
    labels, keys = rng.integers(0, 10, n), rng.choice(10 ** 9, n, replace=False) * 7 + 3
    c = C.with_flip_thresholds(C.make("flip", p, seed=5), {"train": keys})
    out = C.corrupt_labels(c, labels, keys).numpy()
    np.testing.assert_array_equal(out, np_flip(labels, keys, 5, p))
    assert np.sum(out != labels) == round(p * n)  # exactly, not ≈ 0.9·p as the paper's rule gives
    if p == 1.0:  # every label moved, uniformly over the 9 others
        shifts = np.bincount((out - labels) % 10, minlength=10)
        assert shifts[0] == 0
        chi2 = np.sum((shifts[1:] - n / 9) ** 2 / (n / 9))
        assert chi2 < 26.12  # chi-square, 8 dof, p = 0.001
    # fixed whatever order the examples come in: the threshold is a property of the set, the mask of the key
    perm = rng.permutation(n)
    c2 = C.with_flip_thresholds(C.make("flip", p, seed=5), {"train": keys[perm]})
    np.testing.assert_array_equal(C.corrupt_labels(c2, labels[perm], keys[perm]).numpy(), out[perm])
    summary = C.label_summary(c, labels, keys)
    assert summary["changed_fraction"] == summary["expected_changed_fraction"] == round(p * n) / n
    m = np.array(summary["noise_matrix"])
    assert m.sum() == n and np.trace(m) == n - round(p * n)
    np.testing.assert_array_equal(m.sum(1), np.bincount(labels, minlength=10))


def test_cifar10_pairs_are_patrinis_and_realize_their_matrix():
    name = dict(enumerate(CIFAR10_NAMES))
    pairs = {(name[a], name[b]) for a, b in C.NOISE_PAIRS["cifar10_pairs"]}
    assert pairs == {("truck", "automobile"), ("bird", "airplane"), ("deer", "horse"), ("cat", "dog"),
                     ("dog", "cat")}
    p, n = 0.4, 100_000
    rng = np.random.default_rng(2)
    labels, keys = rng.integers(0, 10, n), np.arange(n)
    c = C.make("class_conditional", p, seed=1, noise_matrix="cifar10_pairs")
    t = np.array(c.matrix)
    np.testing.assert_allclose(t.sum(1), 1.0)
    out = C.corrupt_labels(c, labels, keys).numpy()
    # NumPy twin: the inverse CDF of the label's row at a hashed uniform (stream 37)
    u = np_uniform(1, 37, 0, keys)
    twin = np.array([np.searchsorted(np.cumsum(t[y]), v, side="right") for y, v in zip(labels, u)])
    np.testing.assert_array_equal(out, np.minimum(twin, 9))
    realized = np.array(C.label_summary(c, labels, keys)["noise_matrix"], np.float64)
    rows = realized.sum(1, keepdims=True)
    # each cell within 5 binomial standard deviations of T
    assert np.all(np.abs(realized / rows - t) <= 5 * np.sqrt(t * (1 - t) / rows) + 1e-12)
    assert realized[name_index("truck"), name_index("automobile")] > 0 and realized[1, 9] == 0  # not symmetric


def name_index(name):
    return CIFAR10_NAMES.index(name)


def test_a_given_transition_matrix_and_its_errors():
    t = np.array([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.2, 0.3, 0.5]])
    c = C.make("class_conditional", seed=0, num_classes=3, noise_matrix=C.matrix_text(t))
    n = 30_000
    labels, keys = np.arange(n) % 3, np.arange(n)
    realized = np.array(C.label_summary(c, labels, keys)["noise_matrix"], np.float64)
    np.testing.assert_allclose(realized / realized.sum(1, keepdims=True), t, atol=0.02)
    assert realized[1, 0] == realized[1, 2] == realized[0, 2] == 0  # zeros of T are never drawn
    with pytest.raises(UserError, match="row-stochastic"):
        C.make("class_conditional", num_classes=2, noise_matrix="0.5 0.4; 0 1")
    with pytest.raises(UserError, match="square"):
        C.make("class_conditional", num_classes=2, noise_matrix="0.5 0.5")
    with pytest.raises(UserError, match="the data have 10 classes"):
        C.make("class_conditional", num_classes=10, noise_matrix="1 0; 0 1")
    with pytest.raises(UserError, match="drop --corrupt_prob"):
        C.make("class_conditional", 0.3, num_classes=2, noise_matrix="1 0; 0 1")
    with pytest.raises(UserError, match="give --corrupt_prob"):
        C.make("class_conditional", noise_matrix="cifar10_pairs")
    with pytest.raises(UserError, match="needs one"):
        C.make("class_conditional", 0.3)
    with pytest.raises(UserError, match="needs --corrupt_prob"):
        C.make("flip")


@pytest.mark.parametrize("kind", ["shuffled_pixels", "random_pixels", "gaussian"])
def test_a_fraction_of_images_gets_the_pixel_corruption(kind):
    import tensorflow as tf

    n, p = 400, 0.3
    rng = np.random.default_rng(0)
    images = rng.random((n, 6, 6, 3)).astype(np.float32)
    keys = np.arange(n, dtype=np.int64) * 11
    kw = dict(mean=(0.5,) * 3, std=(0.2,) * 3) if kind == "gaussian" else {}
    part, full = C.make(kind, p, seed=2, **kw), C.make(kind, seed=2, **kw)
    assert part.pixel_fraction == p and full.pixel_fraction is None and C.make(kind, 1.0, **kw).pixel_fraction is None
    got = np.stack([C.corrupt_image(part, tf.constant(x), k).numpy() for x, k in zip(images, keys)])
    every = np.stack([C.corrupt_image(full, tf.constant(x), k).numpy() for x, k in zip(images, keys)])
    hit = np_uniform(2, 31, 0, keys) < p  # NumPy twin of the mask (stream 31)
    np.testing.assert_array_equal(got[~hit], images[~hit])
    np.testing.assert_allclose(got[hit], every[hit], rtol=0, atol=1e-6)
    assert abs(hit.mean() - p) <= 5 * math.sqrt(p * (1 - p) / n)


def test_flags_read_the_noise_matrix_and_reject_what_would_be_ignored(tmp_path):
    from absl import flags

    def parse(*argv):
        fv = flags.FlagValues()
        flags_lib.define_train_flags(fv)
        fv(["prog", *argv])
        return flags_lib.config_from_flags(fv)

    t = np.array([[0.9, 0.1], [0.25, 0.75]])
    np.save(tmp_path / "t.npy", t)
    (tmp_path / "t.txt").write_text("0.9, 0.1\n0.25, 0.75\n")
    texts = {parse("--corrupt=class_conditional", f"--noise_matrix={f}").data.noise_matrix
             for f in (tmp_path / "t.npy", tmp_path / "t.txt", "0.9 0.1; 0.25 0.75")}
    assert len(texts) == 1  # a file and its inline rows name one run
    np.testing.assert_array_equal(C.parse_matrix(texts.pop()), t)
    cfg = parse("--corrupt=random_pixels", "--corrupt_prob=0.5", "--model=mlp_1x512")
    assert cfg.data.corrupt_prob == 0.5 and "-random_pixels-p0.5-" in cfg.name()
    assert parse("--corrupt=flip", "--corrupt_prob=0.2").name() != parse("--corrupt=labels",
                                                                          "--corrupt_prob=0.2").name()
    for argv, match in ((["--corrupt=flip"], "needs --corrupt_prob"),
                        (["--corrupt=class_conditional"], "needs one"),
                        (["--corrupt=labels", "--corrupt_prob=0.2", "--noise_matrix=cifar10_pairs"],
                         "class_conditional only"),
                        (["--corrupt=none", "--corrupt_prob=0.2"], "needs a corruption"),
                        (["--corrupt=class_conditional", "--noise_matrix=pairs"], "neither a file")):
        with pytest.raises((flags.IllegalFlagValueError, UserError), match=match):
            parse(*argv)


def test_the_pipeline_trains_on_the_flipped_labels_and_marks_them_changed(tmp_path):
    write_cifar_binary(str(tmp_path), per_batch=20)  # 100 train, 15 test
    cfg = DataConfig(dataset="cifar10", data_dir=str(tmp_path), corrupt="flip", corrupt_prob=0.3, corrupt_seed=4)
    d = pipeline.build(cfg, batch_size=10, epochs=1)
    s = d.summary["train_labels"]
    assert s["changed_fraction"] == 0.3 and s["kind"] == "flip" and d.summary["test_labels"]["changed_fraction"] == 0
    assert d.changed.sum() == 30  # the memorization metrics compare the changed and the intact 70
    trained = np.concatenate([y.numpy() for _, y in d.train_eval])
    clean = sources.load("cifar10", "train", data_dir=str(tmp_path)).arrays["label"]  # in key order, as train_eval
    np.testing.assert_array_equal(trained != clean, d.changed)
    assert np.all(trained[d.changed] != clean[d.changed])
    name = TrainConfig(model="mlp_1x512", data=cfg).name()
    assert "-flip-p0.3-" in name


def test_randomize_refuses_flip_on_a_stream():
    import tensorflow as tf

    from rethink_tf.randomization.randomize import randomize

    ds = tf.data.Dataset.from_tensor_slices((np.zeros((4, 2, 2, 1), np.uint8), np.arange(4)))
    with pytest.raises(UserError, match="cannot select exactly"):
        randomize(ds, "flip", 0.5, num_classes=4)
    out = randomize(ds, "class_conditional", num_classes=4, noise_matrix="0 1 0 0; 0 0 1 0; 0 0 0 1; 1 0 0 0")
    assert [int(y) for _, y in out] == [1, 2, 3, 0]  # a permutation matrix moves every class to the next


# ----------------------------------------------------------------------------- additive Gaussian pixel noise

def np_normal(seed, split, key, n):
    """The additive noise in NumPy: Box-Muller on the hashed uniforms of stream 41 at positions 2i and 2i + 1."""
    idx = np.arange(n, dtype=np.int64)
    u1, u2 = 1.0 - np_uniform(seed, 41, split, key, 2 * idx), np_uniform(seed, 41, split, key, 2 * idx + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def test_additive_gaussian_adds_sigma_times_keyed_normals_to_every_value():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    images = rng.random((40, 5, 5, 3)).astype(np.float32)
    keys = rng.choice(10 ** 9, 40, replace=False).astype(np.int64)
    c = C.make("additive_gaussian", seed=7, noise_std=0.25)
    assert c.touches_pixels and not c.touches_labels and c.noise_std == 0.25
    for split, s in (("train", 0), ("test", 1)):  # both splits, each with its own draws (as every pixel kind)
        got = np.stack([C.corrupt_image(c, tf.constant(x), k, split).numpy() for x, k in zip(images, keys)])
        want = images + 0.25 * np.stack([np_normal(7, s, k, x.size).reshape(x.shape) for x, k in zip(images, keys)])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    z = (got - images).ravel() / 0.25  # 3,000 draws: N(0, 1), not clipped (values leave [0, 1])
    assert abs(z.mean()) < 0.1 and abs(z.std() - 1) < 0.06 and (got < 0).any() and (got > 1).any()
    # the same key gives the same noise in any order or epoch: a fixed corruption
    again = C.corrupt_image(c, tf.constant(images[5]), keys[5], "test").numpy()
    np.testing.assert_array_equal(again, got[5])


def test_a_fraction_of_images_gets_additive_noise():
    import tensorflow as tf

    n, p = 300, 0.4
    images = np.random.default_rng(0).random((n, 4, 4, 1)).astype(np.float32)
    keys = np.arange(n, dtype=np.int64) * 13
    part = C.make("additive_gaussian", p, seed=2, noise_std=0.1)
    got = np.stack([C.corrupt_image(part, tf.constant(x), k).numpy() for x, k in zip(images, keys)])
    hit = np_uniform(2, 31, 0, keys) < p
    np.testing.assert_array_equal(got[~hit], images[~hit])
    assert np.all(np.abs(got[hit] - images[hit]).max(axis=(1, 2, 3)) > 0)


def test_additive_gaussian_through_flags_and_the_pipeline(tmp_path):
    from absl import flags

    def parse(*argv):
        fv = flags.FlagValues()
        flags_lib.define_train_flags(fv)
        fv(["prog", "--model=mlp_1x512", *argv])
        return flags_lib.config_from_flags(fv)

    a, b = parse("--corrupt=additive_gaussian", "--noise_std=0.1"), parse("--corrupt=additive_gaussian",
                                                                         "--noise_std=0.2")
    assert "-additive_gaussian-sd0.1-" in a.name() and a.name() != b.name()
    assert a.protocol() == b.protocol()  # σ varies within one protocol, like p: one curve
    assert parse().name() == TrainConfig(model="mlp_1x512").name()  # the new field renames no run
    for argv, match in ((["--corrupt=additive_gaussian"], "give it"),
                        (["--corrupt=labels", "--corrupt_prob=0.1", "--noise_std=0.1"], "additive_gaussian only"),
                        (["--corrupt=additive_gaussian", "--noise_std=0"], "positive"),
                        (["--corrupt=additive_gaussian", "--noise_std=0.1", "--random_crop"], "cannot be")):
        with pytest.raises((flags.IllegalFlagValueError, UserError), match=match):
            parse(*argv)
    write_cifar_binary(str(tmp_path), per_batch=4)  # 20 train, 6 test
    cfg = DataConfig(dataset="cifar10", data_dir=str(tmp_path), corrupt="additive_gaussian", noise_std=0.3)
    d = pipeline.build(cfg, batch_size=4, epochs=1)
    test = sources.load("cifar10", "test", data_dir=str(tmp_path)).arrays
    crop = test["image"][:, 2:30, 2:30].astype(np.float64) / 255.0  # the model input: 28×28 centre crop
    noisy = np.stack([x + 0.3 * np_normal(0, 1, k, x.size).reshape(x.shape) for x, k in zip(crop, test["key"])])
    whitened = np.concatenate([x.numpy() for x, _ in d.test])
    flat = noisy.reshape(len(noisy), -1)
    adj = np.maximum(flat.std(1), 1.0 / np.sqrt(flat.shape[1]))
    want = ((flat - flat.mean(1, keepdims=True)) / adj[:, None]).reshape(noisy.shape)  # per_image_standardization
    np.testing.assert_allclose(whitened, want, rtol=0, atol=2e-4)
    assert d.summary["train_labels"]["changed_fraction"] == 0


# ----------------------------------------------------------------------------- human labels (CIFAR-10N)

@pytest.fixture(scope="module")
def cifar10_n(tmp_path_factory):
    """tfds's own cifar10_n builder, prepared from files in its real formats: a CIFAR-10 binary folder (what its
    download_and_extract returns; the download patched to it) and the three manual files (annotations CSV in the
    annotation order, side-info CSV, image_order_c10.npy). Returns (data_dir, {image bytes: (clean, worse)})."""
    import tensorflow_datasets as tfds

    root = str(tmp_path_factory.mktemp("cifar10n"))
    path, batches = write_cifar_binary(root, per_batch=20, test=15, as_tar=False)
    with open(os.path.join(path, "batches.meta.txt"), "w") as f:
        f.write("\n".join(CIFAR10_NAMES) + "\n")
    images = np.concatenate([batches[f"data_batch_{i}.bin"][0] for i in range(1, 6)])
    clean = np.concatenate([batches[f"data_batch_{i}.bin"][1] for i in range(1, 6)])
    n = len(clean)
    rng = np.random.default_rng(0)
    worse = np.where(rng.random(n) < 0.4, (clean + rng.integers(1, 10, n)) % 10, clean)
    order = rng.permutation(n)  # annotation row j belongs to image order[j] (the builder inverts it)
    manual = os.path.join(root, "manual")
    os.makedirs(manual)
    with open(os.path.join(manual, "CIFAR-10_human_annotations.csv"), "w") as f:
        f.write("clean_label,aggre_label,worse_label,random_label1,random_label2,random_label3\n")
        for j in order:
            f.write(f"{clean[j]},{clean[j]},{worse[j]},{clean[j]},{worse[j]},{clean[j]}\n")
    with open(os.path.join(manual, "side_info_cifar10N.csv"), "w") as f:
        f.write("image_index,worker1_id,worker1_time,worker2_id,worker2_time,worker3_id,worker3_time\n")
        f.writelines(f"{i},1,2.0,3,4.0,5,6.0\n" for i in range(n // 10))
    np.save(os.path.join(manual, "image_order_c10.npy"), order)
    data_dir = os.path.join(root, "tfds")
    original = tfds.download.DownloadManager.download_and_extract
    tfds.download.DownloadManager.download_and_extract = lambda self, url: root
    try:
        tfds.builder("cifar10_n", data_dir=data_dir).download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual))
    finally:
        tfds.download.DownloadManager.download_and_extract = original
    return data_dir, {x.tobytes(): (int(c), int(w)) for x, c, w in zip(images, clean, worse)}


def test_human_labels_train_on_the_annotators_labels_and_score_clean_test_labels(cifar10_n):
    data_dir, truth = cifar10_n
    cfg = DataConfig(dataset="tfds:cifar10_n", data_dir=data_dir, corrupt="human_labels",
                     train_label_feature="worse_label")
    d = pipeline.build(cfg, batch_size=10, epochs=1)
    train = sources.load("tfds:cifar10_n", "train", data_dir=data_dir, train_label_feature="worse_label").arrays
    want = np.array([truth[x.tobytes()] for x in train["image"]])  # (clean, worse) of each image, by its pixels
    np.testing.assert_array_equal(train["label"], want[:, 0])
    np.testing.assert_array_equal(train["human_label"], want[:, 1])
    trained = np.concatenate([y.numpy() for _, y in d.train_eval])  # key order, as the arrays
    np.testing.assert_array_equal(trained, want[:, 1])
    np.testing.assert_array_equal(d.changed, want[:, 0] != want[:, 1])
    np.testing.assert_array_equal(d.train_labels["clean"], want[:, 0])
    s = d.summary["train_labels"]
    assert s["kind"] == "human_labels" and s["changed_fraction"] == pytest.approx(np.mean(want[:, 0] != want[:, 1]))
    np.testing.assert_array_equal(np.array(s["noise_matrix"]),
                                  np.bincount(want[:, 0] * 10 + want[:, 1], minlength=100).reshape(10, 10))
    assert d.summary["test_labels"]["changed_fraction"] == 0  # the annotators' test fields are -1: never read
    test = np.concatenate([y.numpy() for _, y in d.test])
    assert test.min() >= 0
    name = TrainConfig(model="mlp_1x512", data=cfg).name()
    assert "-human_labels-worselabel-" in name
    other = TrainConfig(model="mlp_1x512", data=dataclasses.replace(cfg, train_label_feature="aggre_label"))
    assert other.name() != name and other.protocol() == TrainConfig(model="mlp_1x512", data=cfg).protocol()


def test_human_labels_refusals(cifar10_n):
    data_dir, _ = cifar10_n
    base = DataConfig(dataset="tfds:cifar10_n", data_dir=data_dir, corrupt="human_labels")
    for cfg, match in ((base, "give it"),
                       (dataclasses.replace(base, train_label_feature="id"), "no class-label feature 'id'"),
                       (dataclasses.replace(base, train_label_feature="worse_label", corrupt_prob=0.2),
                        "drop --corrupt_prob"),
                       (dataclasses.replace(base, train_label_feature="worse_label", corrupt_test_labels=True),
                        "training set only"),
                       (dataclasses.replace(base, corrupt="labels", corrupt_prob=0.2, train_label_feature="worse_label"),
                        "human_labels only"),
                       (DataConfig(dataset="cifar10", corrupt="human_labels", train_label_feature="worse_label"),
                        "tfds dataset")):
        with pytest.raises(UserError, match=match):
            pipeline.build(cfg, batch_size=10, epochs=1)
