"""`reviewkd`: distilling knowledge via knowledge review (Chen, Liu, Zhao, Jia, CVPR 2021, "Distilling Knowledge via
Knowledge Review", arXiv:2104.09044).

    L = w_ce · CE(z_s, y) + w_review · min(epoch / warmup, 1) · Σ_l HCL(R_l, T_l)

The student's levels, deepest first, go through a chain of attention-based fusion modules (ABF, :class:`ABF`):
each maps its level to a common width, fuses it with the (upsampled) output of the deeper level by two
attention maps, and projects the fusion to the teacher's width and size at that level, so every output R_l
*reviews* the student's deeper levels. HCL (:func:`hcl_loss`) compares R_l with the teacher's level T_l at its
own size and averaged on a 4×4, 2×2 and 1×1 pyramid, the coarser ones weighing half as much.

Levels, as mdistiller's ReviewKD: the student's stage outputs 1 … n − 1 (post-ReLU: `reviewkd.student_preact`
=False, mdistiller's CIFAR default) and its pooled embedding as a 1×1 map; the teacher's *pre-ReLU* stage maps
1 … n − 1 (kdbench.models.preact) and its pooled embedding. Where the two counts of levels differ (mdistiller
requires them equal), the last min of each are paired, from the deepest back.

ABF's middle width is min(512, the student's embedding width) (mdistiller hard-codes 512; its MAX_MID_CHANNEL is
unused): `reviewkd.max_mid_channels`. The warm-up ramps the review term over the first epochs: mdistiller's 20 of
240 epochs, rescaled to the run's `--epochs` as the recipe's milestones are
(:func:`kdbench.spec.recipe.rescale_epochs`) and resolved into the config (`reviewkd.warmup`, so the run id
follows it); the factor is a function of the epoch alone (a resumed run takes the same path).

Defaults: mdistiller's mdistiller/engine/cfg.py (`CFG.REVIEWKD`): w_ce 1, w_review 1, warm-up 20 epochs; its
configs/cifar100/reviewkd.yaml sets REVIEWKD_WEIGHT 5 for ResNet32x4 → ResNet8x4, kept per pair here
(:data:`PUBLISHED_W_REVIEW`, resolved into the config like DKD's β).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods.dkd import warmup_factor
from kdbench.models.features import num_stages
from kdbench.models.preact import PreactTap, preact_id
from kdbench.models.taps import IntermediateTap, stage_shapes
from kdbench.spec.recipe import rescale_epochs
from kdbench.train.method import Batch, Distiller, MethodContext, register_method

# mdistiller cfg.py CFG.REVIEWKD.WARMUP_EPOCHS beside its 240 CIFAR-100 epochs.
PUBLISHED_WARMUP, PUBLISHED_EPOCHS = 20, 240
DEFAULT_W_REVIEW = 1.0  # mdistiller cfg.py CFG.REVIEWKD.REVIEWKD_WEIGHT
# (teacher, student) → REVIEWKD_WEIGHT of mdistiller's configs/cifar100/reviewkd.yaml.
PUBLISHED_W_REVIEW = {("cifar_resnet32x4", "cifar_resnet8x4"): 5.0}
PYRAMID = (4, 2, 1)  # hcl_loss's pooled sizes


def hcl_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Σ_l HCL(s_l, t_l), the hierarchical context loss of Chen et al. 2021 (§3.3), unweighted, float32:

        HCL(s, t) = ( MSE(s, t) + Σ_{k: p_k < H} 2^−k · MSE(pool_{p_k}(s), pool_{p_k}(t)) ) / (1 + Σ_k 2^−k)

    p = 4, 2, 1 (k = 1, 2, 3) adaptive-average-pooled sizes, each used only when smaller than the map's height H;
    MSE is the mean over all elements. The teacher carries no gradient."""
    total = student[0].new_zeros((), dtype=torch.float32)
    for s, t in zip(student, teacher, strict=True):
        s, t = s.float(), t.float().detach()
        loss, weight, weights = F.mse_loss(s, t), 1.0, 1.0
        for size in PYRAMID:
            if size >= s.shape[2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(s, size), F.adaptive_avg_pool2d(t, size))
            weights += weight
        total = total + loss / weights
    return total


class ABF(nn.Module):
    """Attention-based fusion (Chen et al. 2021, §3.2; mdistiller's ABF, its parameter names and initialisation):

        x' = BN(conv1×1(x))                                   (the level at the middle width)
        with a deeper output y:  a = σ(conv1×1([x', up(y)])),  x' = a₀ · x' + a₁ · up(y)   (two attention maps)
        x' resized (nearest) to the teacher's size;  out = BN(conv3×3(x'))

    Returns (out, x'): x' is what the next, shallower level fuses with."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, kernel_size=1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = nn.Sequential(nn.Conv2d(mid_channels * 2, 2, kernel_size=1), nn.Sigmoid()) if fuse else None
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None, out_size: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        n, _, h, w = x.shape
        x = self.conv1(x)
        if self.att_conv is not None:
            y = F.interpolate(y, (h, w), mode="nearest")
            z = self.att_conv(torch.cat([x, y], dim=1))
            x = x * z[:, 0].view(n, 1, h, w) + y * z[:, 1].view(n, 1, h, w)
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, out_size, mode="nearest")
        return self.conv2(x), x


@dataclass(frozen=True)
class ReviewKDParams:
    w_ce: float = 1.0  # mdistiller cfg.py CFG.REVIEWKD.CE_WEIGHT
    # None: PUBLISHED_W_REVIEW for the pair (configs/cifar100/reviewkd.yaml), else cfg.py's REVIEWKD_WEIGHT 1.
    w_review: float | None = None
    # Epochs over which the review term ramps up (0: none); None: cfg.py's 20 of 240 epochs, rescaled to the run.
    warmup: int | None = None
    max_mid_channels: int = 512  # mdistiller ReviewKD.py: mid_channel = min(512, in_channels[-1])
    student_preact: bool = False  # mdistiller cfg.py CFG.REVIEWKD.STU_PREACT (True in its ImageNet configs)

    def __post_init__(self) -> None:
        check_range("reviewkd.w_ce", self.w_ce, 0.0, None)
        if self.w_review is not None:
            check_range("reviewkd.w_review", self.w_review, 0.0, None)
        if self.warmup is not None:
            check_range("reviewkd.warmup", self.warmup, 0, None)
        check_range("reviewkd.max_mid_channels", self.max_mid_channels, 1, 4096)

    @property
    def resolved_w_review(self) -> float:
        return DEFAULT_W_REVIEW if self.w_review is None else self.w_review


def resolved_warmup(params: ReviewKDParams, epochs: int) -> int:
    """`reviewkd.warmup` when set, else mdistiller's 20 of 240 epochs rescaled to `epochs`."""
    if params.warmup is not None:
        return params.warmup
    return rescale_epochs(PUBLISHED_WARMUP, PUBLISHED_EPOCHS, epochs)


def _taps(student: nn.Module, teacher: nn.Module, s_stages: list[int], t_stages: list[int],
          student_preact: bool) -> tuple[IntermediateTap, PreactTap]:
    """The student's tap (pre-ReLU with `student_preact`) and the teacher's pre-ReLU one, both with the embedding,
    or the one-line refusal of a model without pre-ReLU maps."""
    try:
        t_tap = PreactTap(teacher, stages=t_stages, embedding=True)
    except ValueError as e:
        raise UserError(f"reviewkd distils the teacher's pre-ReLU stage maps: {e}; use fitnet, at, kd, rkd or crd "
                        "for this pair") from None
    try:
        s_tap = (PreactTap if student_preact else IntermediateTap)(student, stages=s_stages, embedding=True)
    except ValueError as e:
        raise UserError(f"reviewkd.student_preact=true reads the student's pre-ReLU stage maps: {e}; leave it "
                        "false for this student") from None
    return s_tap, t_tap


@register_method(
    "reviewkd", paper="Chen et al. 2021, Distilling Knowledge via Knowledge Review (CVPR)", params=ReviewKDParams()
)
class ReviewKD(Distiller):
    teacher_outputs = "logits + pre-ReLU stage maps + embedding (features: cached when they fit the cap)"
    param_group_modules = {"abfs": "abfs"}  # `--set group.abfs.lr_scale=...`

    def __init__(self, student: nn.Module, teacher: nn.Module, params: ReviewKDParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        shapes = {}
        for role, model in (("student", student), ("teacher", teacher)):
            shapes[role] = stage_shapes(model, ctx.in_chans, ctx.image_size)
            for shape in shapes[role].values():
                if len(shape) != 3:  # e.g. the GNN student's hidden layer is (B, D): there is no map to fuse
                    raise UserError(f"reviewkd fuses spatial stage maps, but the {role}'s stage output has shape "
                                    f"{shape} per sample; use kd, dkd, rkd, pkt or crd for this pair")
        m = min(num_stages(student), num_stages(teacher)) - 1
        if m < 1:
            raise UserError("reviewkd needs at least two stages in student and teacher (it uses every stage but "
                            "the stem)")
        # Stage levels aligned from the deepest, shallowest first; the embedding is the level after them.
        self.s_stages = list(range(num_stages(student) - m, num_stages(student)))
        self.t_stages = list(range(num_stages(teacher) - m, num_stages(teacher)))
        self._s_tap, self._t_tap = _taps(student, teacher, self.s_stages, self.t_stages, params.student_preact)
        example = torch.zeros(2, ctx.in_chans, ctx.image_size, ctx.image_size)
        s_width = self._s_tap.probe(example).embedding.shape[1]
        t_probe = self._t_tap.probe(example)
        s_channels = [shapes["student"][i][0] for i in self.s_stages] + [s_width]
        t_channels = [t_probe.stages[preact_id(j)].shape[1] for j in self.t_stages] + [t_probe.embedding.shape[1]]
        self.out_sizes = [tuple(t_probe.stages[preact_id(j)].shape[-2:]) for j in self.t_stages] + [(1, 1)]
        mid = min(params.max_mid_channels, s_width)
        # Deepest (the embedding, nothing deeper to fuse with) first, as the chain runs.
        self.abfs = nn.ModuleList(ABF(c_in, mid, c_out, fuse=k > 0) for k, (c_in, c_out) in
                                  enumerate(zip(reversed(s_channels), reversed(t_channels), strict=True)))
        self.warmup = resolved_warmup(params, ctx.epochs)  # already resolved in a run's config
        self._warmup = warmup_factor(1, self.warmup)  # set again by the engine before every epoch

    def review(self, student_levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """The ABF chain over the student's levels (shallowest first, the embedding last as (B, D, 1, 1)): one
        output per level at the teacher's width and size, shallowest first."""
        outputs, residual = [], None
        for abf, x, size in zip(self.abfs, reversed(student_levels), reversed(self.out_sizes), strict=True):
            out, residual = abf(x, residual, size)
            outputs.insert(0, out)
        return outputs

    def on_epoch_start(self, epoch: int) -> None:
        self._warmup = warmup_factor(epoch, self.warmup)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        s_keys = [preact_id(i) if p.student_preact else i for i in self.s_stages]
        student_levels = [s.stages[k] for k in s_keys] + [s.embedding[:, :, None, None]]
        teacher_levels = [t.stages[preact_id(j)] for j in self.t_stages] + [t.embedding[:, :, None, None]]
        review = hcl_loss(self.review(student_levels), teacher_levels)
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
                          "review": p.resolved_w_review * self._warmup * review}

    @classmethod
    def resolve_params(cls, params: ReviewKDParams, *, teacher: str | None, student: str,
                       epochs: int) -> ReviewKDParams:
        """Fill `w_review` from the pair's published config and `warmup` rescaled to the run's `epochs` (explicit
        values are kept): the run config, and so the run id, holds the values actually used."""
        if params.w_review is None:
            params = replace(params, w_review=PUBLISHED_W_REVIEW.get((teacher or "", student), DEFAULT_W_REVIEW))
        return replace(params, warmup=resolved_warmup(params, epochs))

    def describe(self) -> dict[str, Any]:
        return {"student_stages": self.s_stages, "teacher_stages": self.t_stages, "warmup": self.warmup,
                "w_review": self.params.resolved_w_review, "out_sizes": [list(s) for s in self.out_sizes]}
