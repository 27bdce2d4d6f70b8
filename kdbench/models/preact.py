"""Pre-activation stage outputs (the residual sum before a stage's last ReLU) and the BatchNorm that feeds them, by
hooks — never by rewriting the model.

OFD (Heo et al. 2019) compares pre-ReLU maps, and takes its margin from the BN before that ReLU; ReviewKD's
teacher side is pre-ReLU too (mdistiller's `preact_feats`). Which module holds that point depends on the family:

- kdbench's CIFAR networks (kdbench.models.cifar) list the points in `preact_feature_info` (an Identity `preact`
  module on the residual sum of each stage's last block): a forward hook on it. The BN is the last block's
  `bn2` (basic block) or `bn3` (bottleneck), as RepDistiller's / mdistiller's `get_bn_before_relu`.
- timm's ResNet family (`timm.models.resnet.ResNet`: resnet*, wide_resnet*, resnext*, ...): a forward *pre*-hook
  on the final activation of each stage's last block (`act2` of a BasicBlock, `act3` of a Bottleneck), whose
  input is the residual sum; its BN is `bn2` / `bn3`. timm's ReLUs run in place, so the hook keeps a clone.

Index 0 (the stem) is its post-activation output in both, as mdistiller's `preact_feats[0]`. Other families have
no such point (a ViT has no ReLU after a residual sum; MobileNetV2's stage outputs are linear already): asking
for one raises ValueError naming the families that have them; the methods turn it into their one-line refusal.

The tap's stage ids are strings (`"2.preact"`), not the ints of kdbench.models.taps.IntermediateTap: the
teacher-output cache names what it stores after the stage ids (`stage2.preact`) in a namespace shared by every
method of a sweep, so a pre-activation map can never be served where another method stored the post-ReLU one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from kdbench.models.features import Features, FeatureTap, num_stages, stage_modules
from kdbench.models.taps import IntermediateTap

PREACT_FAMILIES = "kdbench's CIFAR networks and timm's ResNet family"
BN_FAMILIES = "kdbench's CIFAR ResNets, WRNs, VGGs and MobileNetV2, and timm's ResNet family"


def preact_id(stage: int) -> str:
    """The key of stage `stage`'s pre-activation map in a :class:`PreactTap`'s Features.stages."""
    return f"{stage}.preact"


@dataclass(frozen=True)
class PreactPoint:
    module: str  # the hooked module's name
    pre_hook: bool  # True: its input is the pre-activation map (timm's in-place act); False: its output
    bn: nn.BatchNorm2d | None  # the BN whose output (plus the shortcut) is the map; None for the stem


def _bn_feeding(point: nn.Module, parent: nn.Module | None) -> nn.BatchNorm2d | None:
    """The BN whose output is a CIFAR network's pre-activation point, as RepDistiller's `get_bn_before_relu`:
    the point itself (WRN: the next block's `bn1`), the last layer of the point (VGG's block, MobileNetV2's last
    inverted residual's projection BN), or the `bn3` / `bn2` of the residual block the `preact` marker sits in
    (ResNets). None where there is none (ShuffleNets: RepDistiller's OFD refuses them too)."""
    if isinstance(point, nn.BatchNorm2d):
        return point
    last = list(point.modules())[-1]
    if isinstance(last, nn.BatchNorm2d) and not isinstance(point, nn.Identity):
        return last
    if isinstance(point, nn.Identity) and parent is not None and type(parent).__name__ in ("BasicBlock",
                                                                                           "Bottleneck"):
        bn = getattr(parent, "bn3", None) or getattr(parent, "bn2", None)
        return bn if isinstance(bn, nn.BatchNorm2d) else None
    return None


def _cifar_points(model: nn.Module) -> list[PreactPoint]:
    modules = dict(model.named_modules())
    points = []
    for sid, info in enumerate(model.preact_feature_info):
        name = info["module"]
        bn = _bn_feeding(modules[name], modules.get(name.rpartition(".")[0])) if sid > 0 else None
        points.append(PreactPoint(name, False, bn))
    return points


def _timm_resnet_points(model: nn.Module) -> list[PreactPoint]:
    modules = dict(model.named_modules())
    points = []
    for sid, (name, _) in enumerate(stage_modules(model)):
        if sid == 0:
            points.append(PreactPoint(name, False, None))
            continue
        block = modules[name][-1]  # the stage's last block
        act, bn = ("act3", block.bn3) if hasattr(block, "act3") else ("act2", block.bn2)
        points.append(PreactPoint(f"{name}.{len(modules[name]) - 1}.{act}", True, bn))
    return points


def preact_points(model: nn.Module) -> list[PreactPoint]:
    """Where each `feature_info` stage's pre-activation map is (index 0: the stem's output), with its BN.
    ValueError for a model of another family."""
    if hasattr(model, "preact_feature_info"):
        return _cifar_points(model)
    from timm.models.resnet import ResNet

    if isinstance(model, ResNet):
        return _timm_resnet_points(model)
    raise ValueError(f"{type(model).__name__} has no pre-activation stage outputs that kdbench can hook; they are "
                     f"available for {PREACT_FAMILIES}")


def bn_before_relu(model: nn.Module, stages: Sequence[int]) -> list[nn.BatchNorm2d]:
    """The BN feeding each of `stages`' pre-activation maps (mdistiller's `get_bn_before_relu`); ValueError where a
    stage has none (the CIFAR ShuffleNets, whose last block ends in a concatenation or a sum of two branches)."""
    points = preact_points(model)
    bns = []
    for sid in stages:
        if points[sid].bn is None:
            raise ValueError(f"{type(model).__name__} stage {sid} ({points[sid].module}) has no BN right before its "
                             f"last activation; BN statistics there are available for {BN_FAMILIES}")
        bns.append(points[sid].bn)
    return bns


class PreactTap:
    """Pre-activation stage maps (keys :func:`preact_id`) by hooks on the points :func:`preact_points` finds, plus the
    logits and, with `embedding=True`, the pooled embedding from an :class:`~kdbench.models.taps.IntermediateTap`
    on the same forward (asked for no stage, so the forward is the plain `model(x)`). The one pre-ReLU tap of the
    methods (ab, ofd, reviewkd); it works wherever an IntermediateTap goes (the teacher-output cache too)."""

    def __init__(self, model: nn.Module, stages: Sequence[int] = (), embedding: bool = False) -> None:
        points = preact_points(model)  # ValueError for a family without pre-activation points: nothing hooked yet
        n = num_stages(model)
        for sid in stages:
            if not -n <= sid < n:
                raise ValueError(f"stage {sid} out of range: {type(model).__name__} has {n} stages")
        self.model = model
        self.want_embedding = embedding
        self._base = IntermediateTap(model, embedding=embedding)
        self._captured: dict[str, torch.Tensor] = {}
        self._handles: list = []
        modules = dict(model.named_modules())
        self.stage_ids = []
        for sid in stages:
            sid = sid % n
            key = preact_id(sid)
            self.stage_ids.append(key)
            point = points[sid]
            module = modules[point.module]
            if point.pre_hook:
                self._handles.append(module.register_forward_pre_hook(self._input_hook(key)))
            else:
                self._handles.append(module.register_forward_hook(self._output_hook(key)))

    def _input_hook(self, key: str):
        def hook(module: nn.Module, inputs: tuple) -> None:
            self._captured[key] = inputs[0].clone()  # the activation runs in place after this hook

        return hook

    def _output_hook(self, key: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            self._captured[key] = output

        return hook

    def __call__(self, x: torch.Tensor) -> Features:
        self._captured = {}
        f = self._base(x)
        return Features(f.logits, dict(self._captured), f.embedding)

    def remove(self) -> None:
        self._base.remove()
        for h in self._handles:
            h.remove()
        self._handles = []

    # FeatureTap's eval-mode probe: it needs only `model` and a call.
    probe = FeatureTap.probe
