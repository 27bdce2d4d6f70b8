"""Counter-based random draws: draw d of sample i in epoch e of a run with seed s is a hash of (s, e, i, d).

No generator state anywhere: a sample's crop is the same whichever batch, rank, worker or process computes it,
after any resume, and whatever a method draws from the torch RNG (CRD's negatives) — which is what lets a
teacher's outputs be cached per (seed, epoch, index) (kdbench.teachers.output_cache).

The hash is Chris Wellons' `lowbias32` (xor-shift / multiply, full avalanche) chained over the key's 32-bit words.
Every value stays in [0, 2**32) inside int64: shifts of non-negative numbers are logical, and each multiplication
by a 32-bit constant is split into 16-bit halves so that no product reaches 2**63. So the same code gives the same
bits on Python ints, CPU tensors and CUDA tensors — no integer overflow, whose semantics torch does not promise.
"""

from __future__ import annotations

from typing import TypeVar

import torch

M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9  # keeps an all-zero key away from lowbias32's fixed point 0

# Draw numbers: which independent stream of a sample a transform reads. Distinct per kind of draw, so that adding
# a flip never moves a crop.
DRAW_TOP, DRAW_LEFT, DRAW_FLIP = 0, 1, 2
DRAW_RESIZED_CROP = 16  # RandomResizedCrop: 4 draws per attempt, 10 attempts

Int = TypeVar("Int", int, torch.Tensor)


def _mul32(x: Int, c: int) -> Int:
    """x · c mod 2**32 for x in [0, 2**32) and a 32-bit constant c, with every partial product below 2**49."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & M32


def mix32(x: Int) -> Int:
    """lowbias32: a bijection of [0, 2**32) in which every input bit flips each output bit with probability ~½."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _absorb(h: Int, word: Int) -> Int:
    """The running hash with one more 32-bit word: for a fixed h, a bijection of the word."""
    return mix32(((h ^ word) + _GOLDEN) & M32)


def run_key(seed: int, epoch: int) -> int:
    """The part of the hash that is the same for every sample of an epoch (Python ints: computed once)."""
    h = _absorb(0, seed & M32)
    h = _absorb(h, (seed >> 32) & M32)
    return _absorb(h, epoch & M32)


def draws(seed: int, epoch: int, index: torch.Tensor, draw: int | tuple[int, ...]) -> torch.Tensor:
    """Draw number `draw` of each sample `index` (an int64 tensor, any device): uniform int64 in [0, 2**32).
    With a tuple of draw numbers, a (len(index), len(draw)) tensor of them, computed in one pass."""
    h = _absorb(run_key(seed, epoch), index.to(torch.int64) & M32)
    if isinstance(draw, tuple):
        return _absorb(h[:, None], torch.tensor(draw, dtype=torch.int64, device=index.device) & M32)
    return _absorb(h, draw & M32)


def draw_int(seed: int, epoch: int, index: int, draw: int) -> int:
    """:func:`draws` for one sample, on Python ints (the same bits)."""
    return _absorb(_absorb(run_key(seed, epoch), index & M32), draw & M32)


def below(bits: Int, n: int) -> Int:
    """A uniform integer in [0, n) from 32 uniform bits (n < 2**31: the product stays below 2**63)."""
    return (bits * n) >> 32


def unit(bits: int) -> float:
    """A float in [0, 1) from 32 uniform bits."""
    return bits / 2**32
