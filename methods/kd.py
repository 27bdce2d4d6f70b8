"""`kd`: vanilla knowledge distillation (Hinton, Vinyals, Dean 2015, "Distilling the Knowledge in a Neural
Network", arXiv:1503.02531).

    L = w_ce · CE(z_s, y) + w_kd · T² · KL( softmax(z_t / T) ‖ softmax(z_s / T) )

KL summed over classes and averaged over the batch; T² keeps the gradient scale independent of T. Defaults
are the CIFAR values of RepDistiller/mdistiller: T = 4, w_ce = 0.1, w_kd = 0.9. `kd.logit_std=true` standardizes
both models' logits first, in the KD term only (Sun et al. 2024; methods/_logit_standardization.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdbench.core.errors import check_range
from kdbench.methods._logit_standardization import standardized_pair
from kdbench.train.method import Batch, Distiller, register_method


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · KL(softmax(z_t/T) ‖ softmax(z_s/T)), summed over classes, averaged over the batch (unweighted).

    Hinton et al. 2015. Computed in float32 so that AMP does not underflow the soft targets.
    """
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * t * t


@dataclass(frozen=True)
class KDParams:
    temperature: float = 4.0
    w_ce: float = 0.1
    w_kd: float = 0.9
    logit_std: bool = False  # standardize both models' logits first (Sun et al. 2024; _logit_standardization.py)

    def __post_init__(self) -> None:
        check_range("kd.temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("kd.w_ce", self.w_ce, 0.0, None)
        check_range("kd.w_kd", self.w_kd, 0.0, None)


@register_method(
    "kd", paper="Hinton et al. 2015, Distilling the Knowledge in a Neural Network", params=KDParams()
)
class KD(Distiller):
    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        logits = self.student(batch.images)
        s, t = standardized_pair(logits, self.teacher_logits(batch), p.logit_std)
        return logits, {
            "ce": p.w_ce * self.cross_entropy(logits, batch.labels),
            "kd": p.w_kd * kd_loss(s, t, p.temperature),
        }
