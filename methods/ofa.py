"""`ofa`: one-for-all KD between heterogeneous architectures (Hao, Guo, Han, Tang, Hu, Wang, Xu, NeurIPS 2023,
"One-for-All: Bridge the Gap Between Heterogeneous Architectures in Knowledge Distillation", arXiv:2310.19444),
as in the authors' code (github Hao840/OFAKD, distillers/ofa.py).

Exits on the student's intermediate stages project each stage into the logit space, where the architecture of
the features no longer matters; every exit and the student's own logits learn the teacher's logits through the
target-enhanced OFA loss:

    L = w_ce · CE(z_s, y) + w_kd · OFA(z_s, z_t) + w_ofa · Σ_k OFA(exit_k(F_s^k), z_t)

    OFA(z_s, z_t) = −(1/B) Σ_b Σ_c w_c · log softmax(z_s / T)_c,   w_c = (p_c + 1[c = y])^ε − 1[c = y],
    p = softmax(z_t / T)

so the non-target classes weigh p_c^ε and the target class (1 + p_y)^ε − 1: with ε > 1 the target gains weight
when the teacher is confident in it (the paper's "adaptive target enhancement"); at ε = 1 the loss is the
cross-entropy against the teacher's soft labels (KD without the T² factor). The teacher only gives its logits:
any teacher works, and the teacher-output cache serves them.

Exits (the reference's projectors; :func:`cnn_exit`, :func:`token_exit`), one per tapped student stage k ∈ {1, 2, 3, 4}:
- a CNN student (ResNet, MobileNet, ConvNeXt, the CIFAR nets): 4 − k depthwise-separable stride-2 blocks
  (:class:`SepConv`) doubling the channels, the last one to max(D_s, D_t) (the embedding widths), or a 1×1 conv
  to max(D_s, D_t) at stage 4; then global average pooling and a linear classifier;
- a token student (ViT/DeiT, Swin, MLP-Mixer: a timm PatchEmbed): patch merging (:class:`PatchMerging`) until
  the patch grid is the reference's 7 × 7 (224 px / stride 32), the first merge projecting to D_s; then
  max(4 − k, 1) transformer blocks of width D_s (timm's Block, 4 heads; 1 where D_s is not a multiple of 4,
  which timm's attention refuses); the mean over the patch tokens; a linear
  classifier. The reference reads a DeiT's class token through the exit's blocks; the stage maps of kdbench's
  tap (kdbench.models.taps.IntermediateTap) drop the prefix tokens, so every token student takes the mean, the
  reference's path for students without one (Swin, Mixer). Where no merge happens and the stage's width is not
  D_s (a Swin stage at a tiny image size; at 224 px the reference always merges there), a linear layer maps it.
All exits are initialised as the reference's init_weights and form the parameter group `exits`.

Stages: the reference's four stages k = 1..4 are, for a student whose stages change stride (ResNet, MobileNet,
ConvNeXt, Swin), the last stage at each of its last four strides (a ResNet's layer1..layer4; a student with fewer
strides, e.g. a CIFAR ResNet with three, has exits for the last ones: stages 2..4); for an isotropic student
(ViT, Mixer: every block at one stride) blocks ⌈n·{2, 4, 10, 12}/12⌉ of its n (the reference taps ViT-S/DeiT-T
and Mixer-B blocks 2, 4, 10, 12 of 12, Swin-T's stage ends). `ofa.stages` picks among 1..4.

Defaults (train.py of Hao840/OFAKD): w_ce = 1 (--gt-loss-weight), w_kd = 1 (--kd-loss-weight), w_ofa = 1
(--ofa-loss-weight), T = 1 (--ofa-temperature), stages 1,2,3,4 (--ofa-stage), ε = 1 (--ofa-eps; its README runs
ε = 1.0 for CIFAR-100 Swin-T → ResNet-18 and ε = 1.5 for ImageNet DeiT-T → ResNet-18). The reference's one ε
for every exit and the logits is the one `ofa.eps`. Its configs train with label smoothing 0.1: in kdbench that
is the recipe's `label_smoothing`, which the CE term takes as every method's does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Block

from kdbench.core.errors import UserError, check_range
from kdbench.models.features import stage_modules
from kdbench.models.taps import IntermediateTap, stage_info
from kdbench.train.method import Batch, Distiller, MethodContext, register_method


def ofa_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor, eps: float,
             temperature: float = 1.0) -> torch.Tensor:
    """−(1/B) Σ_b Σ_c ((p_c + 1[c = y])^ε − 1[c = y]) · log softmax(z_s / T)_c, p = softmax(z_t / T): the OFA loss
    (Hao et al. 2023, eq. of the adaptive target enhancement), unweighted, no T² factor (as the authors' code).

    At ε = 1 it is the cross-entropy against the teacher's soft labels. Computed in float32, with log_softmax
    (the reference takes the log of the softmax: the same to float32 rounding short of an underflow).
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    p_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    target = F.one_hot(labels, p_t.shape[1]).to(p_t.dtype)
    weights = (p_t + target).pow(eps) - target
    return -(weights * log_p_s).sum(dim=1).mean()


class SepConv(nn.Module):
    """Depthwise-separable block halving the map: (3×3 depthwise stride 2, 1×1, BN, ReLU) then (3×3 depthwise,
    1×1 to `out_chans`, BN, ReLU) — the down-sampling block of the reference's CNN exits (from DARTS)."""

    def __init__(self, in_chans: int, out_chans: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(in_chans, in_chans, 3, stride=2, padding=1, groups=in_chans, bias=False),
            nn.Conv2d(in_chans, in_chans, 1, bias=False),
            nn.BatchNorm2d(in_chans),
            nn.ReLU(),
            nn.Conv2d(in_chans, in_chans, 3, stride=1, padding=1, groups=in_chans, bias=False),
            nn.Conv2d(in_chans, out_chans, 1, bias=False),
            nn.BatchNorm2d(out_chans),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class PatchMerging(nn.Module):
    """Swin's patch merging on a (B, H, W, C) grid: each 2 × 2 neighbourhood concatenated (4C), LayerNorm, a
    bias-free linear map to `out_dim`, then GELU if `act` (the reference's exits: after the first merge and after
    every merge but the last)."""

    def __init__(self, dim: int, out_dim: int, act: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, out_dim, bias=False)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.act(self.reduction(self.norm(x)))


class TokenExit(nn.Module):
    """A token student's exit: (B, C, H, W) map → patch tokens → merges → blocks → token mean → classes."""

    def __init__(self, merges: nn.Sequential, blocks: nn.Sequential, width: int, num_classes: int) -> None:
        super().__init__()
        self.merges = merges
        self.blocks = blocks
        self.head = nn.Linear(width, num_classes)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        x = self.merges(fmap.permute(0, 2, 3, 1))  # (B, H, W, C): the grid the merges halve
        x = self.blocks(x.flatten(1, 2))  # (B, L, D) tokens
        return self.head(x.mean(dim=1))


# The reference's final patch grid of a token exit: 7 × 7 patches, a 224 px image at stride 32.
FINAL_PATCH_GRID = 7
EXIT_HEADS = 4  # heads of the exit's transformer blocks (the reference's Block(dim, num_heads=4))


def cnn_exit(stage: int, in_chans: int, width: int, num_classes: int) -> nn.Sequential:
    """The reference's CNN exit of stage `stage` (1..4) with `width` = max(D_s, D_t)."""
    if stage == 4:
        down: list[nn.Module] = [nn.Conv2d(in_chans, width, 1)]
    else:
        down, chans = [], in_chans
        for i in range(4 - stage):
            out = width if i == 3 - stage else chans * 2
            down.append(SepConv(chans, out))
            chans *= 2
    return nn.Sequential(*down, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def token_exit(stage: int, shape: tuple[int, int, int], width: int, num_classes: int) -> TokenExit:
    """The reference's token exit of stage `stage` (1..4) for a (C, H, W) stage map and `width` = D_s."""
    chans, h, w = shape
    n_merges = max(int(math.log2(h / FINAL_PATCH_GRID)), 0)
    merges: list[nn.Module] = []
    for i in range(n_merges):
        if h % 2 or w % 2:  # an odd grid cannot be merged by 2 × 2: stop where the reference would assert
            break
        merges.append(PatchMerging(chans if i == 0 else width, width, act=i == 0 or i != n_merges - 1))
        h, w = h // 2, w // 2
    if not merges and chans != width:
        merges.append(nn.Linear(chans, width))
    heads = EXIT_HEADS if width % EXIT_HEADS == 0 else 1
    blocks = nn.Sequential(*[Block(dim=width, num_heads=heads) for _ in range(max(4 - stage, 1))])
    return TokenExit(nn.Sequential(*merges), blocks, width, num_classes)


def init_exit_weights(module: nn.Module) -> None:
    """The reference's init_weights: Kaiming-normal (fan out) convs, unit BN, truncated-normal (σ 0.02) linears."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def is_token_model(model: nn.Module) -> bool:
    """A ViT/DeiT, Swin or MLP-Mixer (its input is cut into patches by timm's PatchEmbed): the reference's
    non-CNN students, whose exits are transformer blocks."""
    return any(isinstance(m, PatchEmbed) for m in model.modules())


REFERENCE_STAGES = (1, 2, 3, 4)
# Blocks (1-based, of 12) the reference taps as stages 1..4 of an isotropic ViT/Mixer: Swin-T's stage ends.
ISOTROPIC_STAGE_ENDS = (2, 4, 10, 12)


def reference_stage_indices(model: nn.Module) -> dict[int, int]:
    """Reference stage k (1..4) → the student's feature_info index (see the module docstring); stages a student
    with fewer than four strides lacks are absent."""
    reductions = [info.get("reduction") for _, info in stage_modules(model)]
    n = len(reductions)
    if len(set(reductions)) == 1:  # isotropic: every block at one stride
        return {k: max(math.ceil(n * end / 12) - 1, 0) for k, end in zip(REFERENCE_STAGES, ISOTROPIC_STAGE_ENDS,
                                                                            strict=True)}
    last_at_stride = [i for i in range(n) if i == n - 1 or reductions[i + 1] != reductions[i]]
    ends = last_at_stride[-len(REFERENCE_STAGES):]
    return dict(zip(REFERENCE_STAGES[len(REFERENCE_STAGES) - len(ends):], ends, strict=True))


def parse_stages(spec: str) -> tuple[int, ...]:
    """'1,2,3,4' → (1, 2, 3, 4); each in 1..4, no repeats."""
    try:
        stages = tuple(int(s) for s in str(spec).replace(" ", "").split(",") if s)
    except ValueError:
        raise UserError(f"ofa.stages='{spec}' is not a comma-separated list of stages; allowed: 1, 2, 3, 4 "
                        "(e.g. 1,2,3,4)") from None
    if not stages or len(set(stages)) != len(stages) or not set(stages) <= set(REFERENCE_STAGES):
        raise UserError(f"ofa.stages='{spec}' must name distinct stages among 1, 2, 3, 4 (e.g. 1,2,3,4)")
    return stages


@dataclass(frozen=True)
class OFAParams:
    w_ce: float = 1.0  # Hao840/OFAKD train.py --gt-loss-weight
    w_kd: float = 1.0  # train.py --kd-loss-weight: the OFA loss on the student's own logits
    w_ofa: float = 1.0  # train.py --ofa-loss-weight: the OFA losses of the exits, summed
    eps: float = 1.0  # train.py --ofa-eps (its README: 1.0 CIFAR-100 Swin-T → ResNet-18, 1.5 ImageNet DeiT-T → R18)
    temperature: float = 1.0  # train.py --ofa-temperature
    stages: str = "1,2,3,4"  # train.py --ofa-stage: the reference's stages 1..4 that get an exit

    def __post_init__(self) -> None:
        check_range("ofa.w_ce", self.w_ce, 0.0, None)
        check_range("ofa.w_kd", self.w_kd, 0.0, None)
        check_range("ofa.w_ofa", self.w_ofa, 0.0, None)
        check_range("ofa.eps", self.eps, 0.0, 10.0, low_open=True)
        check_range("ofa.temperature", self.temperature, 0.0, 100.0, low_open=True)
        parse_stages(self.stages)


@register_method("ofa", paper="Hao et al. 2023, One-for-All: Bridge the Gap Between Heterogeneous Architectures in "
                 "Knowledge Distillation (NeurIPS)", params=OFAParams())
class OFA(Distiller):
    teacher_outputs = "logits"
    param_group_modules = {"exits": "exits"}  # `--set group.exits.lr_scale=...` (kdbench.train.optim)

    def __init__(self, student: nn.Module, teacher: nn.Module, params: OFAParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        s_info = stage_info(student, ctx.in_chans, ctx.image_size)
        t_info = stage_info(teacher, ctx.in_chans, ctx.image_size)
        indices = reference_stage_indices(student)
        wanted = parse_stages(params.stages)
        self.stage_index = {k: indices[k] for k in wanted if k in indices}  # reference stage → feature_info index
        if not self.stage_index:
            raise UserError(f"ofa.stages={params.stages}: the student {type(student).__name__} has only the "
                            f"reference stages {sorted(indices)}; pick among them")
        for i in self.stage_index.values():
            if len(s_info.stages[i].shape) != 3:  # the GNN student's hidden layer is (B, D): no map to project
                raise UserError(f"ofa projects the student's stage maps, but its stage {i} has shape "
                                f"{s_info.stages[i].shape}; use kd, dkd or rkd for this student")
        d_s, d_t = s_info.embedding_width, t_info.embedding_width
        self.token_student = is_token_model(student)
        exits = {}
        for k, i in self.stage_index.items():
            shape = s_info.stages[i].shape
            exits[str(k)] = (token_exit(k, shape, d_s, ctx.num_classes) if self.token_student
                             else cnn_exit(k, shape[0], max(d_s, d_t), ctx.num_classes))
        self.exits = nn.ModuleDict(exits)
        init_exit_weights(self.exits)
        self._tap = IntermediateTap(student, stages=sorted(set(self.stage_index.values())))

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._tap(batch.images)
        teacher_logits = self.teacher_logits(batch)
        exit_losses = [ofa_loss(self.exits[str(k)](s.stages[i]), teacher_logits, batch.labels, p.eps, p.temperature)
                       for k, i in self.stage_index.items()]
        return s.logits, {
            "ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
            "kd": p.w_kd * ofa_loss(s.logits, teacher_logits, batch.labels, p.eps, p.temperature),
            "ofa": p.w_ofa * torch.stack(exit_losses).sum(),
        }

    def describe(self) -> dict[str, Any]:
        return {"exits": {str(k): i for k, i in self.stage_index.items()},
                "exit_kind": "token" if self.token_student else "cnn",
                "exit_params": sum(p.numel() for p in self.exits.parameters())}
