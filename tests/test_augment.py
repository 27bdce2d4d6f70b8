"""Keyed augmentations: every output is a crop of the zero-padded image at one of the (2·pad+1)² offsets, all of
them drawn, flipped about half the time when asked (never otherwise), and each sample's crop a pure function of
(seed, epoch, index): the same in any batch, on any device, whatever the global RNG holds."""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from kdbench.core.errors import UserError
from kdbench.data import keyed
from kdbench.data.augment import PadCropFlip, ResizedCrop, SampleKey, make_augment

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


def _draws(augment: PadCropFlip, n: int, seed: int = 0, epoch: int = 1) -> list[tuple[int, int, bool]]:
    """Where the crops of n copies of IMAGE, as samples 0..n-1 of one batch, come from."""
    out = augment(IMAGE.expand(n, -1, -1, -1), seed, epoch, torch.arange(n))
    return [_locate(x, augment.pad) for x in out]


def test_crops_cover_every_offset_and_keep_the_shape():
    draws = _draws(PadCropFlip(pad=2, flip=False), 300)
    assert {(t, left) for t, left, _ in draws} == {(t, left) for t in range(5) for left in range(5)}
    assert not any(f for _, _, f in draws)
    assert PadCropFlip(pad=2, flip=False).one(IMAGE, SampleKey(0, 1, 3)).shape == IMAGE.shape


def test_flip_happens_about_half_the_time_and_only_when_asked():
    flips = [f for _, _, f in _draws(PadCropFlip(pad=0, flip=True), 400)]
    assert 0.4 < sum(flips) / len(flips) < 0.6
    both = _draws(PadCropFlip(pad=1, flip=True), 200)
    assert {f for _, _, f in both} == {False, True} and {(t, left) for t, left, _ in both} == {
        (t, left) for t in range(3) for left in range(3)}


def test_a_crop_is_a_function_of_seed_epoch_and_index_only():
    augment = PadCropFlip(pad=3, flip=True)
    images = torch.randn(40, 2, 6, 6)
    index = torch.arange(100, 140)
    torch.manual_seed(0)
    whole = augment(images, 5, 2, index)
    torch.manual_seed(1)  # the global RNG plays no part
    assert torch.equal(whole, augment(images, 5, 2, index))
    perm = torch.randperm(40)  # another batch composition: each sample keeps its crop
    assert torch.equal(whole[perm], augment(images[perm], 5, 2, index[perm]))
    assert torch.equal(whole[7:9], augment(images[7:9], 5, 2, index[7:9]))
    assert all(torch.equal(whole[k], augment.one(images[k], SampleKey(5, 2, 100 + k))) for k in range(40))
    for other in ((6, 2), (5, 3)):  # another seed or epoch: other crops
        assert not torch.equal(whole, augment(images, *other, index))
    image = images[0]
    assert augment.one(image, None) is image  # no key: no random choice


def test_draws_are_pinned_and_equal_on_python_ints_and_tensors():
    # Regression pin: the crops of (seed, epoch, index) are part of every published number. A change of the hash
    # fails here first, instead of silently moving the results.
    assert [keyed.draw_int(0, 1, i, 0) for i in range(3)] == PINNED
    seeds = [0, 1, 2**31 - 1, 2**40 + 7]
    rng = random.Random(0)
    index = torch.tensor([0, 1, 2**31, 2**32 - 1] + [rng.getrandbits(32) for _ in range(60)])
    for seed in seeds:
        for draw in (0, 2, 53):
            bits = keyed.draws(seed, 9, index, draw)
            assert bits.tolist() == [keyed.draw_int(seed, 9, int(i), draw) for i in index]
            assert int(bits.min()) >= 0 and int(bits.max()) < 2**32


PINNED = [1493050252, 2930757018, 675032630]


def test_the_split_multiplication_is_exact():
    # lowbias32 with plain 64-bit products (Python ints never overflow): the tensor code must match it bit for bit.
    def reference(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    rng = random.Random(1)
    values = [0, 1, 2**31, 2**32 - 1] + [rng.getrandbits(32) for _ in range(2000)]
    assert keyed.mix32(torch.tensor(values)).tolist() == [reference(v) for v in values]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_same_crops_on_a_gpu():
    augment = PadCropFlip(pad=4, flip=True)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    index = torch.arange(1000, 1064)
    assert torch.equal(augment(images, 3, 7, index), augment(images.cuda(), 3, 7, index.cuda()).cpu())


def test_offsets_are_uniform_enough():
    counts = torch.bincount(keyed.below(keyed.draws(0, 1, torch.arange(90_000), keyed.DRAW_TOP), 9), minlength=9)
    assert counts.min() > 9_600 and counts.max() < 10_400  # 10,000 expected each; ±4 %


def test_the_resized_crop_is_keyed_and_inside_the_image():
    crop = ResizedCrop(8)
    boxes = {crop.box(30, 40, SampleKey(0, 1, i)) for i in range(200)}
    assert len(boxes) > 150 and all(t >= 0 and left >= 0 and t + h <= 30 and left + w <= 40
                                    for t, left, h, w in boxes)
    assert crop.box(30, 40, SampleKey(0, 1, 5)) == crop.box(30, 40, SampleKey(0, 1, 5))
    assert crop.box(30, 40, None) == (0, 0, 30, 40)  # no key: torchvision's central fallback
    assert crop.box(30, 60, None) == (0, 10, 30, 40)  # ... at the clamped aspect ratio
    image = torch.randint(0, 256, (3, 30, 40), dtype=torch.uint8)
    assert crop.one(image, SampleKey(0, 1, 5)).shape == (3, 8, 8)


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


def test_several_draws_at_once_are_the_single_draws():
    index = torch.arange(50, 90)
    many = keyed.draws(3, 4, index, (0, 1, 2, 16))
    assert many.shape == (40, 4)
    assert all(torch.equal(many[:, k], keyed.draws(3, 4, index, d)) for k, d in enumerate((0, 1, 2, 16)))
