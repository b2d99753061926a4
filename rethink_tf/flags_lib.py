"""Every absl flag of the entry points, defined in functions and validated where declared.

Enum values come from the registries (models, datasets, corruptions, strategies), so a new model is a new flag
value with no edit here. A flag has the name of the config field it sets: `config_from_flags` and
`kernel_config_from_flags` read the flags by the configs' field names (the one place flags become configs), so a
new field is its declaration in config.py plus its flag here, and a test checks the two sets against each other.
"""

import dataclasses
import math
import os

import numpy as np
from absl import flags

from rethink_tf import config, models
from rethink_tf.config import DataConfig, KernelConfig, TrainConfig
from rethink_tf.data import corruption, sources
from rethink_tf.errors import UserError
from rethink_tf.training import distribute

FLAGFILES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "flagfiles")  # the paper's, shipped
MAX_FLAGFILE_DEPTH = 16


def find_flagfile(path, including=None):
    """The file a --flagfile names: the path as given (relative to the working directory), else relative to the
    flagfile that includes it, else the package's flagfile of that name (FLAGFILES: the paper's flagfiles, so
    `--flagfile=flags/table1_mlp1.flags` works from any directory and after a plain pip install).

    Raises:
      UserError: none exists (one line naming where it looked).
    """
    path = os.path.expanduser(path)
    candidates = [path]
    if including and not os.path.isabs(path):
        candidates.append(os.path.join(os.path.dirname(including), path))
    candidates.append(os.path.join(FLAGFILES, os.path.basename(path)))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    where = f" (included by {including})" if including else ""
    raise UserError(f"flagfile {path}{where} not found: looked in {os.getcwd()}"
                    + (f", beside {including}" if including else "") + f" and among the package's ({FLAGFILES})")


def expand_flagfiles(argv, including=None, _stack=()):
    """argv with every --flagfile=PATH replaced by the flags in that file, recursively (found by find_flagfile;
    blank lines and # or // comments skipped): absl then sees plain flags, in the order absl itself would apply
    them (later flags override earlier ones).

    Raises:
      UserError: a flagfile is missing, unreadable or includes itself.
    """
    out, args = [], list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("--flagfile", "-flagfile") and args:
            arg = "--flagfile=" + args.pop(0)
        if not arg.startswith(("--flagfile=", "-flagfile=")):
            out.append(arg)
            continue
        path = find_flagfile(arg.split("=", 1)[1], including)
        real = os.path.realpath(path)
        if real in _stack or len(_stack) >= MAX_FLAGFILE_DEPTH:
            raise UserError(f"flagfile {path} includes itself (through {' -> '.join(_stack)})")
        try:
            with open(path, encoding="utf-8") as f:
                lines = [line.strip() for line in f]
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"flagfile {path} cannot be read ({type(e).__name__})") from None
        lines = [line for line in lines if line and not line.startswith(("#", "//"))]
        out += expand_flagfiles(lines, path, _stack + (real,))
    return out


# `--help` of `python -m rethink_tf.train`: the package's flags by what they set (--helpfull: absl's, TF's too).
TRAIN_HELP_GROUPS = (
    ("data", ("dataset", "data_dir", "source", "download", "manual_dir", "train_examples", "test_examples",
              "image_feature", "label_feature", "extra_test")),
    ("corruption (the paper's randomizations, and noise models beyond it)",
     ("corrupt", "corrupt_prob", "noise_matrix", "noise_std", "train_label_feature", "corrupt_seed",
      "corrupt_test_labels")),
    ("model", ("model", "width", "init_from", "dropout", "bn_momentum", "sync_batchnorm", "dtype_policy")),
    ("recipe", ("optimizer", "learning_rate", "lr_decay", "lr_decay_examples", "momentum", "rmsprop_initial_ms",
                "batch_size", "epochs", "weight_decay", "label_smoothing", "ema_decay", "random_crop", "augment",
                "seed")),
    ("stopping and time to fit", ("stop_at_train_accuracy", "fit_threshold")),
    ("output", ("workdir", "run_name", "tensorboard", "checkpoint_every_steps", "per_example", "measures")),
    ("speed and determinism", ("jit_compile", "jit_scope", "steps_per_execution", "device_data", "deterministic")),
    ("distribution", ("strategy", "num_gpus", "cross_device_ops", "worker_hosts", "task_index", "cluster_timeout")),
    ("ImageNet", ("imagenet_augment", "prepare_imagenet", "data_service")),
)


def grouped_help(groups=TRAIN_HELP_GROUPS, program="python -m rethink_tf.train"):
    """The help text of the training flags, grouped; a flag no group names is listed under "other" (a test keeps
    that list empty)."""
    import textwrap

    fv = flags.FlagValues()
    define_train_flags(fv)
    grouped = {n for _, names in groups for n in names}
    listed = [(title, [n for n in names if n in fv]) for title, names in groups]
    listed.append(("other", sorted(n for n in fv if n not in grouped)))
    lines = [f"usage: {program} [--flagfile=FILE] [--flag=value ...]", "",
             "Later flags override earlier ones and the flagfiles before them. --helpfull lists absl's flags too.", ""]
    for title, names in listed:
        if not names:
            continue
        lines.append(f"{title}:")
        for name in names:
            flag = fv[name]
            default = "" if flag.default is None else f" (default: {flag.default_as_str or flag.default})"
            lines.append(f"  --{name}{default}")
            lines += textwrap.wrap(flag.help or "", 100, initial_indent="      ", subsequent_indent="      ")
        lines.append("")
    return "\n".join(lines)


def parse_flags(argv, help_groups=None):
    """absl's flags_parser for the entry points (app.run(main, flags_parser=parse_flags)): flagfiles expanded by
    expand_flagfiles, then absl's own parsing (its usage message on a bad flag); a flagfile problem is one line,
    exit status 2. With `help_groups`, --help prints grouped_help (the package's flags by topic)."""
    import sys

    from absl import app

    if help_groups is not None and any(a in ("--help", "-help", "-h", "--h", "-?") for a in argv[1:]):
        print(grouped_help(help_groups))
        sys.exit(0)
    try:
        argv = [argv[0], *expand_flagfiles(argv[1:])]
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    return app.parse_flags_with_usage(argv)


# Flags of the entry points that are not config fields; and the config fields that are not flags (with the
# field they copy).
NON_CONFIG_FLAGS = frozenset({"workdir"})
DERIVED_FIELDS = {"shuffle_seed": "seed"}  # the data's shuffles and augmentation follow --seed


def define_data_flags(fv=flags.FLAGS):
    flags.DEFINE_string("dataset", "cifar10", f"Dataset to train on: one of {', '.join(sorted(sources.DATASETS))}, "
                        "or tfds:NAME for any tfds image classification dataset with fixed-size images prepared "
                        "under --data_dir (held in memory; see --image_feature/--label_feature).", flag_values=fv)

    @flags.validator("dataset", message=f"--dataset must be one of {', '.join(sorted(sources.DATASETS))} or "
                     "tfds:NAME", flag_values=fv)
    def _dataset(name):
        return name in sources.DATASETS or (name.startswith(sources.TFDS_PREFIX) and len(name) > 5)
    flags.DEFINE_string("data_service", None, "ImageNet: grpc://HOST:PORT of a tf.data service dispatcher whose "
                        "workers decode and augment the training stream (python -m rethink_tf.data.service); each "
                        "example is still delivered once per epoch.", flag_values=fv)
    flags.DEFINE_string("image_feature", "image", "--dataset=tfds:NAME: the image feature's name.", flag_values=fv)
    flags.DEFINE_string("label_feature", "label", "--dataset=tfds:NAME: the class-label feature's name.",
                        flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Folder with the original archives (cifar-10-binary.tar.gz, "
                        "cifar-10-python.tar.gz, *-idx?-ubyte.gz) or tfds-prepared data. Default: Debian's "
                        "Fashion-MNIST folder, else ~/tensorflow_datasets.", flag_values=fv)
    flags.DEFINE_enum("source", "auto", list(sources.SOURCES), "Read the original archives, tfds-prepared data, "
                      "or whichever is present (archives first).", flag_values=fv)
    flags.DEFINE_bool("download", True, "If the dataset is neither in --data_dir nor prepared there, download and "
                      "prepare it with tensorflow_datasets into --data_dir (default ~/tensorflow_datasets): CIFAR-10, "
                      "MNIST, Fashion-MNIST. --nodownload: fail with what to put where. ImageNet is never "
                      "downloaded.", flag_values=fv)
    flags.DEFINE_string("manual_dir", None, "ImageNet: folder with ILSVRC2012_img_{train,val}.tar.", flag_values=fv)
    flags.DEFINE_bool("prepare_imagenet", False, "ImageNet: build the tfds TFRecords from --manual_dir first "
                      "(hours, ~150 GB).", flag_values=fv)
    flags.DEFINE_string("extra_test", None, "Beyond the paper: more test sets, comma-separated tfds:NAME (e.g. "
                        "tfds:cifar10_1 or tfds:cifar10_1/v6, CIFAR-10.1 of Recht et al. 2019), of the run's image "
                        "shape and classes, evaluated beside the test set after every epoch and at the end "
                        "(downloaded by tfds unless --nodownload). Records only: a finished run asked for one later "
                        "evaluates its last checkpoint.", flag_values=fv)
    flags.DEFINE_integer("train_examples", None, "Use only the first N training examples in key order (a "
                         "pseudo-random subset, the same whichever source reads the data).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_integer("test_examples", None, "Use only the first N test examples in key order.", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_enum("corrupt", "none", list(corruption.KINDS), "Randomization test of §2.1: labels (with "
                      "probability --corrupt_prob), random_labels (p = 1), shuffled_pixels, random_pixels, gaussian. "
                      "Beyond the paper: flip (exactly a fraction --corrupt_prob of labels moved to another class), "
                      "class_conditional (labels drawn from the rows of --noise_matrix), additive_gaussian (x + "
                      "--noise_std · N(0, 1) on every pixel value), human_labels (CIFAR-10N/100N's annotators' labels,"
                      " --train_label_feature).", flag_values=fv)
    flags.DEFINE_float("corrupt_prob", None, "Label corruption probability p in [0, 1] for --corrupt=labels (a "
                       "corrupted label is uniform over all classes, so about 0.9·p of labels change) and flip "
                       "(exactly round(p·n) labels change). With a pixel kind: corrupt only a fraction p of the "
                       "images, each with probability p (beyond the paper; unset: all, as in the paper). With "
                       "--noise_matrix=cifar10_pairs: each pair's probability.",
                       lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_string("noise_matrix", None, "--corrupt=class_conditional's transition matrix T (label y becomes j "
                        "with probability T[y, j]): cifar10_pairs (truck->automobile, bird->airplane, deer->horse, "
                        "cat<->dog, each with probability --corrupt_prob), a .npy or text file of a K x K "
                        "row-stochastic matrix, or its rows inline ('0.6 0.4; 0.3 0.7').", flag_values=fv)
    flags.DEFINE_float("noise_std", None, "--corrupt=additive_gaussian: the standard deviation σ of the Gaussian "
                       "noise added to every value of the image, in [0, 1] pixel units (not clipped; Toneva et al. "
                       "2019's pixel noise). With --corrupt_prob: only that fraction of the images.", flag_values=fv)
    flags.DEFINE_string("train_label_feature", None, "--corrupt=human_labels: the feature of a tfds dataset that "
                        "holds the human training labels (--dataset=tfds:cifar10_n: aggre_label, worse_label, "
                        "random_label1..3; tfds:cifar100_n: noise_label). Tests are scored on --label_feature, the "
                        "clean labels. CIFAR-N needs a manual download: see `tfds build cifar10_n`'s instructions.",
                        flag_values=fv)
    flags.DEFINE_integer("corrupt_seed", 0, "Seed of the corruption (independent of --seed).", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_bool("corrupt_test_labels", False, "Also corrupt the test labels (off: test accuracy on true "
                      "labels, as the paper reports it).", flag_values=fv)
    flags.DEFINE_bool("random_crop", False, "Table 1's random crop: a random 28x28 window of the 32x32 CIFAR-10 "
                      "image at training time (centre crop at test time).", flag_values=fv)
    flags.DEFINE_bool("augment", False, "Table 4's augmentation: random left-right flips and rotations up to "
                      "±25 degrees at training time.", flag_values=fv)
    flags.DEFINE_bool("imagenet_augment", False, "Table 2's 'data aug': the TF inception train-time distortions.",
                      flag_values=fv)

    @flags.multi_flags_validator(["corrupt", "corrupt_prob", "noise_matrix", "noise_std", "train_label_feature"],
                                 flag_values=fv)
    def _prob(f):
        try:
            corruption.check_kind(f["corrupt"], f["corrupt_prob"], read_noise_matrix(f["noise_matrix"]), f["noise_std"],
                                  f["train_label_feature"])
        except UserError as e:
            raise flags.ValidationError(str(e)) from None
        return True

    @flags.multi_flags_validator(["corrupt", "random_crop", "augment", "imagenet_augment"], flag_values=fv,
                                 message="pixel corruptions (shuffled_pixels, random_pixels, gaussian, "
                                         "additive_gaussian) cannot be "
                                         "combined with --random_crop/--augment: the paper does not define it")
    def _pixels(f):
        return not (f["corrupt"] in corruption.PIXEL_KINDS and (f["random_crop"] or f["augment"]
                                                                 or f["imagenet_augment"]))


def _require_finite_floats(fv, before):
    """Every float flag defined since `before` (a set of flag names) rejects nan and ±inf: absl's bounds let nan
    through, and a NaN setting would train garbage or never compare equal to itself on resume."""
    for name in sorted(set(fv) - before):
        if fv[name].flag_type() == "float":
            flags.register_validator(name, lambda v: v is None or math.isfinite(v),
                                     message=f"--{name} must be a finite number", flag_values=fv)


def define_train_flags(fv=flags.FLAGS):
    """Defines all flags of the training entry point on `fv`."""
    before = set(fv)
    _define_train_flags(fv)
    _require_finite_floats(fv, before)


def _define_train_flags(fv):
    define_data_flags(fv)
    flags.DEFINE_string("model", "small_inception", f"Architecture (the paper's Appendix A): one of {', '.join(models.MODELS)}, "
                        "or your own as package.module:function, a function (input_shape, num_classes) -> uncompiled "
                        "keras.Model giving logits (trained with the AlexNet/MLP recipe unless flags say otherwise).",
                        flag_values=fv)

    @flags.validator("model", message=f"--model must be one of {', '.join(models.MODELS)} or package.module:function",
                     flag_values=fv)
    def _model(name):
        return name in models.MODELS or models.is_plugin(name)
    flags.DEFINE_integer("epochs", 100, "Epochs to train.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("batch_size", None, "Global batch size (default: the recipe's, 128 on CIFAR-10; "
                         "split evenly over replicas).", lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("optimizer", None, ["sgd", "rmsprop", "adam"], "Default: sgd (CIFAR-10), rmsprop "
                      "(inception_v3). adam (Keras' defaults, no momentum flag) is beyond the paper: Nakkiran et "
                      "al. 2020's double-descent recipe (flags/nakkiran_double_descent.flags).",
                      flag_values=fv)
    flags.DEFINE_float("learning_rate", None, "Initial learning rate (default 0.1 for small Inception, 0.01 for "
                       "AlexNet and MLPs, 0.045 for Inception V3).", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("lr_decay", None, "Learning-rate decay factor per period (default 0.95; 0.94 for "
                       "Inception V3).", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_integer("lr_decay_examples", None, "Examples seen per decay period (default: the full training "
                         "set, i.e. one epoch of a full run: 50,000 on CIFAR-10 = floor(50,000/128) = 390 steps at "
                         "batch 128, as in TF's CIFAR-10 code). A subset run keeps this per-step schedule.",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_float("momentum", None, "Momentum (default 0.9).", lower_bound=0.0, upper_bound=0.999999,
                       flag_values=fv)
    flags.DEFINE_float("rmsprop_initial_ms", None, "--optimizer=rmsprop: the mean square accumulator's initial "
                       "value (default 1.0, as TF1's RMSPropOptimizer in the TF inception package; Keras' own "
                       "RMSprop starts at 0.0).", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("weight_decay", 0.0, "Weight decay wd on conv/dense kernels with TF l2_loss semantics "
                       "(penalty wd·Σw²/2); 0 = off. The paper does not give its value; 5e-4 in our Table 1 "
                       "flagfiles, 4e-5 for Inception V3.", lower_bound=0.0, flag_values=fv)
    flags.DEFINE_float("label_smoothing", None, "Label smoothing (default 0; 0.1 for Inception V3).",
                       lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_float("dropout", None, "Dropout rate: Inception V3 on the pooled features (default 0.2, the TF "
                       "package's keep 0.8); MLPs after each hidden layer (default none: beyond the paper). Masks are "
                       "keyed per example, so 1 device and N replicas or workers drop the same units.",
                       lower_bound=0.0, upper_bound=0.99, flag_values=fv)
    flags.DEFINE_float("width", None, "Beyond the paper: multiply every layer width of the CIFAR models (MLP hidden "
                       "units, small AlexNet's filters and hidden units, small Inception's filters) by this, rounded, "
                       "for capacity sweeps (model-wise double descent, Nakkiran et al. 2020). The trainable "
                       "parameter count is in results.json. Default: 1.0, the paper's widths.", lower_bound=0.001,
                       upper_bound=64.0, flag_values=fv)
    flags.DEFINE_string("init_from", None, "Beyond the paper: start from the final weights of this finished run's "
                        "directory (same model, width and data shape) instead of a random initialization, with a "
                        "fresh optimizer: e.g. pre-train on random labels, then train on true labels and compare "
                        "steps to fit with a run from scratch (Maennel et al. 2020). The source run's directory name "
                        "joins this run's name. Default: random initialization (the paper's).", flag_values=fv)
    flags.DEFINE_float("bn_momentum", None, "BatchNorm moving-average momentum (default 0.999 small Inception, "
                       "0.9997 Inception V3).", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of initialization, shuffling and augmentation.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_string("workdir", "runs", "Runs are written to <workdir>/<run name>/.", flag_values=fv)
    flags.DEFINE_string("run_name", None, "Explicit run directory name (default: derived from the settings).",
                        flag_values=fv)
    flags.DEFINE_enum("strategy", "none", list(distribute.STRATEGIES), "none: one device; mirrored: synchronous "
                      "data parallelism over this host's GPUs (BN statistics per replica); multi_worker: "
                      "synchronous data parallelism over several hosts (MultiWorkerMirroredStrategy, cluster from "
                      "TF_CONFIG or --worker_hosts/--task_index; every worker runs the same command).", flag_values=fv)
    flags.DEFINE_string("worker_hosts", None, "--strategy=multi_worker without TF_CONFIG: every worker's host:port, "
                        "comma-separated, in the same order on every worker.", flag_values=fv)
    flags.DEFINE_integer("task_index", None, "--strategy=multi_worker with --worker_hosts: this worker's index "
                         "(0 is the chief, which alone writes the run directory).", lower_bound=0, flag_values=fv)
    flags.DEFINE_float("cluster_timeout", 300.0, "--strategy=multi_worker: seconds to wait for all workers to join "
                       "before exiting with an error (a missing peer would otherwise hang forever).", lower_bound=1.0,
                       flag_values=fv)
    flags.DEFINE_integer("num_gpus", None, "GPUs to mirror over (default: all visible).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_enum("cross_device_ops", "auto", list(distribute.CROSS_DEVICE_OPS), "All-reduce implementation "
                      "for --strategy=mirrored (one_device if NCCL gives NaNs).", flag_values=fv)
    flags.DEFINE_bool("sync_batchnorm", False, "BatchNorm statistics over the global batch under "
                      "--strategy=mirrored (default: per replica, as in the paper's era).", flag_values=fv)
    flags.DEFINE_enum("dtype_policy", "float32", ["float32", "mixed_bfloat16", "mixed_float16"], "Compute precision; "
                      "float32 for paper fidelity. Logits and softmax stay float32. mixed_float16 adds loss scaling "
                      "and is single-replica only (keras#18666).", flag_values=fv)
    flags.DEFINE_float("stop_at_train_accuracy", None, "End the run once an epoch's training accuracy reaches "
                       "this (e.g. 1.0 for fitting runs).", lower_bound=0.0, upper_bound=1.0, flag_values=fv)
    flags.DEFINE_float("ema_decay", None, "Keep the TF inception package's exponential moving average (decay "
                       "min(this, (1 + t) / (10 + t)) at step t) of the trainable weights and BatchNorm statistics "
                       "and report the final accuracies on it (the reference evaluates a 0.9999 average; per-epoch "
                       "test accuracies stay on the trained weights). Default: off.",
                       lower_bound=0.0, upper_bound=0.999999, flag_values=fv)
    flags.DEFINE_float("fit_threshold", 1.0, "Training accuracy that counts as fitted for epochs_to_fit/steps_to_fit "
                       "(Figure 1b). results.json records 0.99, 0.999 and 1.0 in any case.", lower_bound=0.0,
                       upper_bound=1.0, flag_values=fv)
    flags.DEFINE_bool("per_example", False, "Beyond the paper: keep every training example's predicted class at "
                      "every epoch (<run>/per_example/) and export <run>/per_example.npz at the end (Feldman & "
                      "Zhang's trainset_mask/_correctness/_predictions, rows = epochs), with first-learned epochs "
                      "(Arpit et al. 2017) and forgetting events (Toneva et al. 2019) summarized in results.json. "
                      "Costs one pass over the training set per epoch.", flag_values=fv)
    flags.DEFINE_bool("measures", False, "Beyond the paper: at the end of the run, measure the complexity of the "
                      "weights it reports into results.json['measures']: Frobenius / spectral / (2,1) norms per layer "
                      "and their products, Bartlett et al.'s spectral complexity, distance from initialization, the "
                      "training margins (raw and normalized), the input Jacobian norm on test points (Novak et al. "
                      "2018) and the top Hessian eigenvalue (sharpness). Costs one pass over the training set plus "
                      "20 to 200 Hessian-vector products over 1,024 training examples, once, at the end.", flag_values=fv)
    flags.DEFINE_integer("checkpoint_every_steps", None, "Also checkpoint every N optimizer steps inside an epoch "
                         "(long ImageNet epochs); a resume replays the same batches from that step. Default: at "
                         "epoch ends only.", lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("steps_per_execution", None, "Optimizer steps per compiled call: fewer Python round trips "
                         "per step, under every strategy (default 32; Keras' fit, the one-device loop, takes the "
                         "largest divisor of the epoch's steps up to it, and an epoch without a divisor of at least "
                         "a quarter of it trains in the package's strategy.run loop, which ends an epoch with a "
                         "shorter call).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_bool("device_data", None, "Place the in-memory training set (CIFAR-10: 118 MB of uint8) on every "
                      "replica's device once and make each step's batch there, inside the compiled loop (gather, "
                      "crop, augmentation, whitening; without --random_crop or --augment the set is held whitened, as "
                      "floats: 4x the memory, one gather per step), instead of in tf.data on the host: the same "
                      "batches, no per-step input work on the host. Trains in the package's strategy.run loop. "
                      "Default: for an in-memory set without --random_crop or --augment, at most 1 GiB per "
                      "device, on under several replicas (mirrored, multi_worker) and on one device where XLA "
                      "compiles the loop's whole call (--jit_scope=call), where it measured faster (README: "
                      "per-step overhead, training throughput); off elsewhere.", flag_values=fv)
    flags.DEFINE_bool("jit_compile", None, "XLA-compile training on a single device (default: the faster "
                      "setting measured per device kind and model, models.XLA_DEFAULTS: on CPU on for the MLPs, off "
                      "for the convnets; on GPU off until measured).", flag_values=fv)
    flags.DEFINE_enum("jit_scope", None, ["step", "call"], "With XLA on one device: compile each training step, or "
                      "the loop's whole call (--steps_per_execution steps and their --device_data gathers in one "
                      "program, no op dispatched between steps; needs --device_data, its default then for an "
                      "in-memory set). Default: measured per device kind and model, models.XLA_CALL_DEFAULTS: call "
                      "for the MLPs on CPU (1.07-1.15x faster), step elsewhere (small AlexNet's call compiled whole "
                      "ran 60x slower on CPU).", flag_values=fv)
    flags.DEFINE_bool("deterministic", False, "Enable TF op determinism and keep ImageNet's streamed input order "
                      "a function of the seed (slower; some GPU ops raise UnimplementedError). The in-memory "
                      "datasets are read deterministically either way.", flag_values=fv)
    flags.DEFINE_bool("tensorboard", True, "Write TensorBoard scalars to <run dir>/tensorboard.", flag_values=fv)


def _fields(cls, f):
    """{field: flag value} for every field of a config dataclass (nested configs excepted)."""
    return {field.name: getattr(f, DERIVED_FIELDS.get(field.name, field.name)) for field in dataclasses.fields(cls)
            if field.name != "data"}


def config_from_flags(f):
    """Parsed flags -> TrainConfig (the only place training flags are read)."""
    data = _fields(DataConfig, f)
    data["noise_matrix"] = read_noise_matrix(data["noise_matrix"])
    return TrainConfig(data=DataConfig(**data), **_fields(TrainConfig, f))


def read_noise_matrix(value):
    """--noise_matrix -> what the config stores: a corruption.NOISE_PAIRS name as is, a .npy or text file's matrix
    or inline rows as canonical text (so the run is named after the matrix, not a path)."""
    if value is None or value in corruption.NOISE_PAIRS:
        return value
    if os.path.isfile(value):
        try:
            if value.endswith(".npy"):
                value = corruption.matrix_text(np.load(value, allow_pickle=False))
            else:  # text: one row per line, entries separated by spaces or commas
                with open(value) as fh:
                    value = ";".join(line for line in fh.read().splitlines() if line.strip())
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise UserError(f"--noise_matrix: cannot read {value}: {e}") from None
    elif not any(c.isdigit() for c in value):
        raise UserError(f"--noise_matrix: {value!r} is neither a file, nor a known name "
                        f"({', '.join(corruption.NOISE_PAIRS)}), nor rows of numbers")
    return corruption.matrix_text(corruption.parse_matrix(value))


def kernel_config_from_flags(f):
    """Parsed flags -> KernelConfig (the only place kernel flags are read)."""
    return KernelConfig(**_fields(KernelConfig, f))


def define_kernel_flags(fv=flags.FLAGS):
    """Defines all flags of `python -m rethink_tf.linear_models` (§5) on `fv`."""
    before = set(fv)
    _define_kernel_flags(fv)
    _require_finite_floats(fv, before)


def _define_kernel_flags(fv):
    from rethink_tf.linear.features import FEATURES
    from rethink_tf.linear.kernels import KERNELS

    flags.DEFINE_enum("dataset", "mnist", ["mnist", "fashion_mnist", "cifar10", "fashion_mnist_5k"], "Dataset.",
                      flag_values=fv)
    flags.DEFINE_string("data_dir", None, "Folder with the original archives or tfds data.", flag_values=fv)
    flags.DEFINE_bool("download", True, "Download and prepare the dataset with tensorflow_datasets into --data_dir "
                      "when it is absent (--nodownload: fail with what to put where).", flag_values=fv)
    flags.DEFINE_enum("source", "auto", list(sources.SOURCES), "archive, tfds or auto.", flag_values=fv)
    flags.DEFINE_integer("train_examples", None, "First N training examples (n of the n×n system).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_integer("test_examples", None, "First N test examples.", lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("kernel", "gaussian", list(KERNELS), "Kernel k(x, z).", flag_values=fv)
    flags.DEFINE_float("gamma", 0.02, "Gaussian kernel exp(-gamma·|x-z|²) on the features (0.02 on MNIST "
                       "pixels / 255 is the first author's setting).", flag_values=fv)
    flags.DEFINE_integer("degree", 4, "Polynomial kernel degree.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("coef0", 0.0, "Polynomial kernel offset c in (⟨x,z⟩ + c)^degree.", flag_values=fv)
    flags.DEFINE_bool("normalize", False, "Scale feature rows to unit norm first.", flag_values=fv)
    flags.DEFINE_enum("features", "none", list(FEATURES), "none (pixels / 255), gabor (MNIST wavelet "
                      "features), random_conv (random convolutional features).", flag_values=fv)
    flags.DEFINE_integer("num_filters", 32_000, "Filters of the random_conv features (the paper: 32,000).",
                         lower_bound=1, flag_values=fv)
    flags.DEFINE_enum("precision", "auto", list(config.PRECISIONS), "Factorization precision: float64, or float32 "
                      "with float64 iterative refinement when float64 does not fit in RAM.", flag_values=fv)
    flags.DEFINE_enum("solver", "scipy", list(config.SOLVERS), "scipy (LAPACK, CPU) or tf (tf.linalg float64, "
                      "accelerators; n <= 46,340).", flag_values=fv)
    flags.DEFINE_float("ridge", 0.0, "ℓ2 regularization λ in (K + λI)α = Y (0 = interpolation, Eq. 3).",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_enum("corrupt", "none", ["none", "labels", "random_labels"], "Label corruption (§2.1 "
                      "semantics).", flag_values=fv)
    flags.DEFINE_float("corrupt_prob", None, "p for --corrupt=labels.", lower_bound=0.0, upper_bound=1.0,
                       flag_values=fv)
    flags.DEFINE_integer("corrupt_seed", 0, "Corruption seed.", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("seed", 0, "Seed of the random_conv filters.", lower_bound=0, flag_values=fv)
    flags.DEFINE_integer("block_size", 2048, "Rows per Gram-matrix block.", lower_bound=1, flag_values=fv)
    flags.DEFINE_float("refine_tol", 1e-6, "Iterative refinement stops at this relative residual |Y - K alpha| / |Y|; "
                       "above it the run redoes a float32 solve in float64 if that fits, else warns.",
                       lower_bound=0.0, flag_values=fv)
    flags.DEFINE_integer("max_refine", 20, "Most refinement passes (each costs one K alpha).", lower_bound=1,
                         flag_values=fv)
    flags.DEFINE_string("workdir", "runs", "Runs are written to <workdir>/<run name>/.", flag_values=fv)
    flags.DEFINE_string("run_name", None, "Explicit run directory name.", flag_values=fv)
