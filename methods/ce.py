"""`ce`: the student trained alone with cross-entropy — the baseline every KD table starts from.

The teacher zoo trains teachers through this same method, so teachers and students share one engine.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdbench.errors import check_range
from kdbench.method import Batch, Distiller, register_method


@dataclass(frozen=True)
class CEParams:
    w_ce: float = 1.0
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        check_range("ce.w_ce", self.w_ce, 0.0, None)
        check_range("ce.label_smoothing", self.label_smoothing, 0.0, 1.0)


@register_method("ce", paper="— (student alone, cross-entropy on labels)", params=CEParams())
class CE(Distiller):
    needs_teacher = False

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(batch.images)
        ce = F.cross_entropy(logits, batch.labels, label_smoothing=self.params.label_smoothing)
        return logits, {"ce": self.params.w_ce * ce}
