"""Named augmentations: every output is a crop of the zero-padded image at one of the (2·pad+1)² offsets, all of
them drawn, flipped about half the time when asked (never otherwise), reproducibly from the global RNG."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kdbench.data.augment import PadCropFlip, make_augment
from kdbench.errors import UserError

IMAGE = torch.arange(1.0, 1 + 2 * 4 * 5).reshape(2, 4, 5)  # C × H × W, every pixel distinct and non-zero


def _locate(out: torch.Tensor, pad: int) -> tuple[int, int, bool]:
    """(top, left, flipped) of the crop of the padded IMAGE that `out` is; fails if it is none of them."""
    padded = F.pad(IMAGE, (pad, pad, pad, pad))
    for top in range(2 * pad + 1):
        for left in range(2 * pad + 1):
            crop = padded[:, top : top + 4, left : left + 5]
            for flipped, candidate in ((False, crop), (True, crop.flip(-1))):
                if torch.equal(out, candidate):
                    return top, left, flipped
    raise AssertionError("output is no crop of the padded image")


def _draws(augment: PadCropFlip, n: int, seed: int = 0) -> list[tuple[int, int, bool]]:
    torch.manual_seed(seed)
    return [_locate(augment(IMAGE), augment.pad) for _ in range(n)]


def test_crops_cover_every_offset_and_keep_the_shape():
    draws = _draws(PadCropFlip(pad=2, flip=False), 300)
    assert {(t, left) for t, left, _ in draws} == {(t, left) for t in range(5) for left in range(5)}
    assert not any(f for _, _, f in draws)
    assert PadCropFlip(pad=2, flip=False)(IMAGE).shape == IMAGE.shape


def test_flip_happens_about_half_the_time_and_only_when_asked():
    flips = [f for _, _, f in _draws(PadCropFlip(pad=0, flip=True), 400)]
    assert 0.4 < sum(flips) / len(flips) < 0.6
    both = _draws(PadCropFlip(pad=1, flip=True), 200)
    assert {f for _, _, f in both} == {False, True} and {(t, left) for t, left, _ in both} == {
        (t, left) for t in range(3) for left in range(3)}


def test_the_same_global_seed_gives_the_same_augmentation():
    augment = PadCropFlip(pad=3, flip=True)
    assert _draws(augment, 20, seed=5) == _draws(augment, 20, seed=5)
    assert _draws(augment, 20, seed=5) != _draws(augment, 20, seed=6)


@pytest.mark.parametrize("name,pad,flip", [("crop-pad4", 4, False), ("crop-pad2-flip", 2, True),
                                           ("none-flip", 0, True), ("crop-pad12", 12, False)])
def test_names_give_their_padding_and_flip(name: str, pad: int, flip: bool):
    augment = make_augment(name)
    assert isinstance(augment, PadCropFlip) and (augment.pad, augment.flip) == (pad, flip)


def test_no_augmentation_and_unknown_names():
    assert make_augment("none") is None and make_augment("crop-pad0") is None
    for bad in ("crop", "pad4", "crop-pad4-flop", "Crop-pad4"):
        with pytest.raises(UserError, match="unknown augmentation"):
            make_augment(bad)
