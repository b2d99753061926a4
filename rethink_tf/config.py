"""Frozen, typed run configurations. Entry points build them from flags; library code only ever sees these.

A config is plain data: `to_dict()` is what `config.json` holds, `from_dict()` reads it back, and `run_name()`
names the run directory after the settings that distinguish it, so sweeps restart idempotently.
"""

import dataclasses
from typing import Optional


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which examples a run sees and how they are corrupted and preprocessed (PAPER.md §1-§2).

    Attributes:
      dataset: a key of rethink_tf.data.sources.DATASETS.
      data_dir: folder with the original archives or tfds-prepared data (None: Debian/tfds defaults).
      source: "auto", "archive" or "tfds".
      manual_dir: ImageNet's ILSVRC2012 tars, for tfds preparation.
      prepare_imagenet: allow the hours-long tfds preparation of ImageNet.
      train_examples, test_examples: first-N subsets (None: the whole split).
      corrupt: one of corruption.KINDS.
      corrupt_prob: p for corrupt="labels" (1.0 for random_labels).
      corrupt_seed: seed of the corruption, independent of the training seed.
      corrupt_test_labels: also corrupt the test labels (off: test accuracy is on clean labels).
      random_crop: Table 1's random 28×28 crop at training time (CIFAR-10).
      augment: Table 4's flips + ±25° rotation at training time.
      imagenet_augment: the TF inception train-time distortions (Table 2's "data aug").
      shuffle_seed: seed of the per-epoch shuffles and augmentations.
    """

    dataset: str = "cifar10"
    data_dir: Optional[str] = None
    source: str = "auto"
    manual_dir: Optional[str] = None
    prepare_imagenet: bool = False
    train_examples: Optional[int] = None
    test_examples: Optional[int] = None
    corrupt: str = "none"
    corrupt_prob: Optional[float] = None
    corrupt_seed: int = 0
    corrupt_test_labels: bool = False
    random_crop: bool = False
    augment: bool = False
    imagenet_augment: bool = False
    shuffle_seed: int = 0

    def to_dict(self):
        return dataclasses.asdict(self)
