"""`python -m rethink_tf.data.service`: tf.data service servers that decode ImageNet for a run's trainers.

    python -m rethink_tf.data.service --dispatcher --port=5050                      # one, anywhere
    python -m rethink_tf.data.service --worker --dispatcher_address=HOST:5050 --port=5051 --worker_host=$(hostname)
    python -m rethink_tf.train ... --data_service=grpc://HOST:5050                   # the trainers

For clusters whose GPU hosts have too few cores to decode and augment JPEGs at the GPUs' speed (about 3 cores
per A100, 5 per H100 for Inception V3: benchmarks/imagenet_pipeline.py). The trainers send the stream's definition
to the dispatcher; the workers read the TFRecord shards themselves (the data must be on a filesystem they share),
parse, corrupt the labels, decode the crop window and augment, and send finished examples.

Epoch semantics: the stream's source is the list of (epoch, shard file) pairs, each epoch's files in its seeded
order, and the job uses dynamic sharding (`ShardingPolicy.DYNAMIC`): the dispatcher hands each (epoch, file) to
exactly one worker, so every example is decoded and delivered once per epoch, to exactly one trainer (the trainers
of a multi-worker run share the job). What changes against the local stream: the shuffle buffer is per service
worker and the order in which workers deliver is not deterministic, so which images share a batch varies between
runs even with --deterministic, and batches near an epoch's end may hold examples of the next epoch. Labels and
augmentation stay fixed per example and epoch (keyed on the example, not its position).
"""

import sys

from absl import app, flags

FLAGS = flags.FLAGS


def define_flags(fv=FLAGS):
    """The command line's flags; defined only when the module runs as a program (importing it defines none)."""
    flags.DEFINE_bool("dispatcher", False, "Run the dispatcher.", flag_values=fv)
    flags.DEFINE_bool("worker", False, "Run a worker.", flag_values=fv)
    flags.DEFINE_integer("port", 5050, "Port to serve on.", lower_bound=0, upper_bound=65535, flag_values=fv)
    flags.DEFINE_string("dispatcher_address", None, "--worker: the dispatcher's host:port.", flag_values=fv)
    flags.DEFINE_string("worker_host", "localhost", "--worker: the host name the dispatcher and trainers reach "
                        "this worker by.", flag_values=fv)


def serve(dispatcher, worker, port, dispatcher_address=None, worker_host="localhost"):
    """Starts one server and returns it (tests); `main` joins it."""
    import tensorflow as tf

    service = tf.data.experimental.service
    if dispatcher == worker:
        raise ValueError("choose one of --dispatcher or --worker")
    if dispatcher:
        return service.DispatchServer(service.DispatcherConfig(port=port))
    if not dispatcher_address:
        raise ValueError("--worker needs --dispatcher_address=HOST:PORT")
    return service.WorkerServer(service.WorkerConfig(dispatcher_address=dispatcher_address, port=port,
                                                     worker_address=f"{worker_host}:%port%"))  # TF substitutes the bound port (--port=0: any free one)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        server = serve(FLAGS.dispatcher, FLAGS.worker, FLAGS.port, FLAGS.dispatcher_address, FLAGS.worker_host)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    role = "dispatcher" if FLAGS.dispatcher else f"worker of {FLAGS.dispatcher_address}"
    print(f"tf.data service {role} serving on port {FLAGS.port}", flush=True)
    server.join()


if __name__ == "__main__":
    from rethink_tf import console

    console.quiet()
    define_flags()
    app.run(main)
