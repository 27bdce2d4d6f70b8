"""`cifar10`, `cifar100`: the official 50,000/10,000 splits read by torchvision's own CIFAR readers.

Files: `<data-root>/cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}` and
`<data-root>/cifar-100-python/{train,test,meta}` (the python pickles of the official tarballs). Missing files are
downloaded once, with a bounded timeout; offline, the error names the files and the URL.

Integrity (md5) design: our subclasses keep torchvision's reader *and* its md5 check unchanged — the expected
checksums are the class attributes `train_list`, `test_list` and `meta` that torchvision's constructor verifies
before reading a byte. Nothing here can turn the check off for a real user. Tests write tiny files in the true
on-disk format and monkeypatch those three attributes *of our subclass* (not torchvision's class) to the
fixture's md5s, so they exercise the very reading code real users run, and a corrupted fixture still fails
the check (tests/test_data_cifar.py pins both). A failed check is reported naming the bad file.

The decoded arrays are kept in memory as uint8 N × C × H × W tensors (no PIL round trip) and served as whole
batches: gather, keyed pad-crop-flip, normalisation (kdbench.data.loaders.InMemoryBatches; on the GPU by
default). Single items are (image, label, index), unaugmented.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import CIFAR10, CIFAR100

from kdbench.core.safe_load import load_numpy_pickle
from kdbench.data._files import open_verified
from kdbench.data.augment import PadCropFlip
from kdbench.data.registry import DataSplits, register_dataset
from kdbench.data.tensor_dataset import IndexedTensorDataset
from kdbench.data.transforms import Normalize255, in_memory_augment
from kdbench.spec.recipe import Recipe, crd_schedule

# CRD / RepDistiller's CIFAR-100 statistics; CIFAR-10's are the per-channel mean/std of its training images.
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def crd_recipe(name: str) -> Recipe:
    """CRD's CIFAR recipe (Tian et al., ICLR 2020, as in RepDistiller): SGD 0.9, lr 0.05 ×0.1 after epochs
    150/180/210 of 240, weight decay 5e-4, batch 64, RandomCrop(32, pad 4) + flip, small-image CNN stem."""
    return crd_schedule(name, augment="crop-pad4-flip", cifar_stem=True)


class CIFAR10Files(CIFAR10):
    """torchvision's CIFAR10 reader, md5 check on; its decoded array becomes an in-memory split."""


class CIFAR100Files(CIFAR100):
    """torchvision's CIFAR100 reader (fine labels), md5 check on; its decoded array becomes an in-memory split."""


def in_memory(reader: CIFAR10, augment: PadCropFlip | None, finish: Normalize255) -> IndexedTensorDataset:
    """The reader's N × H × W × C uint8 array as N × C × H × W, served as batches (kdbench.data.loaders)."""
    images = torch.from_numpy(reader.data).permute(0, 3, 1, 2).contiguous()
    return IndexedTensorDataset(images, torch.tensor(reader.targets, dtype=torch.int64), augment, finish,
                                classes=list(reader.classes))


@dataclass(frozen=True)
class CifarParams:
    """No options: the official splits at their native 32 px."""


def read_pickle(path: Path) -> object:
    """Read one CIFAR file as torchvision does (Python 2 pickles: latin1), but with an unpickler that builds only
    plain values and numpy arrays: this runs to find which file is unreadable, and must not obey a crafted one."""
    return load_numpy_pickle(path, encoding="latin1")


def _build(
    name: str, cls: type[CIFAR10], root: Path, augment: str, mean: tuple[float, ...], std: tuple[float, ...]
) -> DataSplits:
    folder = root / cls.base_folder
    files = [*cls.train_list, *cls.test_list, [cls.meta["filename"], cls.meta["md5"]]]

    def open_split(train: bool) -> CIFAR10:
        return open_verified(
            name, root, folder, [(f, md5) for f, md5 in files], cls.url,
            construct=lambda: cls(str(root), train=train),
            download=lambda: cls(str(root), train=True, download=True),
            file_format=f"the python pickles of the official {cls.filename}", read_file=read_pickle,
        )

    train, test = open_split(True), open_split(False)
    finish = Normalize255(mean, std)
    return DataSplits(
        train=in_memory(train, in_memory_augment(augment, name), finish),
        test=in_memory(test, None, finish),
        num_classes=len(train.classes),
        in_chans=3,
        image_size=32,
        train_targets=torch.tensor(train.targets, dtype=torch.int64),
        mean=mean,
        std=std,
        notes={"split": f"official train/test ({len(train):,}/{len(test):,})"},
    )


@register_dataset(
    "cifar100",
    params=CifarParams(),
    recipe=crd_recipe("crd-cifar100"),
    description="CIFAR-100, 100 classes, 50,000/10,000 at 32 px (torchvision reader, download when missing)",
    needs_root=True,
)
def build_cifar100(params: CifarParams, root: Path, augment: str) -> DataSplits:
    return _build("cifar100", CIFAR100Files, root, augment, CIFAR100_MEAN, CIFAR100_STD)


@register_dataset(
    "cifar10",
    params=CifarParams(),
    recipe=crd_recipe("crd-cifar10"),
    description="CIFAR-10, 10 classes, 50,000/10,000 at 32 px (torchvision reader, download when missing)",
    needs_root=True,
)
def build_cifar10(params: CifarParams, root: Path, augment: str) -> DataSplits:
    return _build("cifar10", CIFAR10Files, root, augment, CIFAR10_MEAN, CIFAR10_STD)
