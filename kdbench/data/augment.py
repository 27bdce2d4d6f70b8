"""Named augmentations keyed by (seed, epoch, sample index), so a recipe can name its augmentation as a string.

Names: "none", "crop-padN" (random crop back to the input size after zero padding by N), and "-flip" appended
for a random horizontal flip (wrong for digits, right for natural images). kdbench.data.transforms adds "rrc".

Every random choice is a counter-based hash of (run seed, epoch, index in the training split, draw number)
(kdbench.data.keyed), computed for a whole batch at once on the device the batch is on. A file dataset's loader
workers call the very same function on one sample at a time, so a sample's crop is the same whichever path,
batch, rank or worker serves it, after any resume, and whatever a method draws from the torch RNG.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

import torch
import torch.nn.functional as F

from kdbench.core.errors import UserError
from kdbench.data import keyed

_PATTERN = re.compile(r"^(none|crop-pad(?P<pad>\d+))(?P<flip>-flip)?$")


class SampleKey(NamedTuple):
    """What a training sample's augmentation is a function of: the run's seed, the epoch, the sample's index in
    the training split (a subset's own position: kdbench.data.validation.ReindexedSubset)."""

    seed: int
    epoch: int
    index: int


class PadCropFlip:
    """Zero-pad `pad` pixels, crop back to the input size at a keyed offset in [0, 2·pad]², flip horizontally on a
    keyed coin — torchvision's RandomCrop(size, padding=pad) + RandomHorizontalFlip, for a batch at once.

    The offsets are drawn for any set of samples at once (an in-memory loader draws a whole epoch's in one pass)
    and the crop is one indexing of the padded batch's sliding windows, on whatever device and dtype the batch
    has: uint8 images are padded black before normalisation, as RandomCrop on a PIL image does. A class rather
    than a closure so that DataLoader workers started by spawn can pickle it.
    """

    def __init__(self, pad: int, flip: bool) -> None:
        self.pad = pad
        self.flip = flip

    def offsets(self, seed: int, epoch: int, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(top, left, flipped) per sample of `index`: offsets in [0, 2·pad], flipped a bool."""
        bits = keyed.draws(seed, epoch, index, (keyed.DRAW_TOP, keyed.DRAW_LEFT, keyed.DRAW_FLIP))
        top, left = keyed.below(bits[:, :2], 2 * self.pad + 1).unbind(1)
        flipped = bits[:, 2] >> 31 == 1 if self.flip else torch.zeros_like(index, dtype=torch.bool)
        return top, left, flipped

    def crop(self, images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flipped: torch.Tensor,
             ) -> torch.Tensor:
        """`images` B × C × H × W cropped at the given offsets and flipped where asked (:meth:`offsets`)."""
        b, _, h, w = images.shape
        p = self.pad
        if p:
            windows = F.pad(images, (p, p, p, p)).unfold(2, h, 1).unfold(3, w, 1)  # B × C × 2p+1 × 2p+1 × H × W
            images = windows[torch.arange(b, device=images.device), :, top, left]  # one copy: B × C × H × W
        if self.flip:  # no host sync on the flags: both versions, kept per sample
            images = torch.where(flipped[:, None, None, None], images.flip(-1), images)
        return images

    def __call__(self, images: torch.Tensor, seed: int, epoch: int, index: torch.Tensor) -> torch.Tensor:
        """`images` B × C × H × W, `index` (B,) int64: the augmented batch, on the images' device."""
        return self.crop(images, *self.offsets(seed, epoch, index.to(images.device)))

    def one(self, image: torch.Tensor, key: SampleKey | None) -> torch.Tensor:
        """One C × H × W sample (a loader worker's path): the batch function on a batch of one. Without a key
        (an item read outside a training loader) the image is returned as it is: no random choice."""
        if key is None:
            return image
        return self(image[None], key.seed, key.epoch, torch.tensor([key.index]))[0]


class ResizedCrop:
    """torchvision's RandomResizedCrop(size, scale, ratio) for one image, its area/aspect/offset draws keyed.

    The rejection loop is torchvision's (10 attempts, then the central crop at the clamped aspect ratio), with
    attempt a reading draws 16 + 4a … 19 + 4a of the sample. Without a key (an item read outside a training
    loader) the central-crop fallback is taken: no random choice.
    """

    def __init__(self, size: int, scale: tuple[float, float] = (0.08, 1.0),
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size = size
        self.scale = scale
        self.ratio = ratio

    def box(self, height: int, width: int, key: SampleKey | None) -> tuple[int, int, int, int]:
        """(top, left, h, w) of the crop."""
        if key is not None:
            area = height * width
            log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
            for attempt in range(10):
                d = keyed.DRAW_RESIZED_CROP + 4 * attempt
                u = [keyed.draw_int(key.seed, key.epoch, key.index, d + k) for k in range(4)]
                target = area * (self.scale[0] + keyed.unit(u[0]) * (self.scale[1] - self.scale[0]))
                aspect = math.exp(log_lo + keyed.unit(u[1]) * (log_hi - log_lo))
                w = int(round(math.sqrt(target * aspect)))
                h = int(round(math.sqrt(target / aspect)))
                if 0 < w <= width and 0 < h <= height:
                    return keyed.below(u[2], height - h + 1), keyed.below(u[3], width - w + 1), h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def one(self, image: torch.Tensor, key: SampleKey | None) -> torch.Tensor:
        from torchvision.transforms.v2 import functional as TF

        top, left, h, w = self.box(image.shape[-2], image.shape[-1], key)
        return TF.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=True)


def make_augment(name: str) -> PadCropFlip | None:
    m = _PATTERN.match(name)
    if not m:
        raise UserError(f"unknown augmentation '{name}'. Valid: none, crop-padN, crop-padN-flip (N an integer)")
    pad = int(m.group("pad") or 0)
    flip = bool(m.group("flip"))
    if pad == 0 and not flip:
        return None
    return PadCropFlip(pad, flip)
