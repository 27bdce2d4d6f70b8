"""`cc`: correlation congruence (Peng, Jin, Liu, Li, Wu, Liu, Zhou, Zhang, ICCV 2019, "Correlation Congruence for
Knowledge Distillation", arXiv:1904.01802), as in RepDistiller (distiller_zoo/CC.py, the authors' code shared with
the CRD authors), so that numbers compare with the CRD paper's tables.

    L = w_ce · CE(z_s, y) + w_cc · cc_loss(e_s(s), e_t(t))

s, t: the pooled penultimate embeddings (the classifier inputs, RepDistiller's `feat[-1]`); e_s, e_t: a linear
head each (RepDistiller's LinearEmbed, no normalisation) to a common `feat_dim`, both trained with the student in
their own parameter group `embed` (`--set group.embed.lr_scale=...`). The teacher's head is trained too, as in
the reference (its `trainable_list`), through the loss only: the teacher itself stays frozen.

The formula is the reference code's, not the paper's: the paper's correlation matrices over the batch with a
P-order Taylor expansion of a Gaussian RBF kernel are not in the code the published CIFAR-100 numbers come from,
which takes, for consecutive samples of the (shuffled) batch, the product of their absolute embedding
differences (see :func:`cc_loss`).

Defaults: RepDistiller's CIFAR-100 run (scripts/run_cifar_distill.sh, CC: `-a 0 -b 0.02`, CE weight `-r` 1) and
its `--feat_dim 128`: w_ce 1, w_cc 0.02, feat_dim 128.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from kdbench.core.errors import check_range
from kdbench.models.features import embedding_taps
from kdbench.train.method import Batch, Distiller, MethodContext, register_method


def cc_loss(emb_student: torch.Tensor, emb_teacher: torch.Tensor) -> torch.Tensor:
    """(1/(B−1)) Σ_{i=1}^{B−1} Σ_d |δ_i,d| · |δ_i+1,d|,  δ = e_s − e_t  (B × feat_dim, both already embedded).

    RepDistiller's `Correlation` (CC.py): the mean over consecutive sample pairs (i, i+1) of the batch of the
    summed products of their absolute student–teacher differences; zero when the embeddings agree on every
    sample. A batch of one sample has no pair: the term is 0 (the reference's mean over no pair is NaN).
    Unweighted; computed in float32. Gradients reach both heads (the teacher's embedding itself is a constant).
    """
    with torch.autocast(emb_student.device.type, enabled=False):
        delta = (emb_student.float() - emb_teacher.float()).abs()
        if delta.shape[0] < 2:
            return delta.sum() * 0.0
        return (delta[:-1] * delta[1:]).sum(dim=1).mean()


class CCEmbeds(nn.Module):
    """The two linear heads of CC, student side and teacher side, to `feat_dim` (RepDistiller's LinearEmbed)."""

    def __init__(self, s_dim: int, t_dim: int, feat_dim: int) -> None:
        super().__init__()
        self.student = nn.Linear(s_dim, feat_dim)
        self.teacher = nn.Linear(t_dim, feat_dim)


@dataclass(frozen=True)
class CCParams:
    w_ce: float = 1.0  # RepDistiller train_student.py `-r` default
    w_cc: float = 0.02  # RepDistiller scripts/run_cifar_distill.sh, CC: `-b 0.02`
    feat_dim: int = 128  # RepDistiller train_student.py `--feat_dim` default

    def __post_init__(self) -> None:
        check_range("cc.w_ce", self.w_ce, 0.0, None)
        check_range("cc.w_cc", self.w_cc, 0.0, None)
        check_range("cc.feat_dim", self.feat_dim, 1, 65536)


@register_method(
    "cc", paper="Peng et al. 2019, Correlation Congruence for Knowledge Distillation (ICCV)", params=CCParams()
)
class CC(Distiller):
    teacher_outputs = "logits + embedding (features: cached when they fit the cap)"
    param_group_modules = {"embed": "embed"}  # `--set group.embed.lr_scale=...` (kdbench.train.optim)

    def __init__(self, student: nn.Module, teacher: nn.Module, params: CCParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self._s_tap, self._t_tap, s_dim, t_dim = embedding_taps(student, teacher, ctx.in_chans, ctx.image_size)
        self.embed = CCEmbeds(s_dim, t_dim, params.feat_dim)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        e_s, e_t = self.embed.student(s.embedding), self.embed.teacher(t.embedding)
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
                          "cc": p.w_cc * cc_loss(e_s, e_t)}

    def describe(self) -> dict[str, Any]:
        return {"embed_dims": [self.embed.student.in_features, self.embed.teacher.in_features, self.params.feat_dim]}
