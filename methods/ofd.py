"""`ofd`: a comprehensive overhaul of feature distillation (Heo, Kim, Yun, Park, Kwak, Choi, ICCV 2019, "A
Comprehensive Overhaul of Feature Distillation", arXiv:1904.01866).

    L = w_ce · CE(z_s, y) + w_feat · Σ_i  d_p( r_i(F_s[i]), pool(F_t[i]); m_i ) / 2^(k − 1 − i),   i = 0 … k − 1

- F are *pre-ReLU* stage maps (the residual sum before a stage's last ReLU: kdbench.models.preact), so the
  teacher's negative responses, which the ReLU would erase, still say "this is not active";
- r_i, the connector, is a 1×1 conv (no bias) + BN from the student's channels to the teacher's (mdistiller's
  `ConnectorConvBN`, He-normal initialised); the teacher map is adaptive-average-pooled to the student's size;
- d_p, the partial L2 (:func:`ofd_feat_loss`), skips the positions where the student is already below a teacher
  response that the ReLU would zero anyway;
- m, the margin (:func:`ofd_margin`), is per teacher channel the expectation of the negative responses of the
  BN before the ReLU, E[x | x < 0] for x ~ N(β, γ²), computed once from the teacher's BN parameters when the
  method is built;
- the deepest pair weighs 1, each shallower one half the one after it (mdistiller's `/ 2 ** (feat_num - i - 1)`).

Stages, as mdistiller's `preact_feats[1:]` aligned by `_align_list` (the last min(n_s, n_t) − 1 of each): every
stage but the stem, paired from the deepest one back (:func:`kdbench.methods.at.deep_pairs`). Where the stage
counts differ, the margins follow the teacher stages actually used (mdistiller takes the first ones whatever the
alignment: the same when, as in all its CIFAR pairs, the counts agree).

Families: pre-ReLU maps and the BN before them come from hooks (kdbench.models.preact.PREACT_FAMILIES); other
models (ViTs, the GNN student, the CIFAR ShuffleNets as teachers) are refused in one line when the method is
built. Deviation: mdistiller's OFD.train() puts the *teacher* in train mode too (its BN then normalises with the
batch's statistics and updates its running ones, as the original OFD code did); here the teacher stays frozen in
eval mode like every other method's (and the teacher-output cache relies on it).

Defaults: mdistiller's mdistiller/engine/cfg.py (`CFG.OFD`), which its configs/cifar100/ofd.yaml leaves as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods.at import deep_pairs
from kdbench.models.features import num_stages
from kdbench.models.preact import PreactTap, bn_before_relu, preact_id
from kdbench.models.taps import stage_shapes
from kdbench.train.method import Batch, Distiller, MethodContext, register_method

# Below this Φ(−β/|γ|) (the share of negative responses) the margin is −3|γ|, as mdistiller's OFD.
MIN_NEGATIVE_MASS = 0.001


def ofd_margin(bn_weight: torch.Tensor, bn_bias: torch.Tensor) -> torch.Tensor:
    """m_c = E[x | x < 0] = β − |γ| · φ(β/|γ|) / Φ(−β/|γ|) for x ~ N(β, γ²), per channel of the BN before the
    ReLU (Heo et al. 2019, Eq. 2 and §3.2); −3|γ| where Φ(−β/|γ|) ≤ 0.001 (almost no negative responses), as
    mdistiller. A channel with γ = 0 is the constant β: its margin is min(β, 0). Computed in float64 from the
    BN's parameters, returned as float32, shape (C,)."""
    margins = []
    for gamma, beta in zip(bn_weight.detach().double().tolist(), bn_bias.detach().double().tolist(), strict=True):
        s = abs(gamma)
        if s == 0.0:
            margins.append(min(beta, 0.0))
            continue
        negative_mass = 0.5 * math.erfc(beta / s / math.sqrt(2.0))  # Φ(−β/s)
        if negative_mass > MIN_NEGATIVE_MASS:
            density = math.exp(-((beta / s) ** 2) / 2) / math.sqrt(2 * math.pi)  # φ(β/s)
            margins.append(beta - s * density / negative_mass)
        else:
            margins.append(-3 * s)
    return torch.tensor(margins, dtype=torch.float32)


def ofd_feat_loss(source: torch.Tensor, target: torch.Tensor, margin: torch.Tensor) -> torch.Tensor:
    """Partial L2 of Heo et al. 2019 (Eq. 3), summed over channels and positions, averaged over the batch:

        d_p = Σ_{c,h,w} mean_b  (s − m)² · [s > m ∧ t ≤ m] + (s − t)² · [s > t ∧ m < t ≤ 0] + (s − t)² · [t > 0]

    where t ≤ m the target is the margin m, where t ≤ 0 the student may be anywhere below it: no loss. s: the
    connected student map, t: the teacher map at the student's size, m: per channel, broadcast (shape (C,) or
    (1, C, 1, 1)). Unweighted, float32; the teacher carries no gradient."""
    s, t = source.float(), target.float().detach()
    m = margin.to(s).reshape(1, -1, 1, 1)
    loss = ((s - m).pow(2) * ((s > m) & (t <= m)).float()
            + (s - t).pow(2) * ((s > t) & (t > m) & (t <= 0)).float()
            + (s - t).pow(2) * (t > 0).float())
    return loss.mean(dim=0).sum()


def ofd_loss(connected_student: list[torch.Tensor], teacher: list[torch.Tensor],
             margins: list[torch.Tensor]) -> torch.Tensor:
    """Σ_i ofd_feat_loss(s_i, pool(t_i), m_i) / 2^(k − 1 − i) over k pairs, shallowest first: the deepest weighs 1.
    Each teacher map is adaptive-average-pooled to its (connected) student map's size. Unweighted."""
    k = len(connected_student)
    total = connected_student[0].new_zeros((), dtype=torch.float32)
    for i, (s, t, m) in enumerate(zip(connected_student, teacher, margins, strict=True)):
        t = F.adaptive_avg_pool2d(t.float(), s.shape[-2:])
        total = total + ofd_feat_loss(s, t, m) / 2 ** (k - 1 - i)
    return total


class Connector(nn.Module):
    """r: conv (kernel k, stride 1, same padding, no bias) + BN, student channels → teacher channels, with
    mdistiller's initialisation: conv weights ~ N(0, 2 / (k·k·C_out)), BN γ = 1, β = 0."""

    def __init__(self, s_channels: int, t_channels: int, kernel_size: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(s_channels, t_channels, kernel_size, stride=1, padding=(kernel_size - 1) // 2,
                              bias=False)
        self.bn = nn.BatchNorm2d(t_channels)
        nn.init.normal_(self.conv.weight, 0.0, math.sqrt(2.0 / (kernel_size * kernel_size * t_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


@dataclass(frozen=True)
class OFDParams:
    w_ce: float = 1.0  # mdistiller cfg.py CFG.OFD.LOSS.CE_WEIGHT
    w_feat: float = 0.001  # mdistiller cfg.py CFG.OFD.LOSS.FEAT_WEIGHT (the partial L2 sums over C·H·W)
    connector_kernel: int = 1  # mdistiller cfg.py CFG.OFD.CONNECTOR.KERNEL_SIZE

    def __post_init__(self) -> None:
        check_range("ofd.w_ce", self.w_ce, 0.0, None)
        check_range("ofd.w_feat", self.w_feat, 0.0, None)
        check_range("ofd.connector_kernel", self.connector_kernel, 1, 7)
        if self.connector_kernel % 2 == 0:  # an even kernel with (k − 1) // 2 padding would shrink the map
            raise UserError(f"ofd.connector_kernel={self.connector_kernel} must be odd; allowed: 1, 3, 5, 7")


def _preact_taps(student: nn.Module, teacher: nn.Module, s_stages: list[int],
                 t_stages: list[int]) -> tuple[PreactTap, PreactTap, list[torch.Tensor]]:
    """Pre-ReLU taps on both and the teacher's margins, or the one-line refusal of a family without them."""
    try:
        s_tap = PreactTap(student, stages=s_stages)
        t_tap = PreactTap(teacher, stages=t_stages)
        bns = bn_before_relu(teacher, t_stages)
    except ValueError as e:
        raise UserError(f"ofd distils pre-ReLU stage maps: {e}; use fitnet, at, kd, rkd or crd for this pair") \
            from None
    return s_tap, t_tap, [ofd_margin(bn.weight, bn.bias) for bn in bns]


@register_method(
    "ofd", paper="Heo et al. 2019, A Comprehensive Overhaul of Feature Distillation (ICCV)", params=OFDParams()
)
class OFD(Distiller):
    teacher_outputs = "logits + pre-ReLU stage maps (features: cached when they fit the cap)"
    param_group_modules = {"connectors": "connectors"}  # `--set group.connectors.lr_scale=...`

    def __init__(self, student: nn.Module, teacher: nn.Module, params: OFDParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        shapes = {}
        for role, model in (("student", student), ("teacher", teacher)):
            shapes[role] = stage_shapes(model, ctx.in_chans, ctx.image_size)
            for shape in shapes[role].values():
                if len(shape) != 3:  # e.g. the GNN student's hidden layer is (B, D): there is no map
                    raise UserError(f"ofd distils spatial pre-ReLU maps, but the {role}'s stage output has shape "
                                    f"{shape} per sample; use kd, dkd, rkd, pkt or crd for this pair")
        self.pairs = deep_pairs(num_stages(student), num_stages(teacher))
        if not self.pairs:
            raise UserError("ofd needs at least two stages in student and teacher (it uses every stage but the stem)")
        s_stages, t_stages = [s for s, _ in self.pairs], [t for _, t in self.pairs]
        self._s_tap, self._t_tap, margins = _preact_taps(student, teacher, s_stages, t_stages)
        for i, margin in enumerate(margins):  # derived from the teacher: rebuilt, never checkpointed
            self.register_buffer(f"margin{i}", margin, persistent=False)
        self.connectors = nn.ModuleList(Connector(shapes["student"][s][0], len(m), params.connector_kernel)
                                        for s, m in zip(s_stages, margins, strict=True))

    @property
    def margins(self) -> list[torch.Tensor]:
        return [getattr(self, f"margin{i}") for i in range(len(self.pairs))]

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        connected = [r(s.stages[preact_id(i)]) for r, (i, _) in zip(self.connectors, self.pairs, strict=True)]
        teacher_maps = [t.stages[preact_id(j)] for _, j in self.pairs]
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
                          "ofd": p.w_feat * ofd_loss(connected, teacher_maps, self.margins)}

    def describe(self) -> dict[str, Any]:
        return {"stage_pairs": [list(pair) for pair in self.pairs],
                "margin_mean": [round(float(m.mean()), 6) for m in self.margins],
                "teacher_mode": "eval (mdistiller's OFD trains the teacher's BN statistics; kdbench keeps it frozen)"}
