"""What a dataset builder returns: the splits of one dataset and what the loaders need to know about them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

# The `data` setting that trains the student on a stratified fraction of the training split (kdbench.data.subset);
# here because the validation hold-out must leave it out of the dataset's own settings too.
TRAIN_KEY = "train_fraction"
# The `data` setting that chooses which stratified draw `train_fraction` takes (kdbench.data.subset), apart from the
# dataset's `split_seed` (which also moves the test set): here for the same reason as TRAIN_KEY.
SUBSET_SEED_KEY = "subset_seed"


@dataclass
class DataSplits:
    train: Dataset  # carries the recipe's augmentation, which the train loader keys per sample; yields (x, y, index)
    test: Dataset  # never augmented; yields (x, y, index)
    num_classes: int
    in_chans: int
    image_size: int
    train_targets: torch.Tensor  # (N_train,) int64 labels, for samplers that need classes (CRD negatives)
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    # How the split was made, recorded in the run (e.g. a partition rule for Mini-ImageNet).
    notes: dict[str, Any] = dataclasses.field(default_factory=dict)
    # DataLoader worker processes: 0 for in-memory sets (served as whole batches, no workers); image-file sets
    # set loaders.AUTO_WORKERS (-1) and the loader sizes it for the device (loaders.loader_workers;
    # KDBENCH_WORKERS overrides).
    num_workers: int = 0
    # Samples held out of the training split to choose the best epoch on (data.val_fraction; never augmented,
    # never trained on), or None. See kdbench.data.validation.
    val: Dataset | None = None
