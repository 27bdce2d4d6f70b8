"""`at`: attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention: Improving the
Performance of Convolutional Neural Networks via Attention Transfer", arXiv:1612.03928), activation-based.

    L = w_ce · CE(z_s, y) + w_at · Σ_(i, j) ∈ pairs at_loss(F_s[i], F_t[j])

Stage pairs (`at.pairs`, indices into timm's `feature_info`; for a ResNet 0 is the stem, 1 … 4 layer1 … layer4):

- `auto` (default): `shallow` when both models have a ResNet's stage count (4: a CIFAR ResNet's stem + 3 stages,
  5: an ImageNet ResNet's stem + 4; every CNN pair of the references), else `depth`.
- `shallow`: student stage i with teacher stage i, i = 1 … min(n_s, n_t) − 1 — every stage but the
  stem, paired from the shallowest one, as RepDistiller (`zip(feat_s[1:-1], feat_t[1:-1])`) and mdistiller
  (`zip(feats_s[1:], feats_t[1:])`) pair them: Python's zip stops at the shorter list, so a teacher's extra
  deep stages go unused.
- `deep`: the last min(n_s, n_t) − 1 stages of each, aligned from the deepest one back (kdbench's default
  until it took the references' pairing; kept to compare with records made with it).
- `depth`: every student stage (but a ResNet-like student's stem, stage 0) with the teacher stage at the same
  relative depth (kdbench.models.taps.pair_stages): a 4-stage student under a 12-block ViT pairs 1:5, 2:8, 3:11,
  so a transformer's deep blocks are used, not its first three.
- `S:T,S:T,...`: the pairs listed (any stage, the stem included), e.g. `--set at.pairs=1:1,2:2`.

Stage maps are read through kdbench.models.taps.IntermediateTap: N × C × H × W for every family (a ViT's or
Mixer's patch tokens as their grid, Swin's maps channels-first). Channel counts may differ (the map averages over
channels); maps of different sizes are compared at the smaller one's size.

Why the loss scales with 1/(H·W), and what that means on small images: per sample q_s and q_t are unit vectors
of H·W non-negative entries, so Σ_k (q_s[k] − q_t[k])² = 2 − 2 q_s·q_t lies in [0, 2] whatever the map size,
and at_loss, its *mean* over the positions, is that divided by H·W. The published w_at = 1000 was set for the
CIFAR-100 ResNets' 32×32, 16×16 and 8×8 stage maps (bound 2000/1024 ≈ 2, 8, 31); at 16 px with a timm
ResNet-18 teacher (a stride-4 stem) the compared maps are 4×4 and 2×2 (bound 125 and 500), so the same weight
lets a 4×4 pair weigh 4× and a 2×2 pair 16× as much against CE as CIFAR's deepest (8×8) pair, and 64× and
256× as much as its first (32×32) one — the term and its gradient. The weight is kept at the
published value (`--set at.w_at=` rescales it; docs/benchmark.md measures it on embedded-hard).

Degenerate pairs: a pair whose compared maps are 1×1 (a deep stage of a small image) has q_s = q_t = 1, so its
term is identically zero and has no gradient. In `shallow` / `deep` pairing such pairs are dropped with one
warning on stderr, and the run record lists them (`method_info.dropped_pairs`); a pairing left with no pair is
refused (the run would be CE under the name `at`). Listed explicitly in `at.pairs`, such a pair is refused:
the user asked for a term that cannot act. A refusal is one line naming the stages and their sizes.

Weight convention: the paper writes β/2 · Σ_j ‖ Q_s/‖Q_s‖ − Q_t/‖Q_t‖ ‖_2 with β = 1000 spread over the map's
elements and the batch; the reference codebases (RepDistiller, mdistiller: "weight 1000 on stage outputs") use
the mean over batch and positions of the *squared* difference, times w_at = 1000 without the ½.
We follow the codebases, so numbers compare with the CRD / DKD tables: w_at = 1000 multiplies :func:`at_loss`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods._stage_maps import resnet_like
from kdbench.models.taps import IntermediateTap, pair_stages, stage_shapes
from kdbench.train.method import Batch, Distiller, MethodContext, register_method

PAIRINGS = ("auto", "shallow", "deep", "depth")


def attention_map(feature_map: torch.Tensor) -> torch.Tensor:
    """Q = mean over channels of |F|², shape (B, H, W) (the paper's F^p_mean with p = 2), not yet normalised."""
    return feature_map.float().pow(2).mean(dim=1)


def at_loss(feat_student: torch.Tensor, feat_teacher: torch.Tensor) -> torch.Tensor:
    """mean_{b, k} ( q_s[b, k] − q_t[b, k] )²,  q = vec(Q) / ‖vec(Q)‖₂ per sample, Q = mean_c |F_c|². Unweighted.

    Zagoruyko & Komodakis 2017 (attention transfer) in the reference codebases' form (mean squared difference of
    the normalised maps, over the batch and the H·W positions: so at most 2 / (H·W), see the module docstring).
    When the two maps differ in size, the larger attention map Q is resized to the smaller's (min H, min W) by
    area interpolation (the mean over each cell, i.e. adaptive average pooling) before normalising. Computed in
    float32; the teacher side carries no gradient.
    """
    q_s = attention_map(feat_student)
    with torch.no_grad():
        q_t = attention_map(feat_teacher)
    size = (min(q_s.shape[1], q_t.shape[1]), min(q_s.shape[2], q_t.shape[2]))
    if tuple(q_s.shape[1:]) != size:
        q_s = F.interpolate(q_s[:, None], size=size, mode="area")[:, 0]
    if tuple(q_t.shape[1:]) != size:
        q_t = F.interpolate(q_t[:, None], size=size, mode="area")[:, 0]
    q_s = F.normalize(q_s.flatten(1), dim=1)
    q_t = F.normalize(q_t.flatten(1), dim=1)
    return (q_s - q_t).pow(2).mean()


def shallow_pairs(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """(i, i) for i = 1 … min(n_s, n_t) − 1: every stage but the stem, from the shallowest (the references)."""
    return [(i, i) for i in range(1, min(n_student, n_teacher))]


def deep_pairs(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """(student stage, teacher stage) pairs: every stage but the stem, aligned from the deepest one back."""
    m = min(n_student, n_teacher) - 1
    return [(n_student - m + i, n_teacher - m + i) for i in range(m)]


def depth_pairs(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """(i, t(i)): every student stage but a ResNet-like student's stem (its stage 0; a transformer's stage 0 is
    a block) with the teacher stage at its relative depth (kdbench.models.taps.pair_stages)."""
    first = 1 if resnet_like(n_student) else 0
    return pair_stages(n_teacher, n_student, range(first, n_student))


def named_pairs(name: str, n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """The candidate pairs of a pairing named in :data:`PAIRINGS`."""
    if name == "auto":
        name = "shallow" if resnet_like(n_student) and resnet_like(n_teacher) else "depth"
    return {"shallow": shallow_pairs, "deep": deep_pairs, "depth": depth_pairs}[name](n_student, n_teacher)


def parse_pairs(spec: str) -> str | list[tuple[int, int]]:
    """`at.pairs`: a pairing name from :data:`PAIRINGS`, or explicit `S:T` pairs separated by commas."""
    spec = spec.strip()
    if spec in PAIRINGS:
        return spec
    pairs = []
    for item in spec.split(","):
        s, sep, t = item.strip().partition(":")
        try:
            if not sep:
                raise ValueError(item)
            pairs.append((int(s), int(t)))
        except ValueError:
            raise UserError(f"at.pairs='{spec}': expected {', '.join(PAIRINGS)} or student:teacher stage pairs "
                            "separated by commas (e.g. 1:1,2:2)") from None
    if len(set(pairs)) != len(pairs):
        raise UserError(f"at.pairs='{spec}' lists a pair twice")
    return pairs


def compared_size(student_shape: tuple[int, ...], teacher_shape: tuple[int, ...]) -> tuple[int, int]:
    """The (H, W) at which :func:`at_loss` compares two stage maps (C, H, W): the smaller of each side."""
    return min(student_shape[1], teacher_shape[1]), min(student_shape[2], teacher_shape[2])


def _sizes(shapes: dict[int, tuple[int, ...]]) -> str:
    return ", ".join(f"{sid} {shape[1]}×{shape[2]}" for sid, shape in sorted(shapes.items()))


def choose_pairs(spec: str, s_shapes: dict[int, tuple[int, ...]],
                 t_shapes: dict[int, tuple[int, ...]]) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(pairs used, pairs dropped as degenerate) for `at.pairs` = `spec` and the two models' stage shapes (C, H, W).

    A pair compared at 1×1 is degenerate (its term is identically zero): dropped from a named pairing, refused
    when listed explicitly. A pairing with nothing left, or an out-of-range stage, is refused."""
    stages = f"student stages: {_sizes(s_shapes)}; teacher stages: {_sizes(t_shapes)}"
    parsed = parse_pairs(spec)
    if isinstance(parsed, str):
        candidates = named_pairs(parsed, len(s_shapes), len(t_shapes))
    else:
        candidates = parsed
        for s, t in candidates:
            if s not in s_shapes or t not in t_shapes:
                raise UserError(f"at.pairs={spec}: stage pair {s}:{t} is out of range; allowed: student stages "
                                f"0..{len(s_shapes) - 1}, teacher stages 0..{len(t_shapes) - 1} ({stages})")
    pairs = [pair for pair in candidates if compared_size(s_shapes[pair[0]], t_shapes[pair[1]]) != (1, 1)]
    dropped = [pair for pair in candidates if pair not in pairs]
    if dropped and not isinstance(parsed, str):
        s, t = dropped[0]
        raise UserError(f"at.pairs={spec}: pair {s}:{t} compares 1×1 attention maps, whose normalised values are "
                        f"1 on both sides (a term identically zero); choose stages with larger maps ({stages})")
    if not pairs:
        raise UserError(f"at.pairs={spec} leaves no stage pair with maps larger than 1×1 (every term would be "
                        f"identically zero); list pairs with --set at.pairs=S:T,... ({stages})")
    return pairs, dropped


@dataclass(frozen=True)
class ATParams:
    w_ce: float = 1.0
    w_at: float = 1000.0
    # "auto" (the references' "shallow" on ResNet-like pairs, else "depth"), "shallow", "deep", "depth", or
    # explicit "S:T,S:T" stage pairs
    pairs: str = "auto"

    def __post_init__(self) -> None:
        check_range("at.w_ce", self.w_ce, 0.0, None)
        check_range("at.w_at", self.w_at, 0.0, None)
        parse_pairs(self.pairs)


@register_method(
    "at", paper="Zagoruyko & Komodakis 2017, Paying More Attention to Attention (ICLR)", params=ATParams()
)
class AT(Distiller):
    teacher_outputs = "logits + the paired stages (features: cached when they fit the cap)"

    def __init__(self, student: nn.Module, teacher: nn.Module, params: ATParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        shapes = {}
        for role, model in (("student", student), ("teacher", teacher)):
            shapes[role] = stage_shapes(model, ctx.in_chans, ctx.image_size)
            for shape in shapes[role].values():
                if len(shape) != 3:  # e.g. the GNN student's hidden layer is (B, D): there is no spatial map
                    raise UserError(f"at compares spatial attention maps, but the {role}'s stage output has shape "
                                    f"{shape} per sample; use kd, dkd, rkd, pkt or crd for this pair")
        if min(len(shapes["student"]), len(shapes["teacher"])) < 2 and params.pairs in PAIRINGS:
            raise UserError("at needs at least two stages in student and teacher (it uses every stage but the stem)")
        self.pairs, self.dropped = choose_pairs(params.pairs, shapes["student"], shapes["teacher"])
        self.warning = ""
        if self.dropped:
            listed = ", ".join(f"{s}:{t}" for s, t in self.dropped)
            self.warning = (f"at: stage pairs {listed} compare 1×1 attention maps at {ctx.image_size} px (a term "
                            f"identically zero): dropped; {len(self.pairs)} pair(s) left. Choose pairs with "
                            "--set at.pairs=S:T,...")
            print(f"warning: {self.warning}", file=sys.stderr)
        self._s_tap = IntermediateTap(student, stages=sorted({s for s, _ in self.pairs}))
        self._t_tap = IntermediateTap(teacher, stages=sorted({t for _, t in self.pairs}))

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        at = sum(at_loss(s.stages[i], t.stages[j]) for i, j in self.pairs)
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels), "at": p.w_at * at}

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"stage_pairs": [list(pair) for pair in self.pairs]}
        if self.dropped:
            info.update(dropped_pairs=[list(pair) for pair in self.dropped], warning=self.warning)
        return info
