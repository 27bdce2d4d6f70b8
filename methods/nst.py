"""`nst`: neuron selectivity transfer (Huang & Wang 2017, "Like What You Like: Knowledge Distill via Neuron
Selectivity Transfer", arXiv:1707.01219), as in RepDistiller (distiller_zoo/NST.py).

    L = w_ce · CE(z_s, y) + w_nst · Σ_(i, i) nst_loss(F_s[i], F_t[i])

Stage pairs: student stage i with teacher stage i for i = 1 … min(n_s, n_t) − 1, every stage but the stem
(RepDistiller's `zip(feat_s[1:-1], feat_t[1:-1])`). Channel counts may differ (channels are the samples of the
MMD); maps of different sizes are compared at the smaller one's size (the larger is average-pooled).

Degenerate pairs: compared at 1×1 (a deep stage of a small image), each channel's normalised "map" is its sign,
so the term is a constant of the sign pattern with no gradient almost everywhere. Such pairs are dropped with
one warning on stderr and listed in the run record (`method_info.dropped_pairs`); a pairing left with none is
refused.

Defaults: RepDistiller's CIFAR-100 run (scripts/run_cifar_distill.sh, NST: `-a 0 -b 50`, CE weight `-r` 1):
w_ce 1, w_nst 50, with the squared polynomial kernel k(x, y) = (xᵀy)² (the paper's choice, d = 2, c = 0).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods._stage_maps import pool_to_common_size, reference_stage_pairs, spatial_stage_shapes
from kdbench.models.taps import IntermediateTap
from kdbench.train.method import Batch, Distiller, MethodContext, register_method


def channel_distributions(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, H·W): each channel's map flattened and L2-normalised over its H·W positions (F.normalize, eps
    1e-12): the paper's samples f^{k·} of a neuron's selectivity pattern."""
    return F.normalize(feature_map.float().flatten(2), dim=2)


def poly_kernel_mean(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """mean over the batch and every channel pair (j, k) of (a_j · b_k)²: the squared polynomial kernel.

    a, b: (B, C_a, N), (B, C_b, N). Σ_jk (a_j · b_k)² = ‖A Bᵀ‖²_F = ⟨AᵀA, BᵀB⟩_F, so when the maps have fewer
    positions N than channels (deep stages: 2048 channels of 4×4 in a ResNet-50) the two N × N Gram matrices
    replace the C_a × C_b one (1 GB in float32 for a batch of 64 at 2048 × 2048; RepDistiller's broadcast form
    holds N times that). Same value either way, up to float rounding."""
    if a.shape[2] < min(a.shape[1], b.shape[1]):
        gram_a = torch.bmm(a.transpose(1, 2), a)
        gram_b = torch.bmm(b.transpose(1, 2), b)
        return (gram_a * gram_b).sum() / (a.shape[0] * a.shape[1] * b.shape[1])
    return torch.bmm(a, b.transpose(1, 2)).pow(2).mean()


def nst_loss(feat_student: torch.Tensor, feat_teacher: torch.Tensor) -> torch.Tensor:
    """MMD²(S, T) = mean k(t, t') + mean k(s, s') − 2 · mean k(s, t),  k(x, y) = (xᵀy)²,

    over the channels' normalised maps (:func:`channel_distributions`) of each sample, averaged over the batch:
    Huang & Wang 2017 (NST), Eq. 8 with the polynomial kernel, in RepDistiller's form (`full_loss`: the teacher's
    term is kept, as a constant, so the loss is the MMD itself, zero when the maps agree). Maps are first brought
    to a common size by average pooling. Unweighted; float32; the teacher side carries no gradient.
    """
    with torch.autocast(feat_student.device.type, enabled=False):
        f_s, f_t = pool_to_common_size(feat_student.float(), feat_teacher.float().detach())
        s, t = channel_distributions(f_s), channel_distributions(f_t)
        return poly_kernel_mean(t, t) + poly_kernel_mean(s, s) - 2 * poly_kernel_mean(s, t)


@dataclass(frozen=True)
class NSTParams:
    w_ce: float = 1.0  # RepDistiller train_student.py `-r` default
    w_nst: float = 50.0  # RepDistiller scripts/run_cifar_distill.sh, NST: `-b 50`

    def __post_init__(self) -> None:
        check_range("nst.w_ce", self.w_ce, 0.0, None)
        check_range("nst.w_nst", self.w_nst, 0.0, None)


@register_method(
    "nst", paper="Huang & Wang 2017, Like What You Like: Knowledge Distill via Neuron Selectivity Transfer "
    "(arXiv:1707.01219)", params=NSTParams()
)
class NST(Distiller):
    teacher_outputs = "logits + the paired stages (features: cached when they fit the cap)"

    def __init__(self, student: nn.Module, teacher: nn.Module, params: NSTParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        s_shapes, t_shapes = spatial_stage_shapes("nst", student, teacher, ctx.in_chans, ctx.image_size,
                                                  takers="kd, dkd, rkd, pkt, crd, sp or cc")
        candidates = reference_stage_pairs(len(s_shapes), len(t_shapes))
        self.pairs = [(i, j) for i, j in candidates
                      if (min(s_shapes[i][1], t_shapes[j][1]), min(s_shapes[i][2], t_shapes[j][2])) != (1, 1)]
        self.dropped = [pair for pair in candidates if pair not in self.pairs]
        listed = ", ".join(f"{i}:{j}" for i, j in self.dropped)
        if not self.pairs:
            raise UserError(f"nst: every stage pair ({listed}) compares 1×1 maps at {ctx.image_size} px, whose "
                            "normalised values are their signs (no gradient); use larger images or kd, at, vid")
        self.warning = ""
        if self.dropped:
            self.warning = (f"nst: stage pairs {listed} compare 1×1 maps at {ctx.image_size} px (normalised to their "
                            f"signs: no gradient): dropped; {len(self.pairs)} pair(s) left")
            print(f"warning: {self.warning}", file=sys.stderr)
        self._s_tap = IntermediateTap(student, stages=[i for i, _ in self.pairs])
        self._t_tap = IntermediateTap(teacher, stages=[j for _, j in self.pairs])

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        nst = sum(nst_loss(s.stages[i], t.stages[j]) for i, j in self.pairs)
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels), "nst": p.w_nst * nst}

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"stage_pairs": [list(pair) for pair in self.pairs]}
        if self.dropped:
            info.update(dropped_pairs=[list(pair) for pair in self.dropped], warning=self.warning)
        return info
