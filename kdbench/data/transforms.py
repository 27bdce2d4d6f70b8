"""Image pipelines: per sample for the image-file datasets (Mini-ImageNet, ImageFolder); the normalisation and
the augmentation name's pad-crop-flip for the sets held in memory (CIFAR, STL-10), which apply them to batches.

Every pipeline takes a uint8 C × H × W tensor (never a PIL image) and returns a normalised float32 tensor.
Resizing (Resize, CenterCrop) is torchvision v2's; the resized crop, the pad-crop, the flip and the
normalisation are small keyed tensor ops (kdbench.data.augment and Normalize255 here), which also take a batch.
Augmentation is named by the recipe's `augment` string, with the grammar of `kdbench/data/augment.py` extended
by one crop:

- "none"          no augmentation;
- "crop-padN"     zero-pad N pixels on each side, then a random crop back to the size (CIFAR's RandomCrop(32, 4));
- "rrc"           RandomResizedCrop(size, scale=(0.08, 1)) — the ImageNet crop, for full-size image folders
                  (image-file sets only: it needs each image at its own size);
- any of them + "-flip" for a random horizontal flip.

Padding is black in pixel space (before normalisation), as torchvision's RandomCrop on a PIL image does in the
CRD/RepDistiller code. Random choices are keyed by (seed, epoch, index) (kdbench.data.augment): the train loader
passes each sample's key (kdbench.data.loaders.EpochKeyedAugmentation); PadCropFlip is the very function the
in-memory sets apply to whole batches.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.transforms import v2

from kdbench.core.errors import UserError
from kdbench.data.augment import PadCropFlip, ResizedCrop, SampleKey

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_PATTERN = re.compile(r"^(none|rrc|crop-pad(?P<pad>\d+))(?P<flip>-flip)?$")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm"}


@dataclass(frozen=True)
class AugmentSpec:
    rrc: bool
    pad: int
    flip: bool


def parse_augment(name: str) -> AugmentSpec:
    m = _PATTERN.match(name)
    if not m:
        raise UserError(
            f"unknown augmentation '{name}'. Valid: none, crop-padN, rrc, each optionally + '-flip' (N an integer)"
        )
    return AugmentSpec(rrc=name.startswith("rrc"), pad=int(m.group("pad") or 0), flip=bool(m.group("flip")))


class Normalize255:
    """uint8 → float32 (x / 255 − mean) / std in one fused step (v2's ToDtype + Normalize cost 3.5× more)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.shift = torch.tensor(mean, dtype=torch.float32).mul(255).view(-1, 1, 1)
        self.scale = torch.tensor(std, dtype=torch.float32).mul(255).reciprocal().view(-1, 1, 1)

        self._on: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """One C × H × W image or a B × C × H × W batch, on any device (the constants follow it)."""
        if x.device.type == "cpu":
            shift, scale = self.shift, self.scale
        else:
            if x.device not in self._on:
                self._on[x.device] = (self.shift.to(x.device), self.scale.to(x.device))
            shift, scale = self._on[x.device]
        return (x.float() - shift) * scale

    def __getstate__(self) -> dict:
        return {"shift": self.shift, "scale": self.scale, "_on": {}}  # workers get the CPU constants only


class Pipeline:
    """Steps applied in order (a picklable Compose that also takes plain callables). The keyed random steps
    (PadCropFlip, ResizedCrop: they have `one(x, key)`) get the sample's key; without one they choose nothing at
    random (no crop offset, no flip; the resized crop's central fallback)."""

    def __init__(self, steps: list[Callable[[torch.Tensor], torch.Tensor] | PadCropFlip | ResizedCrop]) -> None:
        self.steps = steps

    def __call__(self, x: torch.Tensor, key: SampleKey | None = None) -> torch.Tensor:
        for step in self.steps:
            x = step.one(x, key) if isinstance(step, (PadCropFlip, ResizedCrop)) else step(x)
        return x

    def __repr__(self) -> str:
        return f"Pipeline({', '.join(type(s).__name__ for s in self.steps)})"


def _fit(size: int, source_size: int | None, crop_ratio: float = 1.0) -> list[v2.Transform]:
    """Resize the short side to size / crop_ratio and centre-crop to size × size; nothing for a set whose images
    already have the wanted side (CIFAR, STL-10 at their native size)."""
    if source_size == size:
        return []
    return [v2.Resize(round(size / crop_ratio), antialias=True), v2.CenterCrop(size)]


def train_transform(
    augment: str, size: int, mean: tuple[float, ...], std: tuple[float, ...], *, source_size: int | None = None
) -> Pipeline:
    """The training pipeline named by `augment`, ending at size × size. `source_size` is the side of every
    input image when they all share one (in-memory sets), else None (image files of any size)."""
    spec = parse_augment(augment)
    steps: list = [ResizedCrop(size)] if spec.rrc else _fit(size, source_size)
    crop = pad_crop_flip(spec)
    return Pipeline(steps + ([crop] if crop else []) + [Normalize255(mean, std)])


def pad_crop_flip(spec: AugmentSpec) -> PadCropFlip | None:
    """The batch-wise part of an augmentation (in-memory sets apply it to gathered batches); None for none."""
    return PadCropFlip(spec.pad, spec.flip) if spec.pad or spec.flip else None


def in_memory_augment(augment: str, dataset: str) -> PadCropFlip | None:
    """The augmentation of a set held in memory and served as batches: crop-padN and -flip only (a resized crop
    needs images of their own sizes, per sample: the image-file sets)."""
    spec = parse_augment(augment)
    if spec.rrc:
        raise UserError(f"{dataset}: augmentation '{augment}' is for image-file datasets (imagefolder, "
                        "mini-imagenet); in-memory sets take none, crop-padN, each optionally + '-flip'")
    return pad_crop_flip(spec)


def eval_transform(
    size: int,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    *,
    source_size: int | None = None,
    crop_ratio: float = 1.0,
) -> Pipeline:
    """Evaluation pipeline: resize to size / crop_ratio, centre crop (0.875 is ImageNet's 256 → 224), normalise."""
    return Pipeline([*_fit(size, source_size, crop_ratio), Normalize255(mean, std)])


def is_image_file(name: str) -> bool:
    return Path(name).suffix.lower() in _IMAGE_SUFFIXES


def _pil_decode(path: str | Path) -> torch.Tensor:
    from PIL import Image

    with Image.open(path) as im:
        return v2.functional.pil_to_tensor(im.convert("RGB"))


try:  # torchvision's libjpeg-turbo/libpng decoders: ~2× PIL's speed on 84 px JPEGs, 1.4× on 500 px ones.
    from torchvision.io import ImageReadMode, decode_image, read_file

    # Deprecated since torchvision 0.29 in favour of TorchCodec (a new dependency); until they are removed
    # (then the import fails and PIL takes over) silence the per-call warning for this use only.
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)
except ImportError:  # pragma: no cover — a torchvision without image decoders
    decode_image = None


def decode_image_file(path: str | Path) -> torch.Tensor:
    """An image file as a uint8 3 × H × W RGB tensor (torchvision's decoders, PIL for what they do not read:
    BMP, TIFF, some CMYK JPEGs)."""
    if decode_image is None:
        return _pil_decode(path)
    try:
        return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        return _pil_decode(path)
