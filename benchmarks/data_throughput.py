"""Images per second of each dataset's training loader, on fixtures in the true on-disk formats.

    python benchmarks/data_throughput.py [--epochs 3] [--workers 0,2] [--batch-size 64] [--device cpu] [--threads N]

Writes CIFAR-100 / CIFAR-10 pickles, STL-10 `.bin` files, Mini-ImageNet JPEGs + CSVs and an ImageFolder tree to
a temporary folder, builds each dataset with its recipe's augmentation, and times full epochs through
`make_train_loader` (the first epoch, which forks the workers and warms caches, is reported apart). Only the
loader is timed: decoding, augmentation, normalisation, collation, no model. The in-memory sets (digits, CIFAR,
STL-10) are served as whole batches with 0 workers (the path runs take); with N > 0 workers they go through the
per-sample DataLoader path instead, which gives the same crops — listed for comparison.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from fixtures_data import (  # noqa: E402
    patch_md5,
    write_cifar10,
    write_cifar100,
    write_imagefolder,
    write_mini_imagenet_csv,
    write_stl10,
)

from kdbench.data import build_dataset, get_dataset_spec  # noqa: E402
from kdbench.data.cifar import CIFAR10Files, CIFAR100Files  # noqa: E402
from kdbench.data.imagefolder import ImageFolderParams  # noqa: E402
from kdbench.data.loaders import loader_workers, make_train_loader  # noqa: E402
from kdbench.data.mini_imagenet import MiniImageNetParams  # noqa: E402
from kdbench.data.stl10 import STL10Labelled  # noqa: E402


def write_all(root: Path, mp: pytest.MonkeyPatch) -> dict[str, object]:
    """Each dataset's fixture (~1,000–2,000 training images) and the params to build it with."""
    patch_md5(mp, CIFAR100Files, write_cifar100(root, train_per_class=20, test_per_class=1).md5)
    patch_md5(mp, CIFAR10Files, write_cifar10(root, train_per_class=200, test_per_class=1).md5)
    patch_md5(mp, STL10Labelled, write_stl10(root, train_per_class=100, test_per_class=1).md5)
    write_mini_imagenet_csv(root, num_classes=12, per_class=90, size=(84, 84))
    write_imagefolder(root, num_classes=8, train_per_class=60, val_per_class=1, size=(320, 240))
    return {
        "digits": None,
        "cifar100": None,
        "cifar10": None,
        "stl10": None,
        "mini-imagenet": MiniImageNetParams(train_per_class=80, test_per_class=10),
        "imagefolder": ImageFolderParams(),
    }


def time_loader(ds, batch_size: int, workers: int, epochs: int, device: torch.device) -> tuple[float, float]:
    loader = make_train_loader(ds, batch_size, seed=0, device=device, num_workers=workers)
    rates = []
    for epoch in range(1, epochs + 1):
        torch.manual_seed(epoch)
        loader.sampler.set_epoch(epoch)
        t0 = time.perf_counter()
        n = 0
        for images, _, _ in loader:
            n += images.shape[0]
        rates.append(n / (time.perf_counter() - t0))
    steady = rates[1:] or rates
    return rates[0], sum(steady) / len(steady)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", default="0,2", help="comma-separated worker counts; 'auto' = the device's default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads of the main process (0: keep)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    counts = [loader_workers(device, -1) if w == "auto" else int(w) for w in args.workers.split(",")]
    print(f"torch threads {torch.get_num_threads()}, device {device}, batch {args.batch_size}, epochs {args.epochs}")
    print(f"{'dataset':<14} {'augment':<16} {'images':>6} {'px':>4} {'workers':>7} {'1st epoch/s':>11} {'steady/s':>9}")
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as mp:
        root = Path(tmp)
        for name, params in write_all(root, mp).items():
            augment = get_dataset_spec(name).recipe.augment
            data = build_dataset(name, params, root, augment)
            for workers in counts:
                first, steady = time_loader(data.train, args.batch_size, workers, args.epochs, device)
                print(f"{name:<14} {augment:<16} {len(data.train):>6} {data.image_size:>4} {workers:>7} "
                      f"{first:>11,.0f} {steady:>9,.0f}")


if __name__ == "__main__":
    main()
