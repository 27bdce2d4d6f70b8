"""`ab`: activation boundaries (Heo, Lee, Yun, Choi, AAAI 2019, "Knowledge Transfer via Distillation of Activation
Boundaries Formed by Hidden Neurons", arXiv:1811.03233), as in RepDistiller (distiller_zoo/AB.py, models/util.py
Connector, helper/pretrain.py, train_student.py `--distill abound`).

    pre-stage (epochs 1 … init_epochs):   L = w_ab · Σ_i 2^(i − n + 1) · ab_loss(c_i(S_i), T_i) · 3/1000
    training stage (later epochs):        L = w_ce · CE(z_s, y)

ab_loss(s, t) = Σ_elements [ (s + m)² · 1(s > −m ∧ t ≤ 0) + (s − m)² · 1(s ≤ m ∧ t > 0) ] / B, margin m = 1:
the alternative L2 of the paper, which pushes each student neuron to the teacher's side of the activation boundary
with a margin. S_i, T_i are *pre-ReLU* stage outputs (RepDistiller's `preact=True`: the residual sum before the
stage's last ReLU) of stages i = 1 … n (RepDistiller's `feat[1:-1]`: every stage but the stem; kdbench's stages
1 … min(n_s, n_t) − 1, paired from the shallowest, zip's rule), the deepest pair weighted 1 and each shallower one
half the next. c_i is a connector: identity when the channels and size match, else RepDistiller's ConvReg
without ReLU (conv + BN; :class:`kdbench.methods.fitnet.HintRegressor` with relu=False).

As in RepDistiller, the AB loss acts in the pre-stage only (its train loop sets `loss_kd = 0` for abound), training
the connectors and the student's feature layers (its classifier gets no gradient); the training stage is CE
(`-a 0`; its `-b 1` multiplies that zero). The pre-stage's loss is unweighted in RepDistiller: w_ab = 1.

What differs from RepDistiller (the engine owns one optimizer and schedule, kdbench.methods._prestage): the
pre-stage is the first `ab.init_epochs` epochs *of* `--epochs` (30 of 240 rescaled), not 30 extra ones; it runs
under the run's optimizer and lr schedule, not a fresh SGD at a constant lr; and the student is in train mode
(RepDistiller's init puts it in eval mode, so its BatchNorm uses and keeps its initial running statistics).
The teacher's pre-ReLU maps are computed at each step, not read from the teacher-output cache (which holds the
post-activation stage outputs). The connectors are their own parameter group (`--set group.connector.lr_scale=`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from kdbench.core.errors import UserError, check_range
from kdbench.methods._prestage import PreStageDistiller
from kdbench.methods.fitnet import HintRegressor
from kdbench.models.features import num_stages
from kdbench.models.preact import PreactTap, preact_id
from kdbench.train.method import Batch, MethodContext, register_method

# RepDistiller's ABLoss scales the summed loss by 3/1000 (its "loss / 1000 * 3").
REFERENCE_SCALE = 3 / 1000


def ab_loss(student_preact: torch.Tensor, teacher_preact: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Σ [ (s + m)² · 1(s > −m ∧ t ≤ 0) + (s − m)² · 1(s ≤ m ∧ t > 0) ] / B  — Heo et al. 2019's alternative L2.

    Summed over every element of the (B, C, H, W) maps and divided by the batch size, unweighted. The teacher
    side only selects the branch (no gradient). Computed in float32.
    """
    s, t = student_preact.float(), teacher_preact.float()
    below = ((s > -margin) & (t <= 0)).float()
    above = ((s <= margin) & (t > 0)).float()
    return ((s + margin).pow(2) * below + (s - margin).pow(2) * above).sum() / s.shape[0]


def ab_stage_weights(n: int) -> list[float]:
    """2^(i − n + 1) for i = 0 … n − 1: the deepest pair 1, each shallower one half the next (RepDistiller)."""
    return [2.0 ** (i - n + 1) for i in range(n)]


def ab_total_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor],
                  margin: float = 1.0) -> torch.Tensor:
    """Σ_i 2^(i − n + 1) · ab_loss(S_i, T_i) · 3/1000 over the n paired (connected) maps, shallowest first:
    RepDistiller's `sum(ABLoss(n, margin)(g_s, g_t))`."""
    weights = ab_stage_weights(len(student_maps))
    return REFERENCE_SCALE * sum(w * ab_loss(s, t, margin) for w, s, t in zip(weights, student_maps, teacher_maps,
                                                                               strict=True))


def preact_tap(model: nn.Module, stages: Sequence[int], role: str) -> PreactTap:
    """A :class:`~kdbench.models.preact.PreactTap` on `model` (the residual sum before each stage's last ReLU:
    RepDistiller's `preact=True` features), or a one-line refusal for a family without those points."""
    try:
        return PreactTap(model, stages)
    except ValueError as e:
        raise UserError(f"ab distils pre-ReLU stage outputs, but the {role} has none: {e}; use at, fitnet or fsp "
                        "for this pair") from None


@dataclass(frozen=True)
class ABParams:
    w_ce: float = 1.0  # RepDistiller train_student.py -r (gamma) 1, the training stage's CE
    w_ab: float = 1.0  # RepDistiller helper/pretrain.py: the init loss sum(ABLoss(...)) is unweighted
    margin: float = 1.0  # RepDistiller distiller_zoo/AB.py ABLoss(margin=1.0)
    # Epochs of the pre-stage; None: RepDistiller's --init_epochs 30 of 240, rescaled to the run's epochs.
    init_epochs: int | None = None

    def __post_init__(self) -> None:
        check_range("ab.w_ce", self.w_ce, 0.0, None)
        check_range("ab.w_ab", self.w_ab, 0.0, None)
        check_range("ab.margin", self.margin, 0.0, None, low_open=True)
        if self.init_epochs is not None:
            check_range("ab.init_epochs", self.init_epochs, 1, None)


@register_method("ab", paper="Heo et al. 2019, Knowledge Transfer via Distillation of Activation Boundaries Formed "
                 "by Hidden Neurons (AAAI)", params=ABParams())
class AB(PreStageDistiller):
    teacher_outputs = "pre-stage only: pre-ReLU stage outputs (recomputed, not cached)"
    param_group_modules = {"connector": "connectors"}
    pre_stage_trains = "connectors and the student's feature layers, with the AB loss"

    def __init__(self, student: nn.Module, teacher: nn.Module, params: ABParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self.setup_pre_stage(ctx)
        n = min(num_stages(student), num_stages(teacher))
        if n < 2:
            raise UserError("ab needs at least two stages in student and teacher (it uses every stage but the stem)")
        self.stages = list(range(1, n))
        self._s_tap = preact_tap(student, self.stages, "student")
        self._t_tap = preact_tap(teacher, self.stages, "teacher")
        example = torch.zeros(2, ctx.in_chans, ctx.image_size, ctx.image_size)
        s_maps, t_maps = self._s_tap.probe(example).stages, self._t_tap.probe(example).stages
        s_maps, t_maps = ({sid: maps[preact_id(sid)] for sid in self.stages} for maps in (s_maps, t_maps))
        connectors = []
        for sid in self.stages:
            s_shape, t_shape = tuple(s_maps[sid].shape[1:]), tuple(t_maps[sid].shape[1:])
            if len(s_shape) != 3 or len(t_shape) != 3:  # e.g. a graph student's (B, D) hidden layer
                raise UserError(f"ab compares spatial pre-ReLU maps, but stage {sid} has shapes {s_shape} (student) "
                                f"and {t_shape} (teacher) per sample; use kd, rkd or crd for this pair")
            connectors.append(nn.Identity() if s_shape[:2] == t_shape[:2]  # RepDistiller: same C and H
                              else HintRegressor(s_shape, t_shape, relu=False))
        self.connectors = nn.ModuleList(connectors)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        if not self.in_pre_stage:  # RepDistiller's training stage for abound: loss_kd = 0
            logits = self.student(batch.images)
            return logits, {"ce": p.w_ce * self.cross_entropy(logits, batch.labels)}
        s = self._s_tap(batch.images)
        with torch.no_grad():
            t = self._t_tap(batch.images)
        connected = [c(s.stages[preact_id(sid)]) for c, sid in zip(self.connectors, self.stages, strict=True)]
        teacher_maps = [t.stages[preact_id(sid)] for sid in self.stages]
        return s.logits, {"ab": p.w_ab * ab_total_loss(connected, teacher_maps, p.margin)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "stages": self.stages,
                "connectors": [type(c).__name__ for c in self.connectors]}
