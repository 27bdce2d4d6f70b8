"""`kdsvd`: SVD-based distillation (Lee, Kim, Song, ECCV 2018, "Self-supervised Knowledge Distillation Using
Singular Value Decomposition", arXiv:1807.06819), as in RepDistiller (distiller_zoo/KDSVD.py, the authors'
TensorFlow code ported; train_student.py `--distill kdsvd` on `feat[1:-1]`).

    L = w_ce · CE(z_s, y) + w_svd · kdsvd_loss(S_1 … S_n, T_1 … T_n)

For each stage map F (B, C, H, W) seen as B matrices X = (H·W × C): X = U Σ Vᵀ. The teacher keeps its first k
right-singular vectors v_t (C-vectors), the student its first k + 3; each is L2-normalised, and so are the
singular values kept. Sign alignment: of the student's k + 3 vectors the one with the largest |cos| to each teacher
vector is kept, its sign flipped to match (RepDistiller's align_rsv). Both sides are scaled by the teacher's
normalised singular values. Between consecutive stages i − 1, i the RBF relation
R[c, c', j] = exp(−(v_i[c, j] − v_(i−1)[c', j])² / 8) is compared:

    kdsvd_loss = Σ_(i ≥ 1) Σ (R_s,i − R_t,i)² / B,   non-finite terms set to 0 (as the reference does)

Stages: every stage but the stem (RepDistiller's `feat[1:-1]`, mdistiller's `feats[1:]`: kdbench's stages 1 … n − 1,
n the shorter model's stage count). R_s and R_t must have equal shapes, so the two models need the same channel
count stage by stage. Defaults k = 1, w_ce = 1, w_svd = 1: mdistiller's configs (mdistiller/engine/cfg.py
CFG.KDSVD); RepDistiller's script gives KDSVD no weight (its -b has no default). mdistiller reshapes a map to
(B, C·H, W) before the SVD; we follow RepDistiller's (B, H·W, C), the formulation of the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods._stage_maps import check_equal_width_maps
from kdbench.models.taps import IntermediateTap, stage_shapes
from kdbench.train.method import Batch, Distiller, MethodContext, register_method

RBF_WIDTH = 8.0  # RepDistiller / the authors' code: exp(-d² / 8)
EXTRA_STUDENT_VECTORS = 3  # the student keeps k + 3 singular vectors to choose the aligned ones from


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def top_singular(feature_map: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(singular values (B, n), right-singular vectors (B, C, n)) of each sample's (H·W × C) matrix, the first n,
    non-finite entries zeroed and each L2-normalised (values over the n, each vector over its C entries)."""
    b, c = feature_map.shape[:2]
    x = feature_map.float().reshape(b, c, -1).transpose(1, 2)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    s, v = _finite(s), _finite(vh.transpose(1, 2))
    return F.normalize(s[:, :n], dim=1), F.normalize(v[:, :, :n], dim=1)


def align_signs(student_vectors: torch.Tensor, teacher_vectors: torch.Tensor) -> torch.Tensor:
    """For each teacher vector, the student vector of largest |cos| to it, with the sign of that cos: (B, C, k)."""
    cosine = student_vectors.transpose(1, 2) @ teacher_vectors  # (B, k + 3, k)
    best = cosine.abs().amax(dim=1, keepdim=True)
    mask = torch.where(cosine.abs() == best, cosine.sign(), torch.zeros_like(cosine))
    return student_vectors @ mask


def kdsvd_loss(student_maps: Sequence[torch.Tensor], teacher_maps: Sequence[torch.Tensor], k: int = 1) -> torch.Tensor:
    """Σ_(i ≥ 1) Σ (R_s,i − R_t,i)² / B over consecutive stage pairs (see the module docstring): Lee et al. 2018 in
    RepDistiller's form (`sum(KDSVD(k)(g_s, g_t))`). Unweighted, float32; the teacher side carries no gradient."""
    total = student_maps[0].new_zeros((), dtype=torch.float32)
    previous: tuple[torch.Tensor, torch.Tensor] | None = None
    for f_s, f_t in zip(student_maps, teacher_maps, strict=True):
        with torch.no_grad():
            s_t, v_t = top_singular(f_t, k)
        _, v_s = top_singular(f_s, k + EXTRA_STUDENT_VECTORS)
        v_s = align_signs(v_s, v_t) * s_t[:, None, :]
        v_t = v_t * s_t[:, None, :]
        if previous is not None:
            v_sb, v_tb = previous
            r_s = torch.exp(-(v_s[:, :, None] - v_sb[:, None]).pow(2) / RBF_WIDTH)
            r_t = torch.exp(-(v_t[:, :, None] - v_tb[:, None]).pow(2) / RBF_WIDTH)
            total = total + _finite((r_s - r_t).pow(2)).sum()
        previous = (v_s, v_t)
    return total / student_maps[0].shape[0]


@dataclass(frozen=True)
class KDSVDParams:
    w_ce: float = 1.0  # mdistiller/engine/cfg.py CFG.KDSVD.LOSS.CE_WEIGHT
    w_svd: float = 1.0  # mdistiller/engine/cfg.py CFG.KDSVD.LOSS.FEAT_WEIGHT
    k: int = 1  # singular vectors of the teacher: RepDistiller KDSVD(k=1), mdistiller CFG.KDSVD.K

    def __post_init__(self) -> None:
        check_range("kdsvd.w_ce", self.w_ce, 0.0, None)
        check_range("kdsvd.w_svd", self.w_svd, 0.0, None)
        check_range("kdsvd.k", self.k, 1, 64)


@register_method("kdsvd", paper="Lee et al. 2018, Self-supervised Knowledge Distillation Using Singular Value "
                 "Decomposition (ECCV)", params=KDSVDParams())
class KDSVD(Distiller):
    teacher_outputs = "logits + every stage but the stem (features: cached when they fit the cap)"

    def __init__(self, student: nn.Module, teacher: nn.Module, params: KDSVDParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        s_shapes = stage_shapes(student, ctx.in_chans, ctx.image_size)
        t_shapes = stage_shapes(teacher, ctx.in_chans, ctx.image_size)
        n = min(len(s_shapes), len(t_shapes))
        if n < 3:
            raise UserError("kdsvd relates consecutive stages: it needs at least two stages after the stem in "
                            "student and teacher")
        self.stages = list(range(1, n))
        check_equal_width_maps("kdsvd", s_shapes, t_shapes, self.stages, uses="decomposes",
                               compared="its RBF relations", width_takers="at, fitnet or ab")
        self._s_tap = IntermediateTap(student, stages=self.stages)
        self._t_tap = IntermediateTap(teacher, stages=self.stages)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        with torch.autocast(batch.images.device.type, enabled=False):  # an SVD in half precision is not supported
            svd = kdsvd_loss([s.stages[i] for i in self.stages], [t.stages[i] for i in self.stages], p.k)
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels), "svd": p.w_svd * svd}

    def describe(self) -> dict[str, Any]:
        return {"stages": self.stages}
