"""`python -m rethink_tf.train`: train one of the paper's models on (randomized) data and write results.json.

    python -m rethink_tf.train --flagfile=flags/table1_inception_random_labels.flags --data_dir=DATA --workdir=runs

main() turns flags into a TrainConfig; rethink_tf.training.run.run(config, workdir) does the work (re-exported here as
`run`). A run directory is named from its config: re-running a finished run returns its results; re-running a
killed run resumes it from its last checkpoint.
"""

import sys

if __name__ == "__main__":  # before TensorFlow is imported (by flags_lib): no C++ log banners on a normal run
    from rethink_tf import console

    console.quiet()
    console.exit_on_signals()

from absl import app, flags  # noqa: E402

from rethink_tf import flags_lib  # noqa: E402
from rethink_tf.errors import Interrupted, UserError  # noqa: E402
from rethink_tf.training.run import dtype_policy, model_options, run, summary  # noqa: E402  (re-exported)

__all__ = ["main", "run", "dtype_policy", "model_options", "summary"]

flags_lib.define_train_flags()
flags.adopt_module_key_flags(flags_lib)  # so that --help lists and explains every training flag
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from rethink_tf import console

    console.quiet_absl(FLAGS)
    try:
        run(flags_lib.config_from_flags(FLAGS), FLAGS.workdir)
    except Interrupted as e:
        print(e, file=sys.stderr)
        sys.exit(e.exit_code)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def _parse(argv):
    return flags_lib.parse_flags(argv, help_groups=flags_lib.TRAIN_HELP_GROUPS)


def cli():
    """The console script `rethink-tf-train` (= python -m rethink_tf.train)."""
    from rethink_tf import console

    console.quiet()
    console.exit_on_signals()
    app.run(main, flags_parser=_parse)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse)
