"""`fsp`: flow of solution procedure (Yim, Joo, Bae, Kim, CVPR 2017, "A Gift from Knowledge Distillation: Fast
Optimization, Network Minimization and Transfer Learning"), as in RepDistiller (distiller_zoo/FSP.py,
helper/pretrain.py, train_student.py `--distill fsp`).

    pre-stage (epochs 1 … init_epochs):   L = w_fsp · Σ_i mean( (G_s,i − G_t,i)² )
    training stage (later epochs):        L = w_ce · CE(z_s, y)

G_i = fsp_matrix(F_i, F_i+1): the (C_i+1 × C_i) Gram between consecutive stage maps, G[a, b] = mean over positions of
F_i+1[a] · F_i[b] (the larger map average-pooled to the smaller's size first), for the stem and every stage
(RepDistiller's `feat[:-1]`: kdbench's stages 0 … n − 1, n the shorter model's stage count). The matrices of
student and teacher must have equal shapes, so the two models need the same channel counts stage by stage
(RepDistiller raises 'num of channels not equal'; its CRD table has FSP "N/A" for WRN-40-2 → WRN-40-1).

As in RepDistiller the FSP loss acts in the pre-stage only (its train loop sets `loss_kd = 0` for fsp), training the
student's feature layers (its classifier gets no gradient); the training stage is CE (`-a 0`; the script's
`-b 50` multiplies that zero). The pre-stage loss is unweighted in RepDistiller: w_fsp = 1.

What differs from RepDistiller (kdbench.methods._prestage): the pre-stage is the first `fsp.init_epochs` epochs
*of* `--epochs` (30 of 240 rescaled) under the run's one optimizer and schedule, not 30 extra epochs with an SGD
of its own at a constant lr; and the student is in train mode (RepDistiller's init puts it in eval mode).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods._prestage import PreStageDistiller
from kdbench.methods._stage_maps import check_equal_width_maps
from kdbench.models.taps import IntermediateTap, stage_shapes
from kdbench.train.method import Batch, MethodContext, register_method


def fsp_matrix(bottom: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """G[b, a, c] = mean_(h, w) top[b, a, h, w] · bottom[b, c, h, w]: (B, C_top, C_bottom), the FSP matrix of Yim
    et al. 2017 (RepDistiller's compute_fsp), the larger map average-pooled to the smaller's size. Float32."""
    bottom, top = bottom.float(), top.float()
    size = (min(bottom.shape[2], top.shape[2]), min(bottom.shape[3], top.shape[3]))
    if tuple(bottom.shape[2:]) != size:
        bottom = F.adaptive_avg_pool2d(bottom, size)
    if tuple(top.shape[2:]) != size:
        top = F.adaptive_avg_pool2d(top, size)
    return torch.einsum("bahw,bchw->bac", top, bottom) / (size[0] * size[1])


def fsp_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Σ_i mean( (G_s,i − G_t,i)² ), G_i = fsp_matrix(F_i, F_i+1) over consecutive maps, shallowest first:
    RepDistiller's `sum(FSP(...)(g_s, g_t))`. Unweighted; the teacher side carries no gradient."""
    with torch.no_grad():
        g_t = [fsp_matrix(a, b) for a, b in zip(teacher_maps[:-1], teacher_maps[1:], strict=True)]
    g_s = [fsp_matrix(a, b) for a, b in zip(student_maps[:-1], student_maps[1:], strict=True)]
    return sum((s - t).pow(2).mean() for s, t in zip(g_s, g_t, strict=True))


@dataclass(frozen=True)
class FSPParams:
    w_ce: float = 1.0  # RepDistiller train_student.py -r (gamma) 1, the training stage's CE
    w_fsp: float = 1.0  # RepDistiller helper/pretrain.py: the init loss sum(FSP(...)) is unweighted
    # Epochs of the pre-stage; None: RepDistiller's --init_epochs 30 of 240, rescaled to the run's epochs.
    init_epochs: int | None = None

    def __post_init__(self) -> None:
        check_range("fsp.w_ce", self.w_ce, 0.0, None)
        check_range("fsp.w_fsp", self.w_fsp, 0.0, None)
        if self.init_epochs is not None:
            check_range("fsp.init_epochs", self.init_epochs, 1, None)


@register_method("fsp", paper="Yim et al. 2017, A Gift from Knowledge Distillation: Fast Optimization, Network "
                 "Minimization and Transfer Learning (CVPR)", params=FSPParams())
class FSP(PreStageDistiller):
    teacher_outputs = "pre-stage only: the stem and every stage (features: cached when they fit the cap)"
    pre_stage_trains = "the student's feature layers, with the FSP loss"

    def __init__(self, student: nn.Module, teacher: nn.Module, params: FSPParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self.setup_pre_stage(ctx)
        s_shapes = stage_shapes(student, ctx.in_chans, ctx.image_size)
        t_shapes = stage_shapes(teacher, ctx.in_chans, ctx.image_size)
        n = min(len(s_shapes), len(t_shapes))
        if n < 2:
            raise UserError("fsp needs at least two stages (the stem included) in student and teacher")
        self.stages = list(range(n))
        check_equal_width_maps("fsp", s_shapes, t_shapes, self.stages, uses="takes Grams of",
                               compared="its FSP matrices", width_takers="ab, at or fitnet")
        self._s_tap = IntermediateTap(student, stages=self.stages)
        self._t_tap = IntermediateTap(teacher, stages=self.stages)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        if not self.in_pre_stage:  # RepDistiller's training stage for fsp: loss_kd = 0
            logits = self.student(batch.images)
            return logits, {"ce": p.w_ce * self.cross_entropy(logits, batch.labels)}
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        loss = fsp_loss([s.stages[i] for i in self.stages], [t.stages[i] for i in self.stages])
        return s.logits, {"fsp": p.w_fsp * loss}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "stages": self.stages}
