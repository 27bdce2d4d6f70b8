"""Checkpoints saved by the CRD codebase (RepDistiller), loaded into the matching `cifar_` architecture.

RepDistiller's training scripts save `torch.save({"model": state_dict, "epoch": ..., "best_acc": ...,
"optimizer": ...})`. Those files are pickles, and unpickling runs whatever code the file names, so they are
read only through `kdbench.core.safe_load.load_plain_checkpoint` (torch's weights-only unpickler), which
accepts tensors, numbers, strings and containers and refuses everything else. The `cifar_` models keep the
original state-dict keys, so the weights load as they are; a file for another architecture is reported with
the keys or shapes that differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdbench.core.errors import UserError
from kdbench.core.safe_load import load_plain_checkpoint
from kdbench.models.zoo import create_model


def read_crd_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The state dict of a CRD-codebase `.pth` and its other plain entries (epoch, best_acc, …, not the
    optimizer state). A bare state dict (no "model" entry) is accepted too."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no such checkpoint file: {path}")
    saved = load_plain_checkpoint(path)  # one line, never obeyed, for a crafted or foreign file
    nested = isinstance(saved.get("model"), dict)
    state = saved["model"] if nested else saved
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} holds no state dict (expected {{'model': state_dict, ...}} or a state dict)")
    if state and all(k.startswith("module.") for k in state):  # saved from nn.DataParallel
        state = {k.removeprefix("module."): v for k, v in state.items()}
    meta = {k: _plain(v) for k, v in saved.items() if k not in ("model", "optimizer")} if nested else {}
    return state, meta


def _plain(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value if isinstance(value, int | float | str | bool | None) else repr(value)[:80]


def state_dict_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """What keeps `state` from loading into `model` strictly (missing/unexpected keys, shapes), or None."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
              if k in state and state[k].shape != v.shape]
    problems = []
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                         ("shape mismatch (file vs model)", shapes)):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{len(items)} {label}: {', '.join(items[:3])}{more}")
    return "; ".join(problems) or None


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, arch: str) -> None:
    problem = state_dict_mismatch(model, state)
    if problem:
        raise UserError(f"{path} does not fit {arch}: {problem}")
    model.load_state_dict(state)


def load_crd_checkpoint(path: str | Path, arch: str, num_classes: int = 100) -> nn.Module:
    """The `cifar_` model `arch` (e.g. "cifar_resnet32x4") with the weights of a CRD-codebase `.pth`, in eval
    mode. Raises UserError for a file that is not a plain tensor checkpoint or does not fit `arch`."""
    state, _ = read_crd_checkpoint(path)
    model = create_model(arch, num_classes=num_classes)
    load_state_into(model, state, path, arch)
    return model.eval()
