"""`sp`: similarity-preserving knowledge distillation (Tung & Mori, ICCV 2019, "Similarity-Preserving Knowledge
Distillation", arXiv:1907.09682), as in RepDistiller (distiller_zoo/SP.py, verified there by the paper's author).

    L = w_ce · CE(z_s, y) + w_sp · sp_loss(F_s, F_t)

F_s, F_t: each model's last stage output (RepDistiller's `feat[-2]`, the map before the global pooling: here the
last timm `feature_info` stage of each model). Only the B × B similarity matrices within the batch are compared,
so channel counts and map sizes may differ between student and teacher, and a stage without a spatial map (the
GNN student's hidden layer, (B, D)) is taken as it is (flattened). Defaults are RepDistiller's CIFAR-100 run
(scripts/run_cifar_distill.sh: `-a 0 -b 3000`, CE weight `-r` 1): w_ce 1, w_sp 3000.

Scale: each row of G is unit-norm, so ‖G_t − G_s‖²_F ≤ 4B and the term ≤ 4/B: like PKT's, it weighs more the
smaller the batch; w_sp = 3000 belongs to RepDistiller's batch of 64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import check_range
from kdbench.models.features import num_stages
from kdbench.models.taps import IntermediateTap
from kdbench.train.method import Batch, Distiller, MethodContext, register_method


def similarity_matrix(feature_map: torch.Tensor) -> torch.Tensor:
    """G = normalise_rows(A · Aᵀ), A = the batch's maps flattened to (B, C·H·W): the paper's G̃ with each row
    L2-normalised (F.normalize, eps 1e-12, as the reference code)."""
    a = feature_map.float().flatten(1)
    return F.normalize(a @ a.t(), dim=1)


def sp_loss(feat_student: torch.Tensor, feat_teacher: torch.Tensor) -> torch.Tensor:
    """(1/B²) ‖G_t − G_s‖²_F,  G from :func:`similarity_matrix`.

    Tung & Mori 2019 (SP), Eq. 4 for one layer pair, as RepDistiller's `similarity_loss`. Unweighted; computed in
    float32 (autocast off); the teacher side carries no gradient.
    """
    with torch.autocast(feat_student.device.type, enabled=False):
        g_s = similarity_matrix(feat_student)
        with torch.no_grad():
            g_t = similarity_matrix(feat_teacher)
        b = feat_student.shape[0]
        return (g_t - g_s).pow(2).sum() / (b * b)


@dataclass(frozen=True)
class SPParams:
    w_ce: float = 1.0  # RepDistiller train_student.py `-r` default
    w_sp: float = 3000.0  # RepDistiller scripts/run_cifar_distill.sh, SP: `-b 3000`

    def __post_init__(self) -> None:
        check_range("sp.w_ce", self.w_ce, 0.0, None)
        check_range("sp.w_sp", self.w_sp, 0.0, None)


@register_method(
    "sp", paper="Tung & Mori 2019, Similarity-Preserving Knowledge Distillation (ICCV)", params=SPParams()
)
class SP(Distiller):
    teacher_outputs = "logits + the last stage (features: cached when they fit the cap)"

    def __init__(self, student: nn.Module, teacher: nn.Module, params: SPParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self.student_stage, self.teacher_stage = num_stages(student) - 1, num_stages(teacher) - 1
        self._s_tap = IntermediateTap(student, stages=[self.student_stage])
        self._t_tap = IntermediateTap(teacher, stages=[self.teacher_stage])

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
                          "sp": p.w_sp * sp_loss(s.stages[self.student_stage], t.stages[self.teacher_stage])}

    def describe(self) -> dict[str, Any]:
        return {"stage_pair": [self.student_stage, self.teacher_stage]}
