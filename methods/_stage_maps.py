"""Stage-map pieces shared by the methods that compare intermediate feature maps stage by stage as RepDistiller
does (`vid`, `nst`; `fsp`, `kdsvd` for the equal-width check): which stages they pair, the refusal of a model without
spatial maps or of unequal widths, and the pooling that brings two maps of different sizes to one.

Not a method (the leading underscore keeps the registry loader from importing it as one).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError
from kdbench.models.taps import pair_stages, stage_shapes

# The stage counts of the networks RepDistiller's stage indices were set for: stem + 3 stages (the CIFAR ResNets,
# WRNs) and stem + 4 (the ImageNet ResNets). Its defaults are kept as they are on these.
RESNET_STAGE_COUNTS = (4, 5)
RESNET_STAGES = 5  # an ImageNet ResNet's feature_info: the stem, layer1 … layer4


def resnet_like(n: int) -> bool:
    """Whether a model with `n` feature_info stages takes RepDistiller's ResNet stage indices as they are."""
    return n in RESNET_STAGE_COUNTS


def resnet_stage(n: int, index: int) -> int:
    """RepDistiller's ResNet stage `index` on a model with `n` stages: `index` itself where the model has a ResNet's
    stage count, else its stage at the relative depth of `index` in a 5-stage ResNet (kdbench.models.taps.pair_stages:
    layer2 is block 6 of a 12-block ViT, stage 0 of a 2-stage Swin)."""
    if resnet_like(n):
        return index
    return pair_stages(n, RESNET_STAGES, [index])[0][1]


def reference_stage_pairs(n_student: int, n_teacher: int) -> list[tuple[int, int]]:
    """(i, i) for i = 1 … min(n_s, n_t) − 1: RepDistiller's `zip(feat_s[1:-1], feat_t[1:-1])` in timm's stage
    indices (its feat[0] is the stem, our stage 0; its feat[-1] the pooled embedding, not a stage here). zip stops at
    the shorter list, so a deeper model's extra stages go unused."""
    return [(i, i) for i in range(1, min(n_student, n_teacher))]


def spatial_stage_shapes(method: str, student: nn.Module, teacher: nn.Module, in_chans: int, image_size: int,
                         takers: str) -> tuple[dict[int, tuple[int, ...]], dict[int, tuple[int, ...]]]:
    """Each model's stage shapes (C, H, W); a stage without a spatial map (the GNN student's hidden layer, (D,))
    is refused in one line naming the `takers`, the methods that take such a pair."""
    shapes = []
    for role, model in (("student", student), ("teacher", teacher)):
        found = stage_shapes(model, in_chans, image_size)
        for shape in found.values():
            if len(shape) != 3:
                raise UserError(f"{method} compares spatial feature maps stage by stage, but the {role}'s stage "
                                f"output has shape {shape} per sample; use {takers} for this pair")
        shapes.append(found)
    if min(len(shapes[0]), len(shapes[1])) < 2:
        raise UserError(f"{method} needs at least two stages in student and teacher (it pairs every stage but the "
                        "stem)")
    return shapes[0], shapes[1]


def check_equal_width_maps(method: str, s_shapes: dict[int, tuple[int, ...]], t_shapes: dict[int, tuple[int, ...]],
                           stages: list[int], uses: str, compared: str, width_takers: str) -> None:
    """Refuse, in one line, a stage of `stages` that is not a spatial map in both models (`method` `uses` spatial
    stage maps) or whose channel counts differ (`compared` entry by entry): what FSP's Grams and KDSVD's relations
    need. `width_takers` are the methods that take a pair of unequal widths."""
    for sid in stages:
        s, t = s_shapes[sid], t_shapes[sid]
        if len(s) != 3 or len(t) != 3:  # e.g. a graph student's (B, D) hidden layer
            raise UserError(f"{method} {uses} spatial stage maps, but stage {sid} has shapes {s} (student) and {t} "
                            "(teacher) per sample; use kd, rkd or crd for this pair")
        if s[0] != t[0]:
            raise UserError(f"{method} needs the same channel count in student and teacher at every stage ({compared} "
                            f"are compared entry by entry), but stage {sid} has {s[0]} and {t[0]}; use {width_takers} "
                            "for this pair")


def pool_to_common_size(f_s: torch.Tensor, f_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both maps at (min H, min W): the larger one average-pooled (adaptive), as RepDistiller's VID and NST pool
    the larger map to the smaller's side (they assume square maps; this takes each side on its own)."""
    size = (min(f_s.shape[2], f_t.shape[2]), min(f_s.shape[3], f_t.shape[3]))
    if tuple(f_s.shape[2:]) != size:
        f_s = F.adaptive_avg_pool2d(f_s, size)
    if tuple(f_t.shape[2:]) != size:
        f_t = F.adaptive_avg_pool2d(f_t, size)
    return f_s, f_t
