"""`rkd`: relational knowledge distillation (Park, Kim, Lu, Cho, CVPR 2019, "Relational Knowledge Distillation",
arXiv:1904.05068).

    L = w_ce · CE(z_s, y) + w_dist · L_dist(s, t) + w_angle · L_angle(s, t)

on the pooled penultimate embeddings s, t (B × D, the input of each model's classifier; D may differ between
student and teacher since only relations within the batch are compared). Defaults are the CIFAR values of
RepDistiller (the CRD paper's code): w_dist = 25, w_angle = 50, w_ce = 1; the paper's metric-learning runs used
1 and 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdbench.core.errors import check_range
from kdbench.models.taps import IntermediateTap
from kdbench.train.method import Batch, Distiller, MethodContext, register_method


def _pairwise_distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """‖e_i − e_j‖ (not squared) with the diagonal set to exactly 0; eps keeps sqrt differentiable at 0."""
    sq = e.pow(2).sum(dim=1)
    d = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=eps).sqrt()
    return d * (1 - torch.eye(len(e), device=e.device, dtype=d.dtype))


def _normalised_distances(e: torch.Tensor) -> torch.Tensor:
    d = _pairwise_distances(e)
    return d / d[d > 0].mean()


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos ∠(e_i, e_j, e_k) at vertex e_j for every triple, flattened (B³); zero vectors (i = j) give 0."""
    diff = F.normalize(e[None, :, :] - e[:, None, :], p=2, dim=2)  # diff[j, i] = (e_i − e_j)/‖·‖
    return torch.bmm(diff, diff.transpose(1, 2)).reshape(-1)


def rkd_distance_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """smooth-L1( ψ_D(s), ψ_D(t) ),  ψ_D(e)_ij = ‖e_i − e_j‖₂ / μ(e),  μ(e) = mean of the non-zero ‖e_i − e_j‖.

    Park et al. 2019 (RKD), distance-wise loss. Distances are not squared (eps 1e-12 under the root), the
    diagonal is 0, and smooth-L1 (β = 1) is averaged over all B² entries as in the authors' and RepDistiller's
    code. The teacher side carries no gradient. Computed in float32 (eps underflows in half precision).
    """
    with torch.autocast(student_emb.device.type, enabled=False):
        s = student_emb.float().flatten(1)
        with torch.no_grad():
            t = _normalised_distances(teacher_emb.float().flatten(1))
        return F.smooth_l1_loss(_normalised_distances(s), t)


def rkd_angle_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """smooth-L1( ψ_A(s), ψ_A(t) ),  ψ_A(e)_ijk = ⟨ (e_i − e_j)/‖e_i − e_j‖ , (e_k − e_j)/‖e_k − e_j‖ ⟩.

    Park et al. 2019 (RKD), angle-wise loss over all B³ triples (degenerate ones, with a zero difference,
    contribute cos = 0 on both sides, as in the reference code), smooth-L1 (β = 1) averaged. The teacher side
    carries no gradient. Computed in float32.
    """
    with torch.autocast(student_emb.device.type, enabled=False):
        s = student_emb.float().flatten(1)
        with torch.no_grad():
            t = _angles(teacher_emb.float().flatten(1))
        return F.smooth_l1_loss(_angles(s), t)


@dataclass(frozen=True)
class RKDParams:
    w_ce: float = 1.0
    w_dist: float = 25.0
    w_angle: float = 50.0

    def __post_init__(self) -> None:
        check_range("rkd.w_ce", self.w_ce, 0.0, None)
        check_range("rkd.w_dist", self.w_dist, 0.0, None)
        check_range("rkd.w_angle", self.w_angle, 0.0, None)


@register_method(
    "rkd", paper="Park et al. 2019, Relational Knowledge Distillation (CVPR)", params=RKDParams()
)
class RKD(Distiller):
    teacher_outputs = "logits + embedding (features: cached when they fit the cap)"
    def __init__(self, student, teacher, params: RKDParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self._s_tap = IntermediateTap(self.student, embedding=True)
        self._t_tap = IntermediateTap(self.teacher, embedding=True)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        return s.logits, {
            "ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
            "rkd_dist": p.w_dist * rkd_distance_loss(s.embedding, t.embedding),
            "rkd_angle": p.w_angle * rkd_angle_loss(s.embedding, t.embedding),
        }
