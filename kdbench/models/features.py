"""Intermediate features of any model by forward hooks — never by rewriting the model.

Stage outputs come from the modules that timm lists in `model.feature_info` (for a ResNet: index 0 the stem,
1..4 the four stages, so "stage 2" is `layer2`, the FitNet hint of RepDistiller). The pooled embedding is the
input of the classifier (`model.get_classifier()`): the penultimate representation that RKD and CRD use. Custom
models (the GNN student) expose the same two conventions.

The methods and the teacher-output cache tap through kdbench.models.taps.IntermediateTap, which falls back to this
hooks tap for models without timm's `forward_intermediates` (kdbench's CIFAR networks, the GNN student); the
shape helpers the methods size their modules from (`stage_shapes`, `embedding_taps`) live beside it there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass
class Features:
    logits: torch.Tensor
    stages: dict[int, torch.Tensor]  # stage index → output map (only the stages asked for)
    embedding: torch.Tensor | None  # (B, D) input of the classifier


def stage_modules(model: nn.Module) -> list[tuple[str, dict]]:
    info = getattr(model, "feature_info", None)
    if info is None:
        raise ValueError(f"{type(model).__name__} has no feature_info: stage features are unavailable")
    return [(f["module"], f) for f in info]


def num_stages(model: nn.Module) -> int:
    return len(stage_modules(model))


class FeatureTap:
    """Runs a model once and returns its logits, the chosen stage outputs and the pre-logits embedding.

    >>> tap = FeatureTap(model, stages=[2], embedding=True)
    >>> f = tap(x)   # f.logits, f.stages[2], f.embedding
    """

    def __init__(self, model: nn.Module, stages: Sequence[int] = (), embedding: bool = False) -> None:
        self.model = model
        self.stage_ids = list(stages)
        self.want_embedding = embedding
        self._captured: dict[int, torch.Tensor] = {}
        self._embedding: torch.Tensor | None = None
        self._handles = []
        modules = dict(model.named_modules())
        listed = stage_modules(model) if self.stage_ids else []
        for sid in self.stage_ids:
            if not -len(listed) <= sid < len(listed):
                raise ValueError(f"stage {sid} out of range: {type(model).__name__} has {len(listed)} stages")
            name = listed[sid][0]
            self._handles.append(modules[name].register_forward_hook(self._stage_hook(sid)))
        if embedding:
            head = model.get_classifier()
            if isinstance(head, nn.Identity):
                raise ValueError("model has no classifier to read the embedding from")
            self._handles.append(head.register_forward_pre_hook(self._embedding_hook))

    def _stage_hook(self, sid: int):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self._captured[sid] = output

        return hook

    def _embedding_hook(self, module: nn.Module, inputs: tuple) -> None:
        x = inputs[0]
        self._embedding = x.flatten(1) if x.dim() > 2 else x

    def __call__(self, x: torch.Tensor) -> Features:
        self._captured = {}
        self._embedding = None
        logits = self.model(x)
        return Features(logits, dict(self._captured), self._embedding)

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    # Shapes, for methods that size their extra modules (regressors, embed heads) before training.
    @torch.no_grad()
    def probe(self, example: torch.Tensor) -> Features:
        was_training = self.model.training
        self.model.eval()
        try:
            return self(example)
        finally:
            self.model.train(was_training)
