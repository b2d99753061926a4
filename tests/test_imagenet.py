"""ImageNet's streamed input on a miniature ImageNet in the original tar format, prepared by tfds's real builder:
encoded records, decode-and-crop, per-epoch shard order, shuffle of encoded records, keys from file names."""

import collections

import numpy as np
import pytest
import tensorflow as tf
from conftest import imagenet_jpeg, prepare_imagenet

from rethink_tf.config import DataConfig
from rethink_tf.data import pipeline, preprocessing, sources


def _config(data_dir, **kw):
    return DataConfig(dataset="imagenet2012", data_dir=data_dir, **kw)


def _records(split):
    return [split.records.parse(r) for r in split.records.read()]


def test_prepared_by_the_real_builder_with_keys_from_file_names(mini_imagenet):
    data_dir, _ = mini_imagenet
    train = sources.load("imagenet2012", "train", data_dir=data_dir)
    test = sources.load("imagenet2012", "test", data_dir=data_dir)
    assert (train.size, test.size) == (12, 6) and len(train.records.files) == 3
    ex = _records(train)
    assert sorted(int(e["label"]) for e in ex) == [0] * 4 + [1] * 4 + [2] * 4  # synsets n01440764.. -> 0, 1, 2
    assert len({int(e["key"]) for e in ex}) == 12
    assert all(e["jpeg"].dtype == tf.string and e["jpeg"].numpy()[:2] == b"\xff\xd8" for e in ex)  # still encoded
    # validation labels: tfds's bundled list, in file-name order (ILSVRC2012_val_00000001 is n01751748 = 65)
    import tensorflow_datasets as tfds

    by_name = {}
    for r in test.records.read():
        e = test.records.features.deserialize_example(r, decoders={"image": tfds.decode.SkipDecoding()})
        by_name[e["file_name"].numpy().decode()] = int(e["label"])
    assert by_name["ILSVRC2012_val_00000001.JPEG"] == 65 and len(by_name) == 6
    assert test.records.size == 6 and sources.load("imagenet2012", "test", data_dir=data_dir, num_examples=4).size == 4


def test_keys_survive_a_preparation_with_another_shard_layout(mini_imagenet, tmp_path):
    data_dir, manual = mini_imagenet
    again = prepare_imagenet(manual, str(tmp_path / "again"), num_shards=2)
    import tensorflow_datasets as tfds

    cfg = dict(corrupt="random_labels", corrupt_seed=3)

    def labels(d):
        split = sources.load("imagenet2012", "train", data_dir=d)
        skip = {"image": tfds.decode.SkipDecoding()}
        names = [split.records.features.deserialize_example(r, decoders=skip)["file_name"].numpy()
                 for r in split.records.read()]
        keys = [int(e["key"]) for e in _records(split)]
        corr = pipeline.corruption_lib.make("random_labels", None, cfg["corrupt_seed"], 1000)
        noisy = pipeline.corruption_lib.corrupt_labels(corr, tf.constant([0] * len(keys), tf.int64),
                                                       tf.constant(keys, tf.int64), "train").numpy()
        return dict(zip(names, zip(keys, noisy.tolist())))

    first, second = labels(data_dir), labels(again)
    assert len(sources.load("imagenet2012", "train", data_dir=again).records.files) == 2
    assert first == second and len(first) == 12


def test_decode_and_crop_equals_decoding_then_cropping():
    rng = np.random.default_rng(5)
    for h, w in ((375, 500), (333, 401)):
        jpeg = tf.constant(imagenet_jpeg(rng, h, w))
        full = tf.image.decode_jpeg(jpeg, channels=3)
        want = tf.image.resize(tf.image.central_crop(tf.cast(full, tf.float32) / 255, 0.875), [299, 299])
        got, want = preprocessing.inception_eval(jpeg).numpy(), (want.numpy() - 0.5) * 2
        np.testing.assert_allclose(got[:, 2:-2], want[:, 2:-2], atol=1e-5)  # edge columns: see below
        assert np.abs(got - want).max() <= 16 / 255
        seed = tf.constant([7, 11], tf.int64)
        top, left, hh, ww = preprocessing.distorted_window(tf.shape(full), seed).numpy()
        crop = tf.image.decode_and_crop_jpeg(jpeg, [top, left, hh, ww], channels=3).numpy().astype(int)
        ref = full[top:top + hh, left:left + ww].numpy().astype(int)
        # identical inside; libjpeg's chroma upsampling may differ by a few levels in the window's edge columns
        np.testing.assert_array_equal(crop[:, 1:-1], ref[:, 1:-1])
        assert np.abs(crop - ref).max() <= 8
        out = preprocessing.inception_train(jpeg, seed)
        assert out.shape == (299, 299, 3) and -1 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 1


def _fingerprints(ds):
    """One float per image (its pixel sum) per batch: identifies an image under the deterministic eval crop."""
    return [tf.reduce_sum(tf.cast(x, tf.float64), axis=[1, 2, 3]).numpy().tolist() for x, _ in ds]


@pytest.mark.parametrize("deterministic", [True, False])
def test_each_epoch_holds_each_example_once(mini_imagenet, deterministic):
    data_dir, _ = mini_imagenet
    d = pipeline.build(_config(data_dir), batch_size=4, epochs=3, deterministic=deterministic)
    every = sorted(sum(_fingerprints(d.train_eval), []))
    batches = _fingerprints(d.train(0))
    assert len(batches) == 3 * d.steps_per_epoch == 9
    epochs = [sorted(sum(batches[e * 3:(e + 1) * 3], [])) for e in range(3)]
    for e in epochs:  # 12 examples, batch 4: every example exactly once per epoch
        np.testing.assert_allclose(e, every, atol=0.05)


def test_deterministic_stream_is_seeded_per_epoch_and_resumes_mid_epoch(mini_imagenet):
    data_dir, _ = mini_imagenet
    cfg = _config(data_dir, corrupt="random_labels", imagenet_augment=True)
    d = pipeline.build(cfg, batch_size=4, epochs=3, deterministic=True)
    full = [(x.numpy(), y.numpy()) for x, y in d.train(0)]
    again = [(x.numpy(), y.numpy()) for x, y in d.train(0)]
    for (a, la), (b, lb) in zip(full, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    resumed = [(x.numpy(), y.numpy()) for x, y in d.train(1, 2)]
    assert len(resumed) == len(full) - 5
    for (a, la), (b, lb) in zip(full[5:], resumed):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    plain = pipeline.build(_config(data_dir), batch_size=4, epochs=3, deterministic=True)
    orders = [sum(_fingerprints(plain.train(e).take(3)), []) for e in range(3)]
    assert orders[0] != orders[1] != orders[2]  # a new shard order and shuffle each epoch
    for global_seed in (0, 5):  # the order is a function of --shuffle_seed alone, whatever the global seed
        tf.random.set_seed(global_seed)
        assert sum(_fingerprints(plain.train(1).take(3)), []) == orders[1]


def test_shard_order_is_permuted_per_seed(mini_imagenet):
    data_dir, _ = mini_imagenet
    recs = sources.load("imagenet2012", "train", data_dir=data_dir).records
    orders = set()
    for s in range(6):
        keys = [int(recs.parse(r)["key"]) for r in recs.read(tf.constant([s, 1], tf.int64), cycle_length=1)]
        orders.add(tuple(keys[::4]))  # the first key of each 4-example shard: the shard order
    assert len(orders) > 1
    shards = recs.shard(3, 1)
    assert shards.files == (recs.files[1],) and shards.size == 4
    with pytest.raises(sources.UserError, match="cannot be split over 4"):
        recs.shard(4, 0)


def test_labels_are_corrupted_per_example_whatever_the_order(mini_imagenet):
    data_dir, _ = mini_imagenet
    cfg = _config(data_dir, corrupt="labels", corrupt_prob=0.5, corrupt_seed=4)
    d = pipeline.build(cfg, batch_size=4, epochs=2, deterministic=False)
    by_image = collections.defaultdict(set)
    for x, y in list(d.train(0)) + list(d.train_eval):
        for f, label in zip(tf.reduce_sum(tf.cast(x, tf.float64), axis=[1, 2, 3]).numpy().round(1), y.numpy()):
            by_image[f].add(int(label))
    assert len(by_image) == 12 and all(len(v) == 1 for v in by_image.values())


def test_prepare_from_manual_dir_and_clear_errors(mini_imagenet, tmp_path):
    _, manual = mini_imagenet
    split = sources.load("imagenet2012", "train", data_dir=str(tmp_path / "tfds"), manual_dir=manual,
                         prepare_imagenet=True)
    assert split.size == 12
    with pytest.raises(sources.UserError, match="imagenet2012 not found"):
        sources.load("imagenet2012", "train", data_dir=str(tmp_path / "none"))
    with pytest.raises(sources.UserError, match="needs ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar"):
        sources.load("imagenet2012", "train", data_dir=str(tmp_path / "x"), manual_dir=str(tmp_path),
                     prepare_imagenet=True)


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_data_service_dispatcher_and_two_workers_deliver_each_example_once_per_epoch(mini_imagenet, tmp_path):
    """`python -m rethink_tf.data.service` as separate processes: a dispatcher and 2 workers decode the stream."""
    import os
    import subprocess
    import sys
    import time

    data_dir, _ = mini_imagenet
    dport, w1, w2 = _free_port(), _free_port(), _free_port()
    cmd = [sys.executable, "-m", "rethink_tf.data.service"]
    servers = [subprocess.Popen(cmd + ["--dispatcher", f"--port={dport}"], stdout=subprocess.PIPE, text=True)]
    try:
        servers += [subprocess.Popen(cmd + ["--worker", f"--dispatcher_address=localhost:{dport}", f"--port={p}"],
                                     stdout=subprocess.PIPE, text=True) for p in (w1, w2)]
        for s in servers:
            assert "serving on port" in s.stdout.readline()
        service = f"grpc://localhost:{dport}"
        local = pipeline.build(_config(data_dir), batch_size=4, epochs=2, deterministic=True)
        every = sorted(sum(_fingerprints(local.train_eval), []))
        d = pipeline.build(_config(data_dir, data_service=service), batch_size=4, epochs=2)
        start = time.time()
        batches = _fingerprints(d.train(0).take(6))  # then a trainer's slack (the last epoch, decoded locally)
        assert time.time() - start < 120
        assert len(batches) == 2 * d.steps_per_epoch == 6  # 12 examples x 2 epochs / 4
        np.testing.assert_allclose(sorted(sum(batches, [])), sorted(every * 2), atol=0.05)  # each once per epoch
        # a multi-worker trainer's share: local batches of batch / workers from the shared job
        half = pipeline.build(_config(data_dir, data_service=service, corrupt_seed=1), batch_size=4, epochs=1)
        assert [x.shape[0] for x, _ in half.train(0, shard=(2, 0, 2)).take(6)] == [2] * 6
    finally:
        for s in servers:
            s.kill()
            s.wait()
    assert not os.environ.get("TF_CONFIG")


@pytest.mark.parametrize("kw,match", [
    (dict(dataset="cifar10", data_service="grpc://h:1"), "decodes the streamed ImageNet input"),
    (dict(dataset="imagenet2012", data_service="h:1"), "must be grpc://HOST:PORT"),
])
def test_data_service_bad_input(kw, match):
    with pytest.raises(sources.UserError, match=match):
        pipeline.check_combination(DataConfig(**kw))


def test_multi_worker_shards_split_the_files_and_run_equal_steps(mini_imagenet):
    """The stream a worker of a 2-worker run reads: its own shard files (3 files: 2 and 1), cycled so that both
    run steps_per_epoch steps of batch/2 per epoch; together they cover every example."""
    data_dir, _ = mini_imagenet
    d = pipeline.build(_config(data_dir), batch_size=4, epochs=2, deterministic=True)
    every = sorted(sum(_fingerprints(d.train_eval), []))
    per_worker = [_fingerprints(d.train(0, shard=(2, i, 2))) for i in (0, 1)]
    assert [len(b) for b in per_worker] == [2 * d.steps_per_epoch] * 2  # 3 steps x 2 epochs each
    assert all(len(x) == 2 for b in per_worker for x in b)
    first = [np.round(sum(b[:3], []), 1).tolist() for b in per_worker]  # epoch 1 of each worker
    assert len(set(first[0])) == 6  # worker 0 (8 examples): 6 distinct, none twice
    assert len(set(first[1])) == 4  # worker 1 (4 examples): all 4, then 2 from a second pass
    assert not set(first[0]) & set(first[1]) and set(first[0] + first[1]) <= set(np.round(every, 1).tolist())
    with pytest.raises(sources.UserError, match="does not split evenly over 3 workers"):
        d.train(0, shard=(3, 0, 1))


@pytest.mark.parametrize("args,line", [(["--worker"], "error: --worker needs --dispatcher_address=HOST:PORT"),
                                       ([], "error: choose one of --dispatcher or --worker")])
def test_data_service_cli_bad_input_one_line(args, line):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "rethink_tf.data.service", *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [line]


@pytest.fixture
def in_process_service():
    """A tf.data service dispatcher and one worker in this process; yields the dispatcher's grpc:// address."""
    from rethink_tf.data import service

    dispatcher = service.serve(True, False, 0)
    address = dispatcher.target.split("://")[1]
    worker = service.serve(False, True, 0, dispatcher_address=address)
    yield dispatcher.target
    worker._stop()
    dispatcher._stop()


def test_two_runs_on_one_dispatcher_each_read_only_their_own_stream(mini_imagenet, in_process_service):
    """Table 2's flagfiles share their seeds; launched against one dispatcher, each run must still get its own
    job: every example of its epochs once, with its own labels (read in alternation, as concurrent runs do)."""
    data_dir, _ = mini_imagenet
    true = pipeline.build(_config(data_dir, data_service=in_process_service), batch_size=4, epochs=2)
    rand = pipeline.build(_config(data_dir, data_service=in_process_service, corrupt="random_labels"),
                          batch_size=4, epochs=2)
    local = pipeline.build(_config(data_dir, corrupt="random_labels"), batch_size=4, epochs=1, deterministic=True)
    truth = {round(f, 1): int(y) for x, y in local.train_eval for f, y in zip(_fingerprints([(x, y)])[0], y.numpy())}
    clean = pipeline.build(_config(data_dir), batch_size=4, epochs=1, deterministic=True)
    clean_truth = {round(f, 1): int(y) for x, y in clean.train_eval
                   for f, y in zip(_fingerprints([(x, y)])[0], y.numpy())}
    got = {"true": [], "rand": []}
    for (xt, yt), (xr, yr) in zip(true.train(0).take(6), rand.train(0).take(6)):
        got["true"] += zip(_fingerprints([(xt, yt)])[0], yt.numpy().tolist())
        got["rand"] += zip(_fingerprints([(xr, yr)])[0], yr.numpy().tolist())
    for name, expected in (("true", clean_truth), ("rand", truth)):
        seen = collections.Counter(round(f, 1) for f, _ in got[name])
        assert sorted(seen) == sorted(expected) and set(seen.values()) == {2}, name  # each example once per epoch
        assert all(expected[round(f, 1)] == y for f, y in got[name]), name  # with its run's labels
    assert truth != clean_truth


def test_trainers_resuming_mid_epoch_on_the_service_skip_their_own_share(mini_imagenet, in_process_service):
    """Two trainers of one run resume at step 1 of epoch 1 (3 steps of 4 per epoch, 2 epochs): in lock-step they
    run the 5 remaining steps; the job they share, drained, delivered 24 - 4 examples (each skipped 2, its share
    of one global batch, not 4), every example at most twice (once per epoch). The job's shuffle window spans the
    epoch boundary (as Model Garden's repeated stream does), and here it spans the whole job: the 4 skipped may be
    any 4 of the 24, so at least 10 of the 12 examples are delivered."""
    from rethink_tf.data import imagenet_stream

    data_dir, _ = mini_imagenet
    d = pipeline.build(_config(data_dir, data_service=in_process_service), batch_size=4, epochs=2,
                       service_job="run-a-token-1")
    trainers = [iter(d.train(0, 1, shard=(2, i, 2))) for i in (0, 1)]
    for _ in range(2 * d.steps_per_epoch - 1):
        for t in trainers:
            assert next(t)[0].shape[0] == 2
    cfg = _config(data_dir, data_service=in_process_service)
    train = sources.load("imagenet2012", "train", data_dir=data_dir)

    def decode(record, epoch):
        return preprocessing.inception_eval(train.records.parse(record)["jpeg"], 32), epoch

    jobs = [iter(imagenet_stream.service_stream(cfg, train.records, decode, 0, 1, 2, 2, "drained")) for _ in (0, 1)]
    delivered, live = [], list(jobs)
    while live:  # alternately, until the job is exhausted for both
        for j in list(live):
            try:
                delivered.append(float(tf.reduce_sum(tf.cast(next(j)[0], tf.float64))))
            except StopIteration:
                live.remove(j)
    counts = collections.Counter(round(f, 1) for f in delivered)
    assert len(delivered) == 20 and max(counts.values()) <= 2 and len(counts) >= 10


def test_a_class_subset_takes_its_sizes_and_classes_from_the_prepared_split(mini_imagenet):
    """3 of ImageNet's 1,000 classes prepared: the recipe decays every 2 prepared epochs (2 x 12 examples, not
    2 x 1,281,167), and random labels are drawn from the 3 classes the tars held (synsets n01440764.. -> 0, 1, 2)."""
    import json
    import os

    from rethink_tf.config import TrainConfig
    from rethink_tf.data.sources import imagenet

    data_dir, _ = mini_imagenet
    spec = sources.spec("imagenet2012", data_dir)
    assert (spec.train_size, spec.test_size, spec.classes, spec.num_classes) == (12, 6, (0, 1, 2), 1000)
    [cache] = [os.path.join(r, f) for r, _, fs in os.walk(data_dir) for f in fs if f == imagenet.CLASSES_FILE]
    assert json.load(open(cache))["classes"] == [0, 1, 2]
    assert sources.spec("imagenet2012", data_dir).classes == (0, 1, 2)  # from the cache
    cfg = TrainConfig(model="inception_v3", data=_config(data_dir)).resolved()
    assert cfg.lr_decay_examples == 2 * 12
    d = pipeline.build(_config(data_dir, corrupt="random_labels"), batch_size=4, epochs=1, deterministic=True)
    labels = [int(v) for _, y in d.train_eval for v in y.numpy()]
    assert set(labels) <= {0, 1, 2} and len(set(labels)) > 1
    assert d.summary["train_labels"]["kind"] == "random_labels" and d.corruption.drawn_from == 3
    assert sources.spec("imagenet2012", "/nonexistent-imagenet").train_size == 1_281_167  # unprepared: the paper's
