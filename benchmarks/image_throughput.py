"""JPEG decode + ImageNet augmentation, images/s per CPU core: kdbench's `imagenet` loader against torchvision's
ImageFolder with the same transforms, at the same worker counts, in one run.

    python benchmarks/image_throughput.py [--images 2000] [--size 500x375] [--workers 0,2] [--batch-size 64]
                                          [--epochs 2] [--threads 1]

Writes `--images` JPEGs of ImageNet's typical size (500 × 375, quality 90, smooth gradients plus noise so that
they compress like photographs rather than flat colour) into an ILSVRC2012 tree, then times whole epochs of:
- kdbench: `build_dataset("imagenet")` with its recipe's augmentation (keyed RandomResizedCrop(224) + flip,
  torchvision.io's libjpeg-turbo decoder, fused uint8 → float normalisation) through `make_train_loader`;
- torchvision: `ImageFolder` (PIL loader, `convert("RGB")`) + RandomResizedCrop(224), RandomHorizontalFlip,
  ToTensor, Normalize, through a DataLoader with the same batch size, workers, shuffling and prefetch.
With `--gpu-decode` (a CUDA device only; refused in one line without one) a third pipeline is timed:
- kdbench-gpu-decode: loader workers only read the files' bytes; the main process decodes each batch with
  torchvision.io.decode_jpeg on the GPU (nvJPEG), then applies the same keyed RandomResizedCrop, flip and
  normalisation there — the crops kdbench's CPU path draws, on the device.
The pipelines' epochs are interleaved, their order rotating each epoch. The first epoch (forking workers, cold
page cache) is reported apart; "steady" is the median of the others. Per-core rates divide by the worker count (by 1
with 0 workers: the main process decodes). The ratio, kdbench / torchvision at each worker count, is the median of
the per-epoch ratios. No model runs: only loading is timed. Nothing is asserted about speed (machines are shared);
tests/test_image_throughput_benchmark.py runs this on a few images.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kdbench.data import build_dataset, get_dataset_spec  # noqa: E402
from kdbench.data.augment import SampleKey  # noqa: E402
from kdbench.data.imagenet import imagenet_wnids  # noqa: E402
from kdbench.data.loaders import make_train_loader  # noqa: E402
from kdbench.data.transforms import IMAGENET_MEAN, IMAGENET_STD, Pipeline  # noqa: E402

GPU_DECODE_REFUSED = ("image_throughput: --gpu-decode needs a CUDA device (torchvision.io.decode_jpeg on CUDA) and "
                      "none is visible; leave the option out to time the CPU pipelines")


def write_tree(root: Path, images: int, size: tuple[int, int], classes: int = 10, seed: int = 0) -> Path:
    """`imagenet/train/<wnid>/*.JPEG` (images spread over `classes` real wnids) and one val image per class."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    wnids = imagenet_wnids()[:: 1000 // classes][:classes]
    base = root / "imagenet"
    for i in range(images):
        a, b, c = rng.uniform(0.2, 2.0, 3)
        img = np.stack([np.sin(xx / (37 * a) + yy / (53 * b)), np.cos(yy / (41 * c)), np.sin((xx + yy) / (29 * a))])
        img = (img.transpose(1, 2, 0) * 90 + 128 + rng.normal(0, 12, (h, w, 3))).clip(0, 255).astype(np.uint8)
        folder = base / "train" / wnids[i % classes]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{wnids[i % classes]}_{i}.JPEG", quality=90)
    for wnid in wnids:
        (base / "val" / wnid).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(base / "val" / wnid / "v.JPEG")
    return base


def torchvision_loader(train_dir: Path, batch_size: int, workers: int) -> torch.utils.data.DataLoader:
    from torchvision import datasets, transforms

    pipeline = transforms.Compose([transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    return torch.utils.data.DataLoader(datasets.ImageFolder(str(train_dir), pipeline), batch_size=batch_size,
                                       shuffle=True, drop_last=True, num_workers=workers,
                                       prefetch_factor=4 if workers else None)


class FileBytes(torch.utils.data.Dataset):
    """A split's files as raw bytes (uint8 1-D tensors) with their index: what the GPU-decode path's workers do."""

    def __init__(self, files) -> None:
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from torchvision.io import read_file

        return read_file(str(self.files[index])), index


def _as_list(batch: list) -> list:
    return batch


class GpuDecodeLoader:
    """Batches of the training split decoded on `device` by nvJPEG, then cropped, flipped and normalised there
    with the keyed steps of the dataset's own pipeline (the same crops as its CPU path)."""

    def __init__(self, train, batch_size: int, workers: int, device: torch.device, seed: int = 0) -> None:
        self.steps: Pipeline = train.transform
        self.device, self.seed, self.epoch = device, seed, 1
        self.sampler = self  # time_epoch calls sampler.set_epoch
        self.loader = torch.utils.data.DataLoader(FileBytes(train.files), batch_size=batch_size, shuffle=True,
                                                  drop_last=True, num_workers=workers, collate_fn=_as_list,
                                                  prefetch_factor=4 if workers else None)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        from torchvision.io import ImageReadMode, decode_jpeg

        for batch in self.loader:
            images = decode_jpeg([data for data, _ in batch], mode=ImageReadMode.RGB, device=self.device)
            out = torch.stack([self.steps(image, SampleKey(self.seed, self.epoch, index))
                               for image, (_, index) in zip(images, batch, strict=True)])
            yield out, None


def time_epoch(loader, epoch: int) -> tuple[float, tuple[int, ...]]:
    """One epoch's images/s and one batch's shape."""
    if hasattr(loader, "sampler") and hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    t0, n, shape = time.perf_counter(), 0, ()
    for batch in loader:
        n += batch[0].shape[0]
        shape = tuple(batch[0].shape)
    return n / (time.perf_counter() - t0), shape


def measure(root: Path, workers: list[int], batch_size: int, epochs: int, gpu_decode: bool = False) -> list[dict]:
    """One row per (pipeline, workers): images/s of the first epoch and the median of the others, per core, the
    median of the per-epoch ratios to torchvision, and the batch shape. The pipelines' epochs are interleaved (the
    order rotating each epoch), so that a shared machine's changing load falls on all of them alike."""
    augment = get_dataset_spec("imagenet").recipe.augment
    data = build_dataset("imagenet", None, root, augment)
    rows = []
    for w in workers:
        pipelines = [
            ("kdbench", make_train_loader(data.train, batch_size, seed=0, device=torch.device("cpu"), num_workers=w)),
            ("torchvision", torchvision_loader(root / "imagenet" / "train", batch_size, w)),
        ]
        if gpu_decode:
            pipelines.append(("kdbench-gpu-decode", GpuDecodeLoader(data.train, batch_size, w, torch.device("cuda"))))
        rates: dict[str, list[float]] = {name: [] for name, _ in pipelines}
        shapes: dict[str, tuple[int, ...]] = {}
        for epoch in range(1, epochs + 1):
            turn = (epoch - 1) % len(pipelines)
            for name, loader in pipelines[turn:] + pipelines[:turn]:
                rate, shapes[name] = time_epoch(loader, epoch)
                rates[name].append(rate)
        for name, _ in pipelines:
            steady = rates[name][1:] or rates[name]
            ratios = [a / b for a, b in zip(steady, rates["torchvision"][1:] or rates["torchvision"], strict=True)]
            rows.append({"pipeline": name, "workers": w, "first": rates[name][0], "steady": median(steady),
                         "per_core": median(steady) / max(w, 1), "ratio": median(ratios), "shape": shapes[name]})
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| workers | kdbench img/s | torchvision img/s | kdbench / torchvision | kdbench img/s per core |",
             "|--:|--:|--:|--:|--:|"]
    for w in dict.fromkeys(r["workers"] for r in rows):
        ours = next(r for r in rows if r["workers"] == w and r["pipeline"] == "kdbench")
        theirs = next(r for r in rows if r["workers"] == w and r["pipeline"] == "torchvision")
        lines.append(f"| {w} | {ours['steady']:,.0f} | {theirs['steady']:,.0f} | "
                     f"{ours['ratio']:.2f}× | {ours['per_core']:,.0f} |")
    for r in rows:
        if r["pipeline"] == "kdbench-gpu-decode":
            lines.append(f"| {r['workers']} (GPU decode) | {r['steady']:,.0f} | | {r['ratio']:.2f}× | |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--size", default="500x375", help="W x H of the generated JPEGs")
    ap.add_argument("--workers", default="0,2", help="comma-separated DataLoader worker counts")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads of the main process")
    ap.add_argument("--gpu-decode", action="store_true", help="also time nvJPEG decoding on the GPU (CUDA only)")
    args = ap.parse_args()
    if args.gpu_decode and not torch.cuda.is_available():
        print(GPU_DECODE_REFUSED, file=sys.stderr)
        raise SystemExit(2)
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.lower().split("x"))
    workers = [int(v) for v in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, args.images, (w, h))
        rows = measure(root, workers, args.batch_size, args.epochs, args.gpu_decode)
    print(f"{args.images} JPEGs {w}×{h}, batch {args.batch_size}, {args.epochs} epochs (first apart), "
          f"torch threads {torch.get_num_threads()}")
    for r in rows:
        print(f"{r['pipeline']:<12} workers {r['workers']}: first epoch {r['first']:,.0f}/s, "
              f"steady {r['steady']:,.0f}/s, batch {r['shape']}")
    print(table(rows))


if __name__ == "__main__":
    main()
