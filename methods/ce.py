"""`ce`: the student trained alone with cross-entropy — the baseline every KD table starts from.

The teacher zoo trains teachers through this same method, so teachers and students share one engine. Label
smoothing is the recipe's (`recipe.label_smoothing`), applied by :meth:`Distiller.cross_entropy` as in every
other method's CE term.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench.core.errors import check_range
from kdbench.train.method import Batch, Distiller, register_method


@dataclass(frozen=True)
class CEParams:
    w_ce: float = 1.0

    def __post_init__(self) -> None:
        check_range("ce.w_ce", self.w_ce, 0.0, None)


@register_method("ce", paper="— (student alone, cross-entropy on labels)", params=CEParams())
class CE(Distiller):
    needs_teacher = False

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(batch.images)
        return logits, {"ce": self.params.w_ce * self.cross_entropy(logits, batch.labels)}
