"""`at`: attention transfer (Zagoruyko & Komodakis, ICLR 2017, "Paying More Attention to Attention: Improving the
Performance of Convolutional Neural Networks via Attention Transfer", arXiv:1612.03928), activation-based.

    L = w_ce · CE(z_s, y) + w_at · Σ_stages at_loss(F_s, F_t)

Stages: by default every stage output that timm lists after the stem (`feature_info` 1 … n−1; for a ResNet
layer1 … layer4), as RepDistiller (`feat[1:-1]`) and mdistiller (`feats[1:]`) take every stage but the stem.
When student and teacher list different numbers of stages, the last min(n_s, n_t) − 1 of each are paired,
from the deepest one back. Channel counts may differ (the map averages over channels).

Weight convention: the paper writes β/2 · Σ_j ‖ Q_s/‖Q_s‖ − Q_t/‖Q_t‖ ‖_2 with β = 1000 spread over the map's
elements and the batch; the reference codebases (RepDistiller, mdistiller: "weight 1000 on stage outputs") use
the mean over batch and positions of the *squared* difference, times w_at = 1000 without the ½.
We follow the codebases, so numbers compare with the CRD / DKD tables: w_at = 1000 multiplies :func:`at_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.errors import UserError, check_range
from kdbench.method import Batch, Distiller, MethodContext, register_method
from kdbench.models.features import FeatureTap, num_stages


def attention_map(feature_map: torch.Tensor) -> torch.Tensor:
    """Q = mean over channels of |F|², shape (B, H, W) (the paper's F^p_mean with p = 2), not yet normalised."""
    return feature_map.float().pow(2).mean(dim=1)


def at_loss(feat_student: torch.Tensor, feat_teacher: torch.Tensor) -> torch.Tensor:
    """mean_{b, k} ( q_s[b, k] − q_t[b, k] )²,  q = vec(Q) / ‖vec(Q)‖₂ per sample, Q = mean_c |F_c|². Unweighted.

    Zagoruyko & Komodakis 2017 (attention transfer) in the reference codebases' form (mean squared difference of
    the normalised maps, over the batch and the H·W positions). When the two maps differ in size, the larger
    attention map Q is resized to the smaller's (min H, min W) by area interpolation (the mean over each cell,
    i.e. adaptive average pooling) before normalising. Computed in float32; the teacher side carries no gradient.
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


def paired_stages(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """(student stage, teacher stage) pairs: every stage but the stem, aligned from the deepest one back."""
    m = min(n_student, n_teacher) - 1
    return [(n_student - m + i, n_teacher - m + i) for i in range(m)]


@dataclass(frozen=True)
class ATParams:
    w_ce: float = 1.0
    w_at: float = 1000.0

    def __post_init__(self) -> None:
        check_range("at.w_ce", self.w_ce, 0.0, None)
        check_range("at.w_at", self.w_at, 0.0, None)


@register_method(
    "at", paper="Zagoruyko & Komodakis 2017, Paying More Attention to Attention (ICLR)", params=ATParams()
)
class AT(Distiller):
    teacher_outputs = "logits + every stage but the stem (features: cached when they fit the cap)"
    def __init__(self, student: nn.Module, teacher: nn.Module, params: ATParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        example = torch.zeros(2, ctx.in_chans, ctx.image_size, ctx.image_size)
        for role, model in (("student", student), ("teacher", teacher)):
            tap = FeatureTap(model, stages=range(num_stages(model)))
            maps = tap.probe(example).stages.values()
            tap.remove()
            for fmap in maps:
                if fmap.dim() != 4:  # e.g. the GNN student's hidden layer is (B, D): there is no spatial map
                    raise UserError(f"at compares spatial attention maps, but the {role}'s stage output has shape "
                                    f"{tuple(fmap.shape)}; use kd, dkd, rkd, pkt or crd for this pair")
        self.pairs = paired_stages(num_stages(student), num_stages(teacher))
        if not self.pairs:
            raise UserError("at needs at least two stages in student and teacher (it uses every stage but the stem)")
        self._s_tap = FeatureTap(student, stages=[s for s, _ in self.pairs])
        self._t_tap = FeatureTap(teacher, stages=[t for _, t in self.pairs])

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        at = sum(at_loss(s.stages[i], t.stages[j]) for i, j in self.pairs)
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels), "at": p.w_at * at}

    def describe(self) -> dict[str, Any]:
        return {"stage_pairs": [list(pair) for pair in self.pairs]}
