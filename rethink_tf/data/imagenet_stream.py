"""ImageNet's training stream as TF Model Garden reads it, locally or through a tf.data service.

Encoded records, shards in a per-epoch order and interleaved, a shuffle of the *encoded* records, then one parallel
map that parses, corrupts the label (pure in the key, so fixed across epochs) and decodes only the crop window
(Inception preprocessing). With a tf.data service dispatcher (`python -m rethink_tf.data.service`) the service's
workers run that map and the trainers read the decoded batches.
"""

import tensorflow as tf

from rethink_tf.data import corruption as corruption_lib
from rethink_tf.data import keyed_random as kr
from rethink_tf.data import pipeline, preprocessing

AUTOTUNE = tf.data.AUTOTUNE
IMAGENET_SHUFFLE_BUFFER = 10_000  # encoded records (~1.1 GB); ImageNet cannot be permuted in memory


def _shuffle(ds, buffer_size, seed):
    """ds.shuffle with a tensor seed, inside a traced function. Under a global seed of 0 (the default --seed)
    tf.data's seed logic tests the tensor against 0 in Python and fails; the order must depend on `seed` alone
    anyway, so the function graph's global seed is cleared while the op is made."""
    graph = tf.compat.v1.get_default_graph()
    saved, graph.seed = graph.seed, None
    try:
        return ds.shuffle(buffer_size, seed=seed)
    finally:
        graph.seed = saved


def service_stream(cfg, records, decode, first_epoch, first_step, last_epoch, local, job):
    """The stream decoded by tf.data service workers (python -m rethink_tf.data.service): the source is the list of
    (epoch, shard file) pairs, dynamically sharded, so each example is delivered once per epoch, to one trainer.

    A dispatcher matches jobs by name, so `job` names the run (two runs on one dispatcher never read each other's
    examples) and where it starts (a resume is a new job from its first epoch, never the rest of an earlier
    attempt's). The trainers of one run share the job, stepping in lock-step, and each skips its own share of the
    resumed epoch's first steps (first_step x its local batch).
    """
    orders = [records.ordered(kr.seed_pair(cfg.shuffle_seed, kr.EPOCH_ORDER, e)) for e in range(first_epoch, last_epoch)]
    epoch_of = tf.repeat(tf.range(first_epoch, last_epoch, dtype=tf.int64), len(records.files))
    source = tf.data.Dataset.from_tensor_slices((epoch_of, tf.concat([f for f, _ in orders], 0),
                                                 tf.concat([c for _, c in orders], 0)))
    ds = source.interleave(
        lambda e, f, c: tf.data.TFRecordDataset(f, buffer_size=8 << 20).take(c).map(lambda r: (r, e)),
        cycle_length=min(16, len(records.files)), num_parallel_calls=AUTOTUNE, deterministic=False)
    ds = ds.shuffle(IMAGENET_SHUFFLE_BUFFER).map(decode, num_parallel_calls=AUTOTUNE, deterministic=False)
    service = tf.data.experimental.service
    ds = ds.apply(service.distribute(processing_mode=service.ShardingPolicy.DYNAMIC, service=cfg.data_service,
                                     job_name=job, compression=None))
    return ds.skip(first_step * local)


def build(cfg, corr, train, test, shape, batch_size, epochs, steps, summary, deterministic, service_job=None):
    """ImageNet, as TF Model Garden reads it: encoded records, shards in a per-epoch order and interleaved, a
    shuffle of the *encoded* records, then one parallel map that parses, corrupts the label (pure in the key, so
    fixed across epochs) and decodes only the crop window (Inception preprocessing).

    The epochs are one tf.data graph (`range(first_epoch, epochs).flat_map`), not a Python loop of datasets. Each
    epoch yields exactly steps × batch records (the remainder is dropped inside the epoch), so batches never
    straddle epochs. The shard order and the shuffle are seeded by (shuffle_seed, epoch); with `deterministic` the
    interleave and the map keep their order and the stream is a function of the seed, and a mid-epoch resume
    replays the same batches. Without it (the default: faster) the records arrive as the shards are read, so which
    images share a batch varies between runs; each epoch still holds each example at most once, and the labels and
    augmentation of an example do not change (they are keyed on the example, not its position).

    `service_job` names the run for a tf.data service dispatcher (see service_stream); None: a name unique to
    this build.
    """
    import uuid

    service_job = service_job or uuid.uuid4().hex
    summary["train_labels"] = {"kind": corr.kind, "prob": corr.prob, "seed": corr.seed,
                               "note": "streamed dataset: fingerprint not computed"}
    size = shape[0]

    def decode_train(record, epoch):
        ex = train.records.parse(record)
        label = corruption_lib.corrupt_labels(corr, ex["label"], ex["key"], "train")
        if cfg.imagenet_augment:
            image = preprocessing.inception_train(ex["jpeg"], kr.seed_pair(cfg.shuffle_seed, kr.IMAGENET_DISTORT, epoch, ex["key"]), size)
        else:
            image = preprocessing.inception_eval(ex["jpeg"], size)
        return image, label

    def local_epoch(records, epoch, first_epoch, first_step, local, repeat):
        ds = records.read(kr.seed_pair(cfg.shuffle_seed, kr.EPOCH_ORDER, epoch), deterministic)
        seed = tf.bitcast(kr.hash_words(cfg.shuffle_seed, kr.AUGMENT, epoch), tf.int64)
        ds = _shuffle(ds, IMAGENET_SHUFFLE_BUFFER, seed)
        if repeat:  # after the shuffle: a second pass never mixes into the first
            ds = ds.repeat()
        ds = ds.take(steps * local)
        skip = tf.where(epoch == first_epoch, tf.constant(first_step * local, tf.int64), 0)
        return ds.skip(skip).map(lambda r: (r, tf.cast(epoch, tf.int64)))  # skipped records are never decoded

    def train_stream(first_epoch=0, first_step=0, shard=None):
        # A worker of a multi-worker run reads every num-th shard file (Records.shard) and makes local batches of
        # batch/num. Each example of its files comes at most once per epoch; only a worker whose files hold fewer
        # than steps × batch/num examples (unequal shards) starts a second pass, so that every worker runs
        # exactly `steps` steps.
        records, local = train.records, batch_size
        if shard is not None:
            local = pipeline.worker_batch(batch_size, shard)
        if cfg.data_service:
            ds = service_stream(cfg, records, decode_train, first_epoch, first_step, epochs, local,
                                f"rethink_tf-{service_job}-{first_epoch}-{first_step}")
            # The trainers share the job first come, first served; one that prefetched less than the others
            # would run dry in the run's last steps. It finishes them on its own decode of the last epoch.
            slack = local_epoch(records, epochs - 1, -1, 0, local, True).repeat()
            ds = ds.concatenate(slack.map(decode_train, num_parallel_calls=AUTOTUNE))
        else:
            if shard is not None:
                records = records.shard(shard[0], shard[1])
            ds = tf.data.Dataset.range(first_epoch, epochs).flat_map(
                lambda e: local_epoch(records, e, first_epoch, first_step, local, shard is not None))
            ds = ds.map(decode_train, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        return pipeline.per_replica(ds.batch(local, drop_remainder=True), local, shard).prefetch(AUTOTUNE)

    def evaluation(split, split_name):  # every example once, in shard order
        def example(record):
            ex = split.records.parse(record)
            label = corruption_lib.corrupt_labels(corr, ex["label"], ex["key"], split_name)
            return preprocessing.inception_eval(ex["jpeg"], size), label

        ds = split.records.read().map(example, num_parallel_calls=AUTOTUNE)
        return ds.batch(batch_size).prefetch(AUTOTUNE)

    return pipeline.Datasets(train_stream, evaluation(train, "train"), evaluation(test, "test"), steps, train.size,
                    test.size, shape, train.spec.num_classes, corr, summary)
