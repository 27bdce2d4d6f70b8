"""`ft`: factor transfer (Kim, Park, Kwak, NeurIPS 2018, "Paraphrasing Complex Network: Network Compression via
Factor Transfer", arXiv:1802.04977), as in RepDistiller (distiller_zoo/FT.py, models/util.py Paraphraser and
Translator, helper/pretrain.py, train_student.py `--distill factor`).

    pre-stage (epochs 1 … init_epochs):   L = w_rec · MSE(P_dec(P_enc(F_t)), F_t)          (the paraphraser)
    training stage (later epochs):        L = w_ce · CE(z_s, y) + w_ft · ft_loss(Tr(F_s), P_enc(F_t))

F_s, F_t are the last stage's maps (RepDistiller's `feat[-2]`; kdbench's stage n − 1). The paraphraser P (three
3×3 convs to `factor_rate` · C_t channels, LeakyReLU 0.1, no BN, and three transposed convs back) is trained in
the pre-stage to reconstruct the teacher's map, then frozen: its encoder gives the teacher factor. The translator
Tr (three 3×3 convs with BN and LeakyReLU 0.1, C_s → factor_rate · C_t channels) trains with the student.

ft_loss(a, b) = mean | φ(a) − φ(b) |,  φ(f) = normalise_L2( mean_c f_c² ) per sample (RepDistiller's
FactorTransfer, p1 = 2, p2 = 1), the larger map average-pooled to the smaller's size first. The paper's factor is
the L2-normalised whole factor map; RepDistiller (whose numbers the CRD tables report) first reduces it over
channels as above, and we follow the reference code.

What differs from RepDistiller (kdbench.methods._prestage): the pre-stage is the first `ft.init_epochs` epochs
*of* `--epochs` (30 of 240 rescaled) under the run's one optimizer and schedule, not 30 extra epochs with an SGD
of its own (at lr 0.01 for the CIFAR ResNet/WRN students, its `learning_rate` otherwise: `--set
group.paraphraser.lr_scale=` sets the paraphraser's lr); the student is run without gradient in the pre-stage
(nothing of it trains there, as in RepDistiller; its BatchNorm statistics still move, as in any train-mode
forward). Paraphraser and translator are their own parameter groups (`paraphraser`, `translator`).

A pair whose compared last-stage maps are 1×1 (timm's ResNets at digits' default 16 px: layer4 is 1×1) is refused:
φ of a single position is 1 on both sides, so the term would be identically zero (AT refuses such pairs too).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods._prestage import PreStageDistiller
from kdbench.models.features import num_stages
from kdbench.models.taps import IntermediateTap
from kdbench.train.method import Batch, MethodContext, register_method


def factor(feature_map: torch.Tensor) -> torch.Tensor:
    """φ(f) = normalise_L2( mean over channels of f² ), flattened per sample (RepDistiller's factor, p1 = 2)."""
    return F.normalize(feature_map.float().pow(2).mean(1).flatten(1), dim=1)


def ft_loss(student_factor: torch.Tensor, teacher_factor: torch.Tensor) -> torch.Tensor:
    """mean | φ(F_s) − φ(F_t) |  — Kim et al. 2018's factor-transfer loss (L1, p2 = 1) in RepDistiller's form.

    The larger of the two maps is average-pooled to the smaller's (H, W) first. Unweighted, float32.
    """
    size = tuple(min(a, b) for a, b in zip(student_factor.shape[2:], teacher_factor.shape[2:], strict=True))
    if tuple(student_factor.shape[2:]) != size:
        student_factor = F.adaptive_avg_pool2d(student_factor, size)
    if tuple(teacher_factor.shape[2:]) != size:
        teacher_factor = F.adaptive_avg_pool2d(teacher_factor, size)
    return (factor(student_factor) - factor(teacher_factor)).abs().mean()


def _conv_stack(channels: list[int], conv: type[nn.Module], bn: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for c_in, c_out in zip(channels[:-1], channels[1:], strict=True):
        layers += [conv(c_in, c_out, 3, 1, 1), nn.BatchNorm2d(c_out) if bn else nn.Identity(), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers)


class Paraphraser(nn.Module):
    """RepDistiller's Paraphraser(t_shape, k, use_bn=False): encoder C → C → kC → kC (3×3 convs), decoder back
    kC → kC → C → C (3×3 transposed convs), each followed by LeakyReLU(0.1)."""

    def __init__(self, channels: int, factor_rate: float) -> None:
        super().__init__()
        out = int(channels * factor_rate)
        self.encoder = _conv_stack([channels, channels, out, out], nn.Conv2d, bn=False)
        self.decoder = _conv_stack([out, out, channels, channels], nn.ConvTranspose2d, bn=False)

    def forward(self, teacher_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(factor, reconstruction)."""
        code = self.encoder(teacher_map)
        return code, self.decoder(code)


def translator(student_channels: int, teacher_channels: int, factor_rate: float) -> nn.Sequential:
    """RepDistiller's Translator(s_shape, t_shape, k, use_bn=True): C_s → C_s → kC_t → kC_t, 3×3 convs, BN,
    LeakyReLU(0.1)."""
    out = int(teacher_channels * factor_rate)
    return _conv_stack([student_channels, student_channels, out, out], nn.Conv2d, bn=True)


@dataclass(frozen=True)
class FTParams:
    w_ce: float = 1.0  # RepDistiller train_student.py -r (gamma) 1
    w_ft: float = 200.0  # RepDistiller scripts/run_cifar_distill.sh: --distill factor -a 0 -b 200
    w_rec: float = 1.0  # RepDistiller helper/pretrain.py: the paraphraser's MSE is unweighted
    factor_rate: float = 0.5  # RepDistiller models/util.py Paraphraser/Translator k=0.5
    # Epochs of the paraphraser pre-stage; None: RepDistiller's --init_epochs 30 of 240, rescaled to the run's epochs.
    init_epochs: int | None = None

    def __post_init__(self) -> None:
        check_range("ft.w_ce", self.w_ce, 0.0, None)
        check_range("ft.w_ft", self.w_ft, 0.0, None)
        check_range("ft.w_rec", self.w_rec, 0.0, None)
        check_range("ft.factor_rate", self.factor_rate, 0.0, 1.0, low_open=True)
        if self.init_epochs is not None:
            check_range("ft.init_epochs", self.init_epochs, 1, None)


@register_method("ft", paper="Kim et al. 2018, Paraphrasing Complex Network: Network Compression via Factor Transfer "
                 "(NeurIPS)", params=FTParams())
class FT(PreStageDistiller):
    teacher_outputs = "logits + last stage (features: cached when they fit the cap)"
    param_group_modules = {"paraphraser": "paraphraser", "translator": "translator"}
    pre_stage_trains = "the paraphraser (reconstructing the teacher's last stage); the student is idle"

    def __init__(self, student: nn.Module, teacher: nn.Module, params: FTParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self.setup_pre_stage(ctx)
        self.s_stage, self.t_stage = num_stages(student) - 1, num_stages(teacher) - 1
        self._s_tap = IntermediateTap(student, stages=[self.s_stage])
        self._t_tap = IntermediateTap(teacher, stages=[self.t_stage])
        example = torch.zeros(2, ctx.in_chans, ctx.image_size, ctx.image_size)
        s_map = self._s_tap.probe(example).stages[self.s_stage]
        t_map = self._t_tap.probe(example).stages[self.t_stage]
        for role, fmap in (("student", s_map), ("teacher", t_map)):
            if fmap.dim() != 4:  # e.g. the GNN student's hidden layer is (B, D): nothing to paraphrase
                raise UserError(f"ft transfers factors of spatial feature maps, but the {role}'s last stage has shape "
                                f"{tuple(fmap.shape[1:])} per sample; use kd, rkd or crd for this pair")
        if min(s_map.shape[2], t_map.shape[2]) == 1 and min(s_map.shape[3], t_map.shape[3]) == 1:
            # φ of a 1×1 map is 1 on both sides: the term would be identically zero, the run CE under ft's name.
            raise UserError(f"ft compares the last stages' factors at 1×1 (student {tuple(s_map.shape[1:])}, teacher "
                            f"{tuple(t_map.shape[1:])} at {ctx.image_size} px): a term identically zero; use larger "
                            "images (e.g. --set data.image_size=32) or a method without spatial maps (kd, rkd, crd)")
        if int(t_map.shape[1] * params.factor_rate) < 1:
            raise UserError(f"ft.factor_rate={params.factor_rate:g} leaves no factor channel of the teacher's "
                            f"{t_map.shape[1]}; allowed: [{1 / t_map.shape[1]:g}, 1]")
        self.paraphraser = Paraphraser(t_map.shape[1], params.factor_rate)
        self.translator = translator(s_map.shape[1], t_map.shape[1], params.factor_rate)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        t_map = self.teacher_features(batch, self._t_tap).stages[self.t_stage]
        if self.in_pre_stage:
            with torch.no_grad():  # nothing of the student trains here; its logits only feed the train accuracy
                logits = self.student(batch.images)
            _, rec = self.paraphraser(t_map)
            return logits, {"rec": p.w_rec * F.mse_loss(rec.float(), t_map.float())}
        s = self._s_tap(batch.images)
        with torch.no_grad():  # frozen after its pre-stage (RepDistiller leaves it out of the optimizer)
            teacher_factor = self.paraphraser.encoder(t_map)
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
                          "ft": p.w_ft * ft_loss(self.translator(s.stages[self.s_stage]), teacher_factor)}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "student_stage": self.s_stage, "teacher_stage": self.t_stage,
                "factor_channels": int(self.paraphraser.encoder[-3].out_channels)}
