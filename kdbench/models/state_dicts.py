"""Weight files from elsewhere → a plain state dict that loads into a kdbench model, or one line saying why not.

Files come in several wrappings: a bare state dict (timm's `save_file(model.state_dict())`, torchvision's
`.pth`), one nested under "state_dict" (timm's and Lightning's training checkpoints) or "model" (RepDistiller,
kdbench's own `checkpoint.pt`), keys prefixed "module." (saved from `nn.DataParallel`/DDP), or a kdbench
distiller's state where the student sits under "student." beside the method's own modules (a run's
`checkpoint.pt`). `unwrap_state_dict` peels those layers; `check_fits` names what keeps the result from loading
strictly into a model. Reading the file itself is `kdbench.core.safe_load`'s job: nothing in it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdbench.core.errors import UserError
from kdbench.core.safe_load import load_plain_weights
from kdbench.models.crd_checkpoint import state_dict_mismatch

# Entries under which training scripts nest the model's weights, in the order they are looked for.
NESTED_KEYS = ("state_dict", "model")
STUDENT_PREFIX = "student."  # a kdbench distiller's student (Distiller.student)


def unwrap_state_dict(saved: dict[str, Any], path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights inside `saved` (what the safe loader read from `path`), with wrappers and prefixes
    removed. A UserError naming `path` when there is no dict of tensors in it."""
    state: Any = saved
    for key in NESTED_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise UserError(f"{path} holds no state dict of tensors (expected the tensors themselves, or them "
                        f"under one of: {', '.join(NESTED_KEYS)})")
    if all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith(STUDENT_PREFIX) for k in state):  # a distiller: keep its student, drop its own modules
        state = {k.removeprefix(STUDENT_PREFIX): v for k, v in state.items() if k.startswith(STUDENT_PREFIX)}
    return state


def read_weights_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], str]:
    """The state dict in the weight file `path` (read by the safe loader), the file's other plain entries (e.g.
    RepDistiller's epoch and best_acc; never an optimizer state) and its format: "safetensors",
    "crd-codebase" (a torch file with the weights under "model" beside an epoch) or "state-dict"."""
    if not path.is_file():
        raise UserError(f"no such checkpoint file: {path}")
    saved = load_plain_weights(path)  # one line, never obeyed, for a crafted or foreign file
    state = unwrap_state_dict(saved, path)
    if path.suffix == ".safetensors":
        return state, {}, "safetensors"
    nested = any(isinstance(saved.get(k), dict) for k in NESTED_KEYS)
    meta = {k: _plain(v) for k, v in saved.items() if k not in ("optimizer", *NESTED_KEYS)} if nested else {}
    crd = isinstance(saved.get("model"), dict) and "epoch" in saved
    return state, meta, "crd-codebase" if crd else "state-dict"


def _plain(value: Any) -> Any:
    """A metadata entry as JSON: numbers and strings as they are, a one-element tensor as its number."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value if isinstance(value, int | float | str | bool | None) else repr(value)[:80]


def _kind(dtype: torch.dtype) -> str:
    if dtype.is_floating_point:
        return "floating"
    return "complex" if dtype.is_complex else "boolean" if dtype == torch.bool else "integer"


def dtype_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """The tensors of `state` whose dtype is of another kind (floating, integer, boolean) than the model's, or
    None. `load_state_dict` casts them without a word: float32 bytes whose header says int32 load as huge integer
    weights, a float `num_batches_tracked` as a count. Another width of the same kind (float16 weights for a
    float32 model) casts exactly and is accepted."""
    wrong = [(k, state[k].dtype, v.dtype) for k, v in model.state_dict().items()
             if k in state and _kind(state[k].dtype) != _kind(v.dtype)]
    if not wrong:
        return None
    key, theirs, ours = wrong[0]
    more = f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""
    return (f"tensor {key} is {str(theirs).removeprefix('torch.')} in the file, the model's is "
            f"{str(ours).removeprefix('torch.')}{more}")


def check_fits(model: nn.Module, state: dict[str, torch.Tensor], what: str, num_classes: int | None = None) -> None:
    """Raise a one-line UserError when `state` does not load strictly into `model`: `what` (e.g. "x.pth does
    not fit resnet18") followed by the first missing/unexpected keys and shapes, or the first tensor of another
    dtype kind. A classifier whose class count differs from `num_classes` is named first (the commonest cause:
    ImageNet weights for a 10-class dataset)."""
    problem = state_dict_mismatch(model, state)
    if problem is None:
        problem = dtype_mismatch(model, state)
        if problem is not None:
            raise UserError(f"{what}: {problem}")
        return
    if num_classes is not None:
        for key, value in reversed(model.state_dict().items()):  # the classifier comes last
            theirs = state.get(key)
            if (theirs is not None and value.ndim >= 1 and theirs.ndim == value.ndim and value.shape[0] == num_classes
                    and theirs.shape[0] != num_classes and theirs.shape[1:] == value.shape[1:]):
                layer = key.rpartition(".")[0] or key
                problem = f"its classifier {layer} has {theirs.shape[0]} classes, not {num_classes}; {problem}"
                break
    raise UserError(f"{what}: {problem}")
