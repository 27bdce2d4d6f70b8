"""One feature tap for any model: timm's `forward_intermediates` where a model has it, forward hooks otherwise.

:class:`IntermediateTap` is a drop-in replacement for :class:`kdbench.models.features.FeatureTap` (the same
`model`, `stage_ids`, `want_embedding`, `__call__(x) -> Features`, `probe()` and `remove()`), so the teacher-output
cache and `Distiller.teacher_features` call it the same way. What it adds: every stage map comes back as
N × C × H × W whatever the family —

- timm models with `forward_intermediates` (timm ≥ 1.0: ResNet, MobileNet/EfficientNet, ConvNeXt, ViT/DeiT, Swin,
  MLP-Mixer, …) are run through it with `output_fmt="NCHW"`: a ViT's or Mixer's token sequence comes back as a
  C × H × W map of its patch grid with the prefix tokens (class, distillation, register) dropped, Swin's
  channels-last maps channels-first. Its stage indices are the model's `feature_info` indices (timm's own
  `features_only` getter relies on that correspondence). The logits are `forward_head` of its final features:
  bit for bit `model(x)` for every family above (tests/test_taps.py checks it per family, in eval and train mode).
- other models (kdbench's own CIFAR architectures, the GNN student) by forward hooks on the `feature_info`
  modules, exactly as FeatureTap: their outputs as the module returns them (a CIFAR stage is a map already; the
  GNN's hidden layer stays (B, D), which map methods refuse).

The embedding is the classifier's input, read by a forward pre-hook during the one head pass (FeatureTap's
definition). It equals `forward_head(x, pre_logits=True)` (tests/test_taps.py checks it per family), but a
second head pass would draw a head dropout twice in training mode: a different random stream from `model(x)`.
Models with two classifiers (a distilled DeiT, LeViT, EfficientFormer: `get_classifier()` is a pair) have no one
classifier input: theirs is `forward_head(x, pre_logits=True)`, a second head pass.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from kdbench.core.errors import UserError
from kdbench.models.features import Features, FeatureTap, stage_modules

INTERMEDIATES = "forward_intermediates"
HOOKS = "hooks"


def tap_mode(model: nn.Module) -> str:
    """How :class:`IntermediateTap` reads `model`'s stages: :data:`INTERMEDIATES` when it has timm's
    `forward_intermediates` (taking `output_fmt`) and `forward_head`, else :data:`HOOKS`."""
    intermediates = getattr(model, "forward_intermediates", None)
    if not callable(intermediates) or not callable(getattr(model, "forward_head", None)):
        return HOOKS
    if "output_fmt" not in inspect.signature(intermediates).parameters:
        return HOOKS
    return INTERMEDIATES


class IntermediateTap:
    """Runs a model once and returns its logits, the chosen stage outputs (N × C × H × W wherever the model has
    `forward_intermediates`) and the pre-logits embedding. A drop-in for FeatureTap.

    >>> tap = IntermediateTap(model, stages=[2], embedding=True)
    >>> f = tap(x)   # f.logits, f.stages[2] (B, C, H, W), f.embedding (B, D)
    """

    def __init__(self, model: nn.Module, stages: Sequence[int] = (), embedding: bool = False) -> None:
        self.model = model
        self.stage_ids = list(stages)
        self.want_embedding = embedding
        self.mode = tap_mode(model)
        self._embedding: torch.Tensor | None = None
        self._handles: list = []
        self._hooks: FeatureTap | None = None
        if self.mode == HOOKS:
            self._hooks = FeatureTap(model, stages, embedding)  # raises FeatureTap's errors
            return
        n = len(stage_modules(model)) if self.stage_ids else 0
        for sid in self.stage_ids:
            if not -n <= sid < n:
                raise ValueError(f"stage {sid} out of range: {type(model).__name__} has {n} stages")
        # stage id as asked (negative ids kept, as FeatureTap keys them) → non-negative feature_info index
        self._index = {sid: sid % n for sid in self.stage_ids} if n else {}
        # Two classifiers (a distilled DeiT's, LeViT's, EfficientFormer's head and head_dist): no one classifier
        # input to hook; the embedding is forward_head's pre-logits then (their inputs averaged), read by a second
        # head pass (in training mode it draws a head dropout again, so only these models take that path).
        self._pre_logits = False
        if embedding:
            head = model.get_classifier()
            if isinstance(head, nn.Identity):
                raise ValueError("model has no classifier to read the embedding from")
            if isinstance(head, nn.Module):
                self._handles.append(head.register_forward_pre_hook(self._embedding_hook))
            else:
                self._pre_logits = True

    def _embedding_hook(self, module: nn.Module, inputs: tuple) -> None:
        x = inputs[0]
        self._embedding = x.flatten(1) if x.dim() > 2 else x

    def __call__(self, x: torch.Tensor) -> Features:
        if self._hooks is not None:
            return self._hooks(x)
        self._embedding = None
        if not self.stage_ids and not self._pre_logits:  # nothing to tap but the head: the plain forward
            logits = self.model(x)
            return Features(logits, {}, self._embedding)
        indices = sorted(set(self._index.values()))
        if indices:
            final, intermediates = self.model.forward_intermediates(x, indices=indices, output_fmt="NCHW")
        else:
            final, intermediates = self.model.forward_features(x), []
        by_index = dict(zip(indices, intermediates, strict=True))
        logits = self.model.forward_head(final)
        if self._pre_logits:
            self._embedding = self.model.forward_head(final, pre_logits=True)
        return Features(logits, {sid: by_index[i] for sid, i in self._index.items()}, self._embedding)

    def remove(self) -> None:
        if self._hooks is not None:
            self._hooks.remove()
        for h in self._handles:
            h.remove()
        self._handles = []

    # Shapes, for methods that size their extra modules (regressors, embed heads) before training: FeatureTap's
    # eval-mode probe, which needs only `model` and a call.
    probe = FeatureTap.probe


@dataclass(frozen=True)
class StageInfo:
    index: int  # feature_info index (what fitnet.hint_stage, at.pairs name)
    module: str  # the feature_info module
    shape: tuple[int, ...]  # per sample: (C, H, W) for a map, (D,) for a stage without one (the GNN's hidden layer)
    stride: float | None  # image_size / H; None without a map

    @property
    def channels(self) -> int:
        return self.shape[0]


@dataclass(frozen=True)
class ModelStages:
    stages: list[StageInfo]
    embedding_width: int | None  # the classifier's input width; None for a model without a classifier
    mode: str  # INTERMEDIATES or HOOKS: how the stages were read


@torch.no_grad()
def stage_info(model: nn.Module, in_chans: int, image_size: int) -> ModelStages:
    """Every `feature_info` stage of `model` as :class:`IntermediateTap` returns it for one `image_size` input
    (shape, stride = image_size / H, channels) and its embedding width, from one eval-mode probe of two images."""
    infos = stage_modules(model)
    has_head = not isinstance(model.get_classifier(), nn.Identity) if hasattr(model, "get_classifier") else False
    tap = IntermediateTap(model, stages=range(len(infos)), embedding=has_head)
    try:
        f = tap.probe(torch.zeros(2, in_chans, image_size, image_size))
    finally:
        tap.remove()
    stages = []
    for sid, (module, _) in enumerate(infos):
        shape = tuple(f.stages[sid].shape[1:])
        stride = image_size / shape[1] if len(shape) == 3 else None
        stages.append(StageInfo(sid, module, shape, stride))
    width = f.embedding.shape[1] if f.embedding is not None else None
    return ModelStages(stages, width, tap.mode)


def pair_stages(n_teacher_stages: int, n_student_stages: int,
                student_stages: Sequence[int]) -> list[tuple[int, int]]:
    """(student stage, teacher stage) pairs: each student stage with the teacher stage at the same relative depth.

    Stage i of n ends a fraction (i + 1) / n of the network's stages, so student stage s (of n_s) pairs with the
    teacher stage t (of n_t) whose fraction is nearest, halves rounded up:

        t = round_half_up((s + 1) · n_t / n_s) − 1, at least 0

    With equal counts every stage pairs with its own index; the last stage always pairs with the last. E.g. a
    ResNet-18 student (5 stages: stem, layer1 … layer4) under a 12-block ViT teacher: 0→1, 1→4, 2→6, 3→9, 4→11;
    under a 4-stage ConvNeXt: 0→0, 1→1, 2→1, 3→2, 4→3. Negative student stages count from the end (as
    feature_info indices do); pairs are returned in the order of `student_stages` with the student stage as given.
    """
    for what, n in (("teacher", n_teacher_stages), ("student", n_student_stages)):
        if n < 1:
            raise UserError(f"the {what} has {n} stages: stage pairing needs at least one")
    pairs = []
    for s in student_stages:
        if not -n_student_stages <= s < n_student_stages:
            raise UserError(f"student stage {s} is out of range; allowed: [{-n_student_stages}, "
                            f"{n_student_stages - 1}] (feature_info indices)")
        depth = s % n_student_stages + 1
        # round_half_up(depth · n_t / n_s) in integers: floor((2 · depth · n_t + n_s) / (2 · n_s))
        t = (2 * depth * n_teacher_stages + n_student_stages) // (2 * n_student_stages) - 1
        pairs.append((s, max(t, 0)))
    return pairs


def stage_shapes(model: nn.Module, in_chans: int, image_size: int) -> dict[int, tuple[int, ...]]:
    """Every `feature_info` stage's shape without the batch dimension, as :class:`IntermediateTap` returns it
    (:func:`stage_info`): (C, H, W) for a map, token models included; (D,) for a stage without one (the GNN
    student's hidden layer). Methods that compare maps pair stages and refuse pairs that cannot carry a signal
    from it before training starts."""
    return {s.index: s.shape for s in stage_info(model, in_chans, image_size).stages}


def embedding_taps(student: nn.Module, teacher: nn.Module, in_chans: int,
                   image_size: int) -> tuple[IntermediateTap, IntermediateTap, int, int]:
    """Embedding taps on student and teacher and their embedding widths (read from one eval-mode probe): what a
    method that heads both embeddings into a common space (CRD, HKD, CC) builds its heads from."""
    s_tap, t_tap = IntermediateTap(student, embedding=True), IntermediateTap(teacher, embedding=True)
    example = torch.zeros(2, in_chans, image_size, image_size)
    return s_tap, t_tap, s_tap.probe(example).embedding.shape[1], t_tap.probe(example).embedding.shape[1]
