"""`dist`: distillation from a stronger teacher (Huang, You, Wang, Qian, Xu, NeurIPS 2022, "Knowledge
Distillation from A Stronger Teacher", arXiv:2205.10536), as in the authors' classification code
(hunto/DIST_KD links hunto/image_classification_sota, lib/models/losses/dist_kd.py).

With Y = softmax(Z / τ) of each model (B × C) and the Pearson correlation ρ(a, b) = cos(a − ā, b − b̄), where
cos(a, b) = a·b / (‖a‖‖b‖ + 1e-8) as in the reference:

    inter = τ² · (1 − mean_i ρ(Y^S_i,:, Y^T_i,:))          (each sample's distribution over the classes)
    intra = τ² · (1 − mean_c ρ(Y^S_:,c, Y^T_:,c))          (each class's probabilities over the batch)
    L = w_ce · CE(z_s, y) + w_inter · inter + w_intra · intra

The weights name what they weigh: the reference's `kd_loss_weight · β` is `w_inter` and `kd_loss_weight · γ` is
`w_intra`. Defaults are its CIFAR-100 config (configs/strategies/distill/dist_cifar.yaml: `kd: dist_t4`,
ori_loss_weight 1, kd_loss_weight 2, with DIST's β = γ = 1 in lib/models/losses/kd_loss.py): w_ce 1, w_inter 2,
w_intra 2, τ 4. (Its ImageNet config, resnet_dist.yaml, uses τ = 1.)

The intra-class term correlates columns over the batch: it depends on the batch, and in a data-parallel run on
each rank's batch (as in the reference, which does not gather). `dist.logit_std=true` standardizes both models'
logits first (methods/_logit_standardization.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench.core.errors import check_range
from kdbench.methods._logit_standardization import standardized_pair
from kdbench.train.method import Batch, Distiller, register_method

PEARSON_EPS = 1e-8  # the reference's cosine_similarity eps


def pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = PEARSON_EPS) -> torch.Tensor:
    """ρ of each row of `a` with the same row of `b`: cos(a − ā, b − b̄), eps added to the norms' product."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_relations(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(inter, intra), each τ² · (1 − mean ρ) on softmax(z / τ) (module docstring), unweighted, in float32."""
    t = temperature
    y_s = (student_logits.float() / t).softmax(dim=1)
    y_t = (teacher_logits.float() / t).softmax(dim=1)
    inter = 1.0 - pearson_rows(y_s, y_t).mean()
    intra = 1.0 - pearson_rows(y_s.t(), y_t.t()).mean()
    return t * t * inter, t * t * intra


@dataclass(frozen=True)
class DISTParams:
    w_ce: float = 1.0  # dist_cifar.yaml ori_loss_weight
    w_inter: float = 2.0  # kd_loss_weight 2 × β 1 (dist_cifar.yaml, kd_loss.py)
    w_intra: float = 2.0  # kd_loss_weight 2 × γ 1
    temperature: float = 4.0  # `kd: dist_t4` (dist_cifar.yaml)
    logit_std: bool = False  # logit standardization first (Sun et al. 2024), off in the DIST paper

    def __post_init__(self) -> None:
        check_range("dist.w_ce", self.w_ce, 0.0, None)
        check_range("dist.w_inter", self.w_inter, 0.0, None)
        check_range("dist.w_intra", self.w_intra, 0.0, None)
        check_range("dist.temperature", self.temperature, 0.0, 100.0, low_open=True)


@register_method("dist", paper="Huang et al. 2022, Knowledge Distillation from A Stronger Teacher (NeurIPS)",
                 params=DISTParams())
class DIST(Distiller):
    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        logits = self.student(batch.images)
        s, t = standardized_pair(logits, self.teacher_logits(batch), p.logit_std)
        inter, intra = dist_relations(s, t, p.temperature)
        return logits, {"ce": p.w_ce * self.cross_entropy(logits, batch.labels),
                        "inter": p.w_inter * inter, "intra": p.w_intra * intra}
