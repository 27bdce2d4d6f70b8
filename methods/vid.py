"""`vid`: variational information distillation (Ahn, Hu, Damianou, Lawrence, Dai, CVPR 2019, "Variational
Information Distillation for Knowledge Transfer", arXiv:1904.05835), as in RepDistiller (distiller_zoo/VID.py,
the authors' code).

    L = w_ce · CE(z_s, y) + w_vid · Σ_(i, i) vid_loss(r_i(F_s[i]), F_t[i], σ²_i)

Stage pairs: student stage i with teacher stage i for i = 1 … min(n_s, n_t) − 1, every stage but the stem
(RepDistiller's `zip(feat_s[1:-1], feat_t[1:-1])`). Per pair a trained regressor r_i (three 1×1 convolutions
C_s → C_t → C_t → C_t, ReLU between, no bias: the predicted mean μ) and a per-channel variance
σ²_c = softplus(α_c) + ε, α initialised so that σ² starts at `init_pred_var`; all of them in the parameter
group `regressor` (`--set group.regressor.lr_scale=...`). When the two maps differ in size, the larger is
average-pooled to the smaller's before the regressor (RepDistiller pools to the smaller side).

Defaults: RepDistiller's CIFAR-100 run (scripts/run_cifar_distill.sh, VID: `-a 0 -b 1`, CE weight `-r` 1) and
VIDLoss's own defaults: w_ce 1, w_vid 1, init_pred_var 5, eps 1e-5.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from kdbench.core.errors import UserError, check_range
from kdbench.methods._stage_maps import pool_to_common_size, reference_stage_pairs, spatial_stage_shapes
from kdbench.models.taps import IntermediateTap
from kdbench.train.method import Batch, Distiller, MethodContext, register_method


def pred_variance(log_scale: torch.Tensor, eps: float) -> torch.Tensor:
    """σ² = log(1 + exp(α)) + ε per channel (softplus written as the reference writes it)."""
    return torch.log(1.0 + torch.exp(log_scale)) + eps


def vid_loss(pred_mean: torch.Tensor, target: torch.Tensor, log_scale: torch.Tensor, eps: float) -> torch.Tensor:
    """mean over (b, c, h, w) of ½ · ( (μ − t)² / σ²_c + log σ²_c ),  σ² from :func:`pred_variance`.

    Ahn et al. 2019 (VID), Eq. 6: the negative log-likelihood of the teacher's map t under a Gaussian with the
    regressed mean μ and a per-channel learned variance, without the constant ½·log 2π, averaged over all
    elements as RepDistiller's VIDLoss. `pred_mean` and `target` must already have the same shape. Unweighted;
    float32; the target carries no gradient.
    """
    with torch.autocast(pred_mean.device.type, enabled=False):
        var = pred_variance(log_scale.float(), eps).view(1, -1, 1, 1)
        diff = pred_mean.float() - target.detach().float()
        return (0.5 * (diff.pow(2) / var + torch.log(var))).mean()


def initial_log_scale(init_pred_var: float, eps: float) -> float:
    """α₀ = log(exp(init_pred_var − ε) − 1): the softplus inverse, so that σ² starts at init_pred_var."""
    return math.log(math.expm1(init_pred_var - eps))


class VIDRegressor(nn.Module):
    """One stage pair's trained part: the mean regressor (three bias-free 1×1 convs, ReLU between, C_s → C_t → C_t
    → C_t, as RepDistiller's VIDLoss with num_mid_channel = C_t) and the per-channel α (`log_scale`)."""

    def __init__(self, s_channels: int, t_channels: int, init_pred_var: float, eps: float) -> None:
        super().__init__()
        self.mean = nn.Sequential(
            nn.Conv2d(s_channels, t_channels, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, kernel_size=1, bias=False), nn.ReLU(),
            nn.Conv2d(t_channels, t_channels, kernel_size=1, bias=False),
        )
        self.log_scale = nn.Parameter(torch.full((t_channels,), initial_log_scale(init_pred_var, eps)))
        self.eps = eps

    def forward(self, feat_student: torch.Tensor, feat_teacher: torch.Tensor) -> torch.Tensor:
        """The unweighted VID term of one stage pair (maps pooled to a common size first)."""
        f_s, f_t = pool_to_common_size(feat_student, feat_teacher)
        return vid_loss(self.mean(f_s), f_t, self.log_scale, self.eps)


@dataclass(frozen=True)
class VIDParams:
    w_ce: float = 1.0  # RepDistiller train_student.py `-r` default
    w_vid: float = 1.0  # RepDistiller scripts/run_cifar_distill.sh, VID: `-b 1`
    init_pred_var: float = 5.0  # RepDistiller distiller_zoo/VID.py VIDLoss default
    eps: float = 1e-5  # idem

    def __post_init__(self) -> None:
        check_range("vid.w_ce", self.w_ce, 0.0, None)
        check_range("vid.w_vid", self.w_vid, 0.0, None)
        check_range("vid.init_pred_var", self.init_pred_var, 0.0, 1e4, low_open=True)
        check_range("vid.eps", self.eps, 0.0, 1.0, low_open=True)
        if self.init_pred_var <= self.eps:  # softplus(α) = init_pred_var − eps must be positive
            raise UserError(f"vid.init_pred_var={self.init_pred_var:g} is out of range; allowed: values above "
                            f"vid.eps={self.eps:g} (the variance starts at init_pred_var = softplus(α) + eps)")


@register_method(
    "vid", paper="Ahn et al. 2019, Variational Information Distillation for Knowledge Transfer (CVPR)",
    params=VIDParams(),
)
class VID(Distiller):
    teacher_outputs = "logits + the paired stages (features: cached when they fit the cap)"
    param_group_modules = {"regressor": "regressors"}  # `--set group.regressor.lr_scale=...` (kdbench.train.optim)

    def __init__(self, student: nn.Module, teacher: nn.Module, params: VIDParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        s_shapes, t_shapes = spatial_stage_shapes("vid", student, teacher, ctx.in_chans, ctx.image_size,
                                                  takers="kd, dkd, rkd, pkt, crd, sp or cc")
        self.pairs = reference_stage_pairs(len(s_shapes), len(t_shapes))
        self.regressors = nn.ModuleList(
            VIDRegressor(s_shapes[i][0], t_shapes[j][0], params.init_pred_var, params.eps) for i, j in self.pairs)
        self._s_tap = IntermediateTap(student, stages=[i for i, _ in self.pairs])
        self._t_tap = IntermediateTap(teacher, stages=[j for _, j in self.pairs])

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        vid = sum(reg(s.stages[i], t.stages[j]) for reg, (i, j) in zip(self.regressors, self.pairs, strict=True))
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels), "vid": p.w_vid * vid}

    def describe(self) -> dict[str, Any]:
        return {"stage_pairs": [list(pair) for pair in self.pairs]}
