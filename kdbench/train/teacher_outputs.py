"""Where a Distiller's teacher outputs come from when they are not simply recomputed: the contract between the
train layer and the teacher-output cache (kdbench.teachers.output_cache.TeacherOutputCache implements it).

One object for the cache's whole life in a run (issue #34: it was split between Distiller.begin_epoch, the
runner's epoch callback and the record): the runner builds it and sets it as the Distiller's `teacher_cache`;
methods reach it only through Distiller.teacher_logits / teacher_features; the engine calls its two epoch hooks
around each epoch's training steps. It is typed here so that the train layer holds nothing untyped from the
teachers layer, which it never imports.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from kdbench.models.features import Features, FeatureTap


@runtime_checkable
class TeacherOutputs(Protocol):
    def features(self, teacher: torch.nn.Module, tap: FeatureTap | None, images: torch.Tensor,
                 index: torch.Tensor) -> Features:
        """The teacher's outputs for a batch (samples `index` of the training split) as `tap` takes them (None:
        logits only): bit-identical to running `tap` (or the teacher) on `images`."""
        ...

    def begin_epoch(self, epoch: int) -> None:
        """Before the epoch's first batch (1-based): the outputs that follow are this epoch's."""
        ...

    def end_epoch(self) -> None:
        """After the epoch's last training batch: keep what it computed (the cache writes its entries)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What the run record says of it (`teacher_cache`)."""
        ...
