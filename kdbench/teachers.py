"""`create_teacher`: the Python face of the teacher zoo (train once, cache, verify, load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from .config import parse_set_options
from .data.registry import build_dataset, get_dataset_spec
from .engine import EngineSettings
from .environment import configure_threads, resolve_device
from .errors import UserError
from .progress import NULL_REPORTER, Reporter
from .resolve import TEACHER_SCOPES, resolve_teacher
from .teacher_zoo import TeacherZoo


def create_teacher(
    arch: str,
    dataset: str = "digits",
    *,
    epochs: int | None = None,
    seed: int = 0,
    sets: list[str] | None = None,
    zoo_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    reporter: Reporter = NULL_REPORTER,
) -> tuple[nn.Module, dict[str, Any]]:
    """The zoo's teacher `arch` for `dataset` (trained with the dataset's recipe if not cached) and its card.

    `sets` accepts the `data.*`, `teacher_recipe.*` and `teacher.*` scopes of `kdbench run --set`; the key is
    :func:`kdbench.resolve.resolve_teacher`'s, the one `kdbench run` looks up.
    """
    scoped = parse_set_options(sets)
    unknown = sorted(set(scoped) - set(TEACHER_SCOPES))
    if unknown:
        raise UserError(f"unknown --set scope '{unknown[0]}'. Valid: {', '.join(TEACHER_SCOPES)}")
    key = resolve_teacher(arch, dataset, epochs=epochs, seed=seed, sets=scoped)
    spec = get_dataset_spec(key.dataset)
    configure_threads()
    dev = resolve_device(device)
    data = build_dataset(key.dataset, spec.params.__class__(**key.data_params), data_root, key.recipe.augment)
    return TeacherZoo(zoo_dir, reporter).get_or_train(key, data, EngineSettings(dev))
