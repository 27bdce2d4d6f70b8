"""Named augmentation pipelines on image tensors (C × H × W), so a recipe can name its augmentation as a string.

Names: "none", "crop-padN" (random crop back to the input size after zero padding by N), and "-flip" appended
for a random horizontal flip (wrong for digits, right for natural images).
"""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F

from ..errors import UserError

_PATTERN = re.compile(r"^(none|crop-pad(?P<pad>\d+))(?P<flip>-flip)?$")


class PadCropFlip:
    """Zero-pad by `pad`, crop back at a random offset, flip with probability ½.

    A class rather than a closure so that DataLoader workers started by spawn can pickle it. Draws from the
    torch RNG, which the train loader seeds per sample from (seed, epoch, index)
    (kdbench.data.loaders.EpochKeyedAugmentation): augmentation is reproducible, a resumed run draws the same
    crops as an uninterrupted one, and what a method draws does not move them.
    """

    def __init__(self, pad: int, flip: bool) -> None:
        self.pad = pad
        self.flip = flip

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        pad = self.pad
        if pad:
            h, w = x.shape[-2:]
            padded = F.pad(x, (pad, pad, pad, pad))
            top = int(torch.randint(0, 2 * pad + 1, ()).item())
            left = int(torch.randint(0, 2 * pad + 1, ()).item())
            x = padded[..., top : top + h, left : left + w]
        if self.flip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return x


def make_augment(name: str) -> PadCropFlip | None:
    m = _PATTERN.match(name)
    if not m:
        raise UserError(f"unknown augmentation '{name}'. Valid: none, crop-padN, crop-padN-flip (N an integer)")
    pad = int(m.group("pad") or 0)
    flip = bool(m.group("flip"))
    if pad == 0 and not flip:
        return None
    return PadCropFlip(pad, flip)
