"""`cc`: correlation congruence (Peng, Jin, Liu, Li, Wu, Liu, Zhou, Zhang, ICCV 2019, "Correlation Congruence for
Knowledge Distillation", arXiv:1904.01802). Two forms, `cc.kernel`:

- `repdistiller` (default): RepDistiller's distiller_zoo/CC.py (the authors' code shared with the CRD authors),
  so that numbers compare with the CRD paper's tables:

      L = w_ce · CE(z_s, y) + w_cc · cc_loss(e_s(s), e_t(t))

  s, t: the pooled penultimate embeddings (the classifier inputs, RepDistiller's `feat[-1]`); e_s, e_t: a linear
  head each (RepDistiller's LinearEmbed, no normalisation) to a common `feat_dim`, both trained with the student
  in their own parameter group `embed` (`--set group.embed.lr_scale=...`). The teacher's head is trained too, as
  in the reference (its `trainable_list`), through the loss only: the teacher itself stays frozen. This code
  does not compute the paper's correlation matrices: it takes, for consecutive samples of the (shuffled) batch,
  the product of their absolute embedding differences (see :func:`cc_loss`).
- `rbf`: the paper's correlation congruence with the Gaussian RBF kernel approximated by its P-order Taylor
  expansion (`gamma`, `p_order`), as AberHu/Knowledge-Distillation-Zoo's kd_losses/cc.py, on s and t directly (no
  heads: B × B matrices need no common width; `feat_dim` is unused):

      L = w_ce · CE(z_s, y) + w_cc · rbf_cc_loss(s, t)

  That codebase weighs it with `--lambda_kd 100` (its CIFAR-10 script): set `--set cc.w_cc=100` with this form;
  the default 0.02 belongs to the RepDistiller form.

Defaults: RepDistiller's CIFAR-100 run (scripts/run_cifar_distill.sh, CC: `-a 0 -b 0.02`, CE weight `-r` 1) and
its `--feat_dim 128`: w_ce 1, w_cc 0.02, feat_dim 128; Knowledge-Distillation-Zoo's gamma 0.4, P 2 for `rbf`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.models.taps import embedding_taps
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


def rbf_correlation(emb: torch.Tensor, gamma: float, p_order: int) -> torch.Tensor:
    """C_ij = Σ_{p=0}^{P} e^{−2γ} (2γ)^p / p! · (ê_i · ê_j)^p,  ê = e / ‖e‖₂ (F.normalize, eps 1e-12).

    The P-order Taylor expansion of the Gaussian RBF kernel exp(−γ‖ê_i − ê_j‖²) = e^{−2γ} e^{2γ ê_i·ê_j} over the
    batch's unit embeddings (Peng et al. 2019, Eq. 8-9)."""
    e = F.normalize(emb.float().flatten(1), dim=1)
    sim = e @ e.t()
    corr = torch.zeros_like(sim)
    for p in range(p_order + 1):
        corr = corr + math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim.pow(p)
    return corr


def rbf_cc_loss(emb_student: torch.Tensor, emb_teacher: torch.Tensor, gamma: float, p_order: int) -> torch.Tensor:
    """(1/B²) ‖C_t − C_s‖²_F,  C from :func:`rbf_correlation`: the paper's correlation congruence (without its
    instance-congruence term), as Knowledge-Distillation-Zoo's CC (mse_loss over the B × B entries). Embedding
    widths may differ. Unweighted; float32; the teacher side carries no gradient."""
    with torch.autocast(emb_student.device.type, enabled=False):
        c_s = rbf_correlation(emb_student, gamma, p_order)
        with torch.no_grad():
            c_t = rbf_correlation(emb_teacher, gamma, p_order)
        return F.mse_loss(c_s, c_t)


KERNELS = ("repdistiller", "rbf")


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
    feat_dim: int = 128  # RepDistiller train_student.py `--feat_dim` default (kernel=repdistiller's heads)
    kernel: str = "repdistiller"  # or "rbf": the paper's Gaussian-RBF correlation (Knowledge-Distillation-Zoo)
    gamma: float = 0.4  # kernel=rbf: Knowledge-Distillation-Zoo train_kd.py `--gamma` default
    p_order: int = 2  # kernel=rbf: Knowledge-Distillation-Zoo train_kd.py `--P_order` default

    def __post_init__(self) -> None:
        check_range("cc.w_ce", self.w_ce, 0.0, None)
        check_range("cc.w_cc", self.w_cc, 0.0, None)
        check_range("cc.feat_dim", self.feat_dim, 1, 65536)
        if self.kernel not in KERNELS:
            raise UserError(f"unknown cc.kernel '{self.kernel}'; valid: {', '.join(KERNELS)}")
        check_range("cc.gamma", self.gamma, 0.0, 100.0, low_open=True)
        check_range("cc.p_order", self.p_order, 0, 20)


@register_method(
    "cc", paper="Peng et al. 2019, Correlation Congruence for Knowledge Distillation (ICCV)", params=CCParams()
)
class CC(Distiller):
    teacher_outputs = "logits + embedding (features: cached when they fit the cap)"
    param_group_modules = {"embed": "embed"}  # `--set group.embed.lr_scale=...` (kdbench.train.optim)

    def __init__(self, student: nn.Module, teacher: nn.Module, params: CCParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self._s_tap, self._t_tap, s_dim, t_dim = embedding_taps(student, teacher, ctx.in_chans, ctx.image_size)
        # Only RepDistiller's form has heads; the RBF correlation compares B × B matrices of the embeddings.
        self.embed = CCEmbeds(s_dim, t_dim, params.feat_dim) if params.kernel == "repdistiller" else None

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        if self.embed is None:
            cc = rbf_cc_loss(s.embedding, t.embedding, p.gamma, p.p_order)
        else:
            cc = cc_loss(self.embed.student(s.embedding), self.embed.teacher(t.embedding))
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels), "cc": p.w_cc * cc}

    def describe(self) -> dict[str, Any]:
        if self.embed is None:
            return {"kernel": "rbf"}
        return {"kernel": "repdistiller",
                "embed_dims": [self.embed.student.in_features, self.embed.teacher.in_features, self.params.feat_dim]}
