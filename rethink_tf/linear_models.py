"""`python -m rethink_tf.linear_models`: the §5 kernel interpolation of one configuration; writes results.json.

    python -m rethink_tf.linear_models --flagfile=flags/kernel_mnist_pixels.flags --workdir=runs

main() turns flags into a KernelConfig; rethink_tf.linear.experiment.run(config, workdir) does the work.
"""

import sys

if __name__ == "__main__":  # before TensorFlow is imported: no C++ log banners on a normal run
    from rethink_tf import console

    console.quiet()
    console.exit_on_signals()

from absl import app, flags  # noqa: E402

from rethink_tf import flags_lib  # noqa: E402
from rethink_tf.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS


def main(argv):
    from rethink_tf import console
    from rethink_tf.linear import experiment

    console.quiet_absl(FLAGS)
    try:
        if len(argv) > 1:
            raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
        experiment.run(flags_lib.kernel_config_from_flags(FLAGS), FLAGS.workdir, log=lambda m: print(m, flush=True))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def cli():
    """The console script `rethink-tf-linear-models` (= python -m rethink_tf.linear_models)."""
    from rethink_tf import console

    console.quiet()
    console.exit_on_signals()
    flags_lib.define_kernel_flags()
    app.run(main, flags_parser=flags_lib.parse_flags)


if __name__ == "__main__":
    flags_lib.define_kernel_flags()
    app.run(main, flags_parser=flags_lib.parse_flags)
