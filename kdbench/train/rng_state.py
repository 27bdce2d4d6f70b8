"""The global RNG streams (python, numpy, torch CPU and CUDA) as plain data, for a step-level checkpoint.

Every epoch reseeds them from (seed, epoch) (kdbench.train.engine), so an epoch-boundary checkpoint needs none of
them; a checkpoint inside an epoch holds them as they were after its last step (dropout masks and CRD's negatives
draw from them), and a resumed run restores them before its next step. Plain data only (tensors, numbers, lists):
the checkpoint is read with the safe loader.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def capture() -> dict[str, Any]:
    version, words, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": [version, list(words), gauss],
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore(state: dict[str, Any]) -> None:
    version, words, gauss = state["python"]
    random.setstate((version, tuple(words), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def is_valid(state: Any) -> bool:
    """Whether `state` has the shape :func:`capture` gives (a checkpoint's, checked before anything is restored)."""
    try:
        version, words, _ = state["python"]
        kind, keys, *_ = state["numpy"]
        return (isinstance(words, list) and len(words) == len(random.getstate()[1]) and kind == "MT19937"
                and isinstance(keys, torch.Tensor) and keys.numel() == 624
                and isinstance(state["torch"], torch.Tensor) and state["torch"].dtype == torch.uint8)
    except (TypeError, KeyError, ValueError):
        return False
