"""Frozen, typed run configurations. Entry points build them from flags; library code only ever sees these.

A config is plain data: `to_dict()` is what `config.json` holds, `from_dict()` reads it back, and `name()`
names the run directory after the settings that distinguish it (`digest` of its identity), so sweeps restart
idempotently. TrainConfig is a training run (rethink_tf.training), KernelConfig a §5 kernel run (rethink_tf.linear).
Each field is declared once, here: the entry points' flags carry the same names (flags_lib reads them by field),
and a test checks the two against each other.
"""

import dataclasses
import hashlib
import json
import os
from typing import Optional

from rethink_tf.data.corruption import PIXEL_KINDS

# Settings that say *where* or *how fast* a run executes, or how its history is summarized, not *what* it trains.
# They are left out of the run's identity: a run may resume with any of them changed (another node's --data_dir,
# more GPUs, XLA on or off), and the change is recorded (results.json "resumes"). Every other field names the run
# and must match to resume.
NON_IDENTITY_FIELDS = frozenset({
    "tensorboard", "run_name", "strategy", "num_gpus", "cross_device_ops", "data_dir", "source", "manual_dir",
    "prepare_imagenet", "download", "jit_compile", "steps_per_execution", "deterministic", "checkpoint_every_steps",
    "fit_threshold", "worker_hosts", "task_index", "cluster_timeout", "data_service", "per_example",
    "measures", "init_from", "extra_test", "device_data", "jit_scope"})
# The identity fields of run names as first derived (name version 1): their values, defaults included, are hashed as
# they always were, so that existing run directories keep their names. A field added since joins the hash only when
# its value differs from its default: adding a field renames no run (killed runs still resume, sweeps still skip
# finished runs, figures never average an old and a new copy of one run). Never edit this set.
NAME_V1_FIELDS = frozenset({
    "augment", "batch_size", "bn_momentum", "corrupt", "corrupt_prob", "corrupt_seed", "corrupt_test_labels",
    "dataset", "dropout", "dtype_policy", "ema_decay", "epochs", "image_feature", "imagenet_augment",
    "label_feature", "label_smoothing", "learning_rate", "lr_decay", "lr_decay_examples", "model", "momentum",
    "optimizer", "random_crop", "seed", "shuffle_seed", "stop_at_train_accuracy", "sync_batchnorm",
    "test_examples", "train_examples", "weight_decay"})
# Fields that vary *within* one protocol: the randomization test compares corruptions under one protocol and
# averages seeds (figures, report).
WITHIN_PROTOCOL_FIELDS = frozenset({"seed", "shuffle_seed", "corrupt", "corrupt_prob", "corrupt_seed",
                                    "corrupt_test_labels", "noise_std", "train_label_feature"})


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which examples a run sees and how they are corrupted and preprocessed (the paper's §2.1 and Appendix A).

    Attributes:
      dataset: a key of rethink_tf.data.sources.DATASETS, "tfds:NAME" (any tfds image classification dataset
        prepared under data_dir), or "user:<fingerprint>" (rethink_tf.randomization_test's in-memory data).
      data_dir: folder with the original archives or tfds-prepared data (None: Debian/tfds defaults).
      source: "auto", "archive" or "tfds".
      manual_dir: ImageNet's ILSVRC2012 tars, for tfds preparation.
      prepare_imagenet: allow the hours-long tfds preparation of ImageNet.
      download: download and prepare CIFAR-10/MNIST/Fashion-MNIST through tfds when absent (never ImageNet).
      train_examples, test_examples: first-N subsets (None: the whole split).
      corrupt: one of corruption.KINDS.
      corrupt_prob: p for corrupt="labels" or "flip" (1.0 for random_labels); for a pixel kind the fraction of
        images corrupted (None: all, the paper's); for class_conditional with a named noise_matrix, each pair's p.
      noise_matrix: class_conditional's transition matrix: a corruption.NOISE_PAIRS name ("cifar10_pairs") or the
        matrix itself as text (rows "a b ...; c d ..."; the entry point reads a file into this form, so that the
        run is named after the matrix, not after a path).
      noise_std: --corrupt=additive_gaussian's σ in [0, 1] pixel units (beyond the paper).
      train_label_feature: --corrupt=human_labels: the tfds feature holding the annotators' training labels
        (CIFAR-10N's worse_label, aggre_label, random_label1..3; CIFAR-100N's noise_label); label_feature stays the
        clean label, which the test split is scored on and "changed" is measured against.
      corrupt_seed: seed of the corruption, independent of the training seed.
      corrupt_test_labels: also corrupt the test labels (off: test accuracy is on clean labels).
      random_crop: Table 1's random 28×28 crop at training time (CIFAR-10).
      augment: Table 4's flips + ±25° rotation at training time.
      imagenet_augment: the TF inception train-time distortions (Table 2's "data aug").
      shuffle_seed: seed of the per-epoch shuffles and augmentations.
      image_feature, label_feature: the feature names of a tfds:NAME dataset.
      data_service: "grpc://HOST:PORT" of a tf.data service dispatcher that decodes the ImageNet stream
        (rethink_tf.data.service); None: decode locally.
      extra_test: comma-separated "tfds:NAME" test sets evaluated beside the test set after every epoch and at the
        end (CIFAR-10.1: tfds:cifar10_1; beyond the paper, Recht et al. 2019). It measures, it does not change what
        trains: not part of the run's identity.
    """

    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    source: str = "auto"
    manual_dir: Optional[str] = None
    prepare_imagenet: bool = False
    download: bool = True
    train_examples: Optional[int] = None
    test_examples: Optional[int] = None
    corrupt: str = "none"
    corrupt_prob: Optional[float] = None
    noise_matrix: Optional[str] = None
    noise_std: Optional[float] = None
    train_label_feature: Optional[str] = None
    corrupt_seed: int = 0
    corrupt_test_labels: bool = False
    random_crop: bool = False
    augment: bool = False
    imagenet_augment: bool = False
    shuffle_seed: int = 0
    image_feature: str = "image"
    label_feature: str = "label"
    data_service: Optional[str] = None
    extra_test: Optional[str] = None

    def to_dict(self):
        return dataclasses.asdict(self)

    def extra_test_names(self):
        """The --extra_test datasets as a tuple, in the order given, without repeats."""
        return tuple(dict.fromkeys(n.strip() for n in (self.extra_test or "").split(",") if n.strip()))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """One training run (Appendix A's recipes). None means "the paper's recipe for this model" (paper.RECIPES).

    Attributes:
      model: a key of rethink_tf.models.MODELS, or "package.module:function" (a user's builder).
      data: the DataConfig.
      epochs: number of epochs to train.
      batch_size: global batch size (None: recipe, 128 on CIFAR-10).
      optimizer: "sgd" or "rmsprop" (None: recipe).
      learning_rate: initial learning rate (None: recipe; 0.1 Inception, 0.01 AlexNet and MLPs).
      lr_decay: multiplicative decay per period (None: recipe; 0.95).
      lr_decay_examples: examples seen per decay period (None: the full training set size × recipe epochs per
        decay, so a subset run keeps the paper's per-step schedule instead of decaying every short epoch).
      momentum: SGD/RMSProp momentum (None: recipe; 0.9).
      rmsprop_initial_ms: RMSProp's initial mean square (None: 1.0 for rmsprop, TF1's RMSPropOptimizer as the TF
        inception package runs it; 0.0 is Keras' default). Unused by SGD.
      weight_decay: TF l2_loss-style decay on kernels (0: off, the paper's default for randomization runs).
      label_smoothing, dropout, bn_momentum: model/loss options (None: builder or recipe default).
      width: capacity multiplier of the CIFAR models' widths (beyond the paper: model-wise double descent,
        Nakkiran et al. 2020); None or 1.0: the paper's widths.
      seed: seed of initialization, shuffling and augmentation.
      strategy, num_gpus, cross_device_ops: see training/distribute.py ("multi_worker": training/cluster.py).
      worker_hosts, task_index: write TF_CONFIG for --strategy=multi_worker ("h0:p0,h1:p1" and this worker's index).
      cluster_timeout: seconds to wait for every worker of the cluster before giving up with one line.
      sync_batchnorm: BatchNorm statistics over the global batch under a multi-replica strategy.
      dtype_policy: "float32" (paper fidelity), "mixed_bfloat16", or "mixed_float16" (loss scaling; single
        replica only: LossScaleOptimizer fails under MirroredStrategy, keras#18666). Logits stay float32.
      stop_at_train_accuracy: end the run once an epoch's training accuracy reaches this (None: never).
      ema_decay: keep an exponential moving average of the trainable weights with this decay (the TF inception
        package evaluates a 0.9999 average) and report the final accuracies on it (None: off).
      fit_threshold: training accuracy that counts as "fitted" for epochs_to_fit / steps_to_fit and Figure 1b
        (1.0: every example of an epoch right; results.json also records 0.99, 0.999 and 1.0 separately).
      jit_compile: XLA on a single device (None: models.XLA_DEFAULTS, the faster setting measured per device kind
        and model).
      jit_scope: what XLA compiles with jit_compile on one device: "step" (each training step) or "call" (the
        strategy.run loop's whole call, its steps and their gathers from device_data, which a "call" asked for turns
        on by default for an in-memory set: training.loop.compiled_loop).
        None: models.XLA_CALL_DEFAULTS, measured per device kind and model ("call" for the MLPs on CPU; small
        AlexNet's call compiled whole ran at 11 images/s on CPU, against 693 with each step compiled), else "step".
      steps_per_execution: optimizer steps per tf.function call (None: 32). Keras' fit takes the largest divisor of
        the epoch's steps up to it (it would otherwise overrun an epoch whose steps it does not divide); the
        strategy.run loop ends an epoch with a shorter call, and trains one-device runs whose epoch has no divisor
        of at least a quarter of it (training.loop.default_loop).
      device_data: place the in-memory training set on every replica's device once and make each step's batch
        there (gather, crop, augmentation, whitening inside the compiled loop; without augmentation the set is
        held whitened, as floats, and a batch is one gather) instead of in tf.data on the host;
        the same batches as the tf.data path (tested), so not part of the run's identity. None: where it measured
        faster (training.loop.device_data_default: a set held whitened, at most 1 GiB per device, under several
        replicas in the strategy.run loop or on one device where XLA compiles the whole call), else off.
      deterministic: enable TF op determinism and a seeded ImageNet input order (slower; some GPU ops then raise
        UnimplementedError).
      tensorboard: write TensorBoard scalars.
      checkpoint_every_steps: also checkpoint every N optimizer steps inside an epoch (long ImageNet epochs); a
        resume then replays the same batches from that step on (None: at epoch ends only).
      run_name: explicit run directory name (None: derived from the config).
      per_example: keep every training example's prediction at every epoch and export per_example.npz with
        first-learned epochs and forgetting events (rethink_tf.dynamics; beyond the paper). Not part of the
        run's identity: it records, it does not change what trains.
      measures: at the end of the run, measure the complexity of the weights it reports (norms and their
        products, distance from initialization, margins, input Jacobian, sharpness: rethink_tf.measures; beyond
        the paper) into results.json. Not part of the run's identity.
      init_from: a finished run's directory whose final weights this run starts from instead of a random
        initialization (beyond the paper: Maennel et al. 2020 pre-train on random labels). The path is where, not
        what: the source run's directory name (its own identity) names this run (name_identity).
    """

    model: str = "small_inception"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    epochs: int = 100
    batch_size: Optional[int] = None
    optimizer: Optional[str] = None
    learning_rate: Optional[float] = None
    lr_decay: Optional[float] = None
    lr_decay_examples: Optional[int] = None
    momentum: Optional[float] = None
    rmsprop_initial_ms: Optional[float] = None
    weight_decay: float = 0.0
    label_smoothing: Optional[float] = None
    dropout: Optional[float] = None
    bn_momentum: Optional[float] = None
    width: Optional[float] = None
    seed: int = 0
    strategy: str = "none"
    num_gpus: Optional[int] = None
    cross_device_ops: str = "auto"
    worker_hosts: Optional[str] = None
    task_index: Optional[int] = None
    cluster_timeout: float = 300.0
    sync_batchnorm: bool = False
    dtype_policy: str = "float32"
    stop_at_train_accuracy: Optional[float] = None
    ema_decay: Optional[float] = None
    fit_threshold: float = 1.0
    jit_compile: Optional[bool] = None
    steps_per_execution: Optional[int] = None
    device_data: Optional[bool] = None
    jit_scope: Optional[str] = None
    deterministic: bool = False
    tensorboard: bool = True
    checkpoint_every_steps: Optional[int] = None
    run_name: Optional[str] = None
    per_example: bool = False
    measures: bool = False
    init_from: Optional[str] = None

    def resolved(self):
        """A copy with every None recipe field replaced by the paper's recipe or the model builder's default.

        Every field that the report pairs with a paper row (dropout, label smoothing, lr, ...) is explicit after
        this, so an Inception V3 run with the default dropout 0.2 can never be read as a "dropout: no" run.
        Options a model does not take (dropout of an MLP) stay None.
        """
        from rethink_tf import models, paper
        from rethink_tf.data import sources

        # a plug-in model ("package.module:function") gets the paper's CIFAR-10 recipe for AlexNet and the MLPs
        recipe = paper.RECIPES.get(self.model, paper.RECIPES["small_alexnet"])
        d = self.data
        train_size = None
        if not self.lr_decay_examples:  # user data (randomization_test) always sets it
            spec = sources.spec(d.dataset, d.data_dir, d.image_feature, d.label_feature)
            train_size = spec.full_train_size or spec.train_size
        builder = models.option_defaults(self.model) if self.model in models.MODELS else {}  # plug-ins: none
        if self.optimizer == "adam" and self.momentum is not None:
            from rethink_tf.errors import UserError

            raise UserError("--momentum does not apply to --optimizer=adam (its moment decays are Keras' 0.9 / 0.999)")
        return dataclasses.replace(
            self,
            batch_size=self.batch_size or recipe.batch_size,
            optimizer=self.optimizer or recipe.optimizer,
            learning_rate=self.learning_rate if self.learning_rate is not None else recipe.learning_rate,
            lr_decay=self.lr_decay if self.lr_decay is not None else recipe.lr_decay,
            lr_decay_examples=self.lr_decay_examples or int(round(train_size * recipe.lr_decay_epochs)),
            momentum=(None if (self.optimizer or recipe.optimizer) == "adam" else self.momentum
                      if self.momentum is not None else recipe.momentum),
            rmsprop_initial_ms=(None if (self.optimizer or recipe.optimizer) != "rmsprop" else
                                1.0 if self.rmsprop_initial_ms is None else self.rmsprop_initial_ms),
            label_smoothing=self.label_smoothing if self.label_smoothing is not None else recipe.label_smoothing,
            dropout=self.dropout if self.dropout is not None else builder.get("dropout"),
            bn_momentum=self.bn_momentum if self.bn_momentum is not None else builder.get("bn_momentum"),
            width=nondefault_width(self.width),  # 1.0 is the paper's model: the same run
            jit_compile=(self.jit_compile if self.jit_compile is not None
                         else models.xla_default(self.model)),
        )

    def identity(self):
        """The fields that name the run: to_dict() without NON_IDENTITY_FIELDS; two configs resume each other iff
        these are equal."""
        return {k: v for k, v in self.to_dict().items() if k not in NON_IDENTITY_FIELDS}

    def protocol(self):
        """The identity without seeds and the corruption: runs of one protocol differ only in the data's labels or
        pixels and the seed, so they may share a figure series or be averaged (seeds) and compared (corruptions)."""
        out = {k: v for k, v in self.identity().items() if k not in WITHIN_PROTOCOL_FIELDS}
        if self.init_from:  # a warm start trains from other weights: never one curve with runs from scratch
            out["init_from_run"] = source_run_name(self.init_from)
        return out

    def to_dict(self):
        """Flat dict keyed by flag name (the data fields inline), as config.json and results.json hold it."""
        d = dataclasses.asdict(self)
        d.update(d.pop("data"))
        return d

    @classmethod
    def from_dict(cls, d):
        """The config of a config.json dict; keys that are not fields (newer or older files) are ignored."""
        data_fields = {f.name for f in dataclasses.fields(DataConfig)}
        data = DataConfig(**{k: v for k, v in d.items() if k in data_fields})
        own = {f.name for f in dataclasses.fields(cls)} - {"data"}
        return cls(data=data, **{k: v for k, v in d.items() if k in own})

    def name(self, replicas=1):
        """The run directory name: readable settings plus a hash of everything that changes the result (on
        `replicas` replicas: see bn_replica_batch)."""
        if self.run_name:
            return self.run_name
        d = self.data
        parts = [d.dataset.replace(":", "-"), self.model.replace(":", "-"), d.corrupt]
        if d.corrupt_prob is not None and d.corrupt != "random_labels":  # labels, flip, a partial pixel kind
            parts.append(f"p{d.corrupt_prob:g}")
        if d.noise_std is not None:
            parts.append(f"sd{d.noise_std:g}")
        if d.train_label_feature:
            parts.append(d.train_label_feature.replace("_", ""))
        parts += [tag for flag, tag in ((d.random_crop, "crop"), (d.augment, "aug"), (d.imagenet_augment, "aug"))
                  if flag]
        if self.weight_decay:
            parts.append(f"wd{self.weight_decay:g}")
        if nondefault_width(self.width):
            parts.append(f"w{self.width:g}")
        if d.train_examples:
            parts.append(f"n{d.train_examples}")
        if self.init_from:
            parts.append("init")
        parts.append(f"s{self.seed}")
        return "-".join(parts + [digest(self.name_identity(replicas))])

    def name_identity(self, replicas=1):
        """What the run name's digest covers: the identity, with fields added after name version 1 only where they
        differ from their defaults (NAME_V1_FIELDS), and BatchNorm's per-replica batch where it is not the global
        batch (bn_replica_batch)."""
        defaults = {**{f.name: f.default for f in dataclasses.fields(DataConfig)},
                    **{f.name: f.default for f in dataclasses.fields(type(self)) if f.name != "data"}}
        named = {k: v for k, v in self.identity().items() if k in NAME_V1_FIELDS or v != defaults.get(k)}
        bn_batch = self.bn_replica_batch(replicas)
        if bn_batch is not None:
            named["bn_replica_batch"] = bn_batch
        if self.init_from:  # the source run's name (its config digest), not the path it is found at
            named["init_from_run"] = source_run_name(self.init_from)
        if self.ema_decay:  # the reference's average (warm-up, BN statistics) replaced Keras' in version 2 of names
            named["ema"] = "tf1_warmup_with_bn_statistics"
        return named

    def bn_replica_batch(self, replicas):
        """The batch BatchNorm normalizes over when it is not the global batch, else None.

        With per-replica BatchNorm (Keras' default; --sync_batchnorm off) each replica normalizes over its own
        batch_size / replicas images, so a model with BatchNorm trains differently on 1 and on 8 GPUs: the
        replica count is then part of what the run is, and names it. Without BatchNorm, with synchronized
        BatchNorm, or on one replica, where the steps run does not change what is trained (None).
        """
        from rethink_tf import models

        if replicas <= 1 or self.sync_batchnorm or not models.has_batchnorm(self.model):
            return None
        return self.batch_size // replicas


def nondefault_width(width):
    """A --width multiplier as the run records it: None for the paper's widths (unset or 1.0, one and the same run)."""
    return None if width in (None, 1.0) else width


def source_run_name(init_from):
    """The --init_from run's directory name, None without one: its own name (config digest) identifies the weights
    a warm start begins from, wherever the folder is found (the path may change, the run may not)."""
    return os.path.basename(os.path.normpath(init_from)) if init_from else None


def digest(identity):
    """The 8 hex digits of a run name: SHA-256 of the identity dict as sorted JSON (the one naming scheme of every
    run kind)."""
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def protocol_key(config_dict):
    """A hashable protocol of a config.json / results.json config (older files: missing fields take defaults)."""
    return json.dumps(TrainConfig.from_dict(config_dict).protocol(), sort_keys=True)


def resolved_config(config):
    """A results config dict with every recipe field explicit (older files left dropout/bn_momentum as None);
    configs of plug-in models and kernel runs are returned as they are."""
    from rethink_tf.models import MODELS

    if config.get("model") not in MODELS:
        return dict(config)
    return {**config, **TrainConfig.from_dict(config).resolved().to_dict()}


def label_setting(config):
    """(corrupt kind as the paper names it, p) of a config dict: labels with p = 1 is random labels, p = 0 is true
    labels; a pixel kind on a fraction p < 1 of the images is "partial_<kind>"."""
    kind, p = config.get("corrupt", "none"), config.get("corrupt_prob")
    if kind == "labels" and p == 1.0:
        return "random_labels", 1.0
    if kind == "labels" and p == 0.0:
        return "none", 0.0
    if kind == "random_labels":
        return kind, 1.0
    pixel = kind in PIXEL_KINDS
    if pixel and p is not None and p < 1.0:
        return f"partial_{kind}", p  # a fraction p of images (beyond the paper): not Figure 1a's all-images series
    return kind, (0.0 if pixel or p is None else p)


PRECISIONS = ("auto", "float64", "float32")
SOLVERS = ("scipy", "tf")
# A kernel run's settings that say where or how it is solved, not what: outside its name.
KERNEL_NON_IDENTITY_FIELDS = frozenset({"run_name", "data_dir", "source", "download", "block_size", "solver",
                                        "precision"})
# As NAME_V1_FIELDS for training runs: the kernel identity fields as first named, hashed with their defaults; a
# field added since joins a kernel run's name only when it is set. Never edit this set.
KERNEL_NAME_V1_FIELDS = frozenset({"dataset", "train_examples", "test_examples", "kernel", "gamma", "degree", "coef0",
                                   "normalize", "features", "num_filters", "ridge", "corrupt", "corrupt_prob",
                                   "corrupt_seed", "seed", "refine_tol", "max_refine"})


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """One kernel-interpolation run of §5 (rethink_tf.linear.experiment; flags: flags_lib.define_kernel_flags)."""

    dataset: str = "mnist"
    data_dir: Optional[str] = None
    source: str = "auto"
    download: bool = True
    train_examples: Optional[int] = None
    test_examples: Optional[int] = None
    kernel: str = "gaussian"
    gamma: float = 0.02
    degree: int = 4
    coef0: float = 0.0
    normalize: bool = False
    features: str = "none"
    num_filters: int = 32_000
    precision: str = "auto"
    solver: str = "scipy"
    ridge: float = 0.0
    corrupt: str = "none"
    corrupt_prob: Optional[float] = None
    corrupt_seed: int = 0
    seed: int = 0
    block_size: int = 2048
    refine_tol: float = 1e-6
    max_refine: int = 20
    run_name: Optional[str] = None

    def to_dict(self):
        return dataclasses.asdict(self)

    def name(self):
        if self.run_name:
            return self.run_name
        parts = ["kernel", self.dataset, self.features, self.kernel, self.corrupt]
        if self.train_examples:
            parts.append(f"n{self.train_examples}")
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return "-".join(parts + [digest({k: v for k, v in self.to_dict().items() if k not in KERNEL_NON_IDENTITY_FIELDS
                                         and (k in KERNEL_NAME_V1_FIELDS or v != defaults[k])})])

