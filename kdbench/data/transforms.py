"""Per-sample image pipelines for the disk-backed datasets (CIFAR, STL-10, Mini-ImageNet, ImageFolder).

Every pipeline takes a uint8 C × H × W tensor (never a PIL image) and returns a normalised float32 tensor.
Resizing crops (Resize, CenterCrop, RandomResizedCrop) are torchvision v2 transforms; the pad-crop, the flip and
the normalisation are small tensor ops here, 4-5× cheaper per sample than their v2 equivalents — which matters
for CIFAR, where per-sample CPU work, not the GPU, bounds a small network's epoch time. Augmentation is named by
the recipe's `augment` string, with the grammar of `kdbench/data/augment.py` extended by one crop:

- "none"          no augmentation;
- "crop-padN"     zero-pad N pixels on each side, then a random crop back to the size (CIFAR's RandomCrop(32, 4));
- "rrc"           RandomResizedCrop(size, scale=(0.08, 1)) — the ImageNet crop, for full-size image folders;
- any of them + "-flip" for a random horizontal flip.

Padding is black in pixel space (before normalisation), as torchvision's RandomCrop on a PIL image does in the
CRD/RepDistiller code. Random draws use the torch RNG of the process that runs the transform, which the train
loader seeds per sample from (seed, epoch, index) (kdbench.data.loaders.EpochKeyedAugmentation).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from ..errors import UserError

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


class PadCropFlip:
    """Zero-pad `pad` pixels, crop a random size × size window, flip horizontally with probability ½ — the
    semantics of torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip (and of augment.py), at a
    fifth of v2's per-sample cost on small images (85 vs 330 µs at 32 px, 96 vs 530 µs at 96 px, normalisation
    included). A class rather than a closure: DataLoader workers started by spawn/forkserver pickle it."""

    def __init__(self, pad: int, flip: bool) -> None:
        self.pad = pad
        self.flip = flip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad:
            h, w = x.shape[-2:]
            p = self.pad
            padded = F.pad(x, (p, p, p, p))  # zeros: black in pixel space
            top = int(torch.randint(0, 2 * p + 1, ()).item())
            left = int(torch.randint(0, 2 * p + 1, ()).item())
            x = padded[..., top : top + h, left : left + w]
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return x


class Normalize255:
    """uint8 → float32 (x / 255 − mean) / std in one fused step (v2's ToDtype + Normalize cost 3.5× more)."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        self.shift = torch.tensor(mean, dtype=torch.float32).mul(255).view(-1, 1, 1)
        self.scale = torch.tensor(std, dtype=torch.float32).mul(255).reciprocal().view(-1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.shift) * self.scale


class Pipeline:
    """Steps applied in order (a picklable Compose that also takes plain callables)."""

    def __init__(self, steps: list[Callable[[torch.Tensor], torch.Tensor]]) -> None:
        self.steps = steps

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for step in self.steps:
            x = step(x)
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
    steps: list[Callable[[torch.Tensor], torch.Tensor]] = []
    if spec.rrc:
        steps.append(v2.RandomResizedCrop(size, antialias=True))
    else:
        steps += _fit(size, source_size)
    if spec.pad or spec.flip:
        steps.append(PadCropFlip(spec.pad, spec.flip))
    return Pipeline(steps + [Normalize255(mean, std)])


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
