"""`create_teacher`: the Python face of the teacher zoo (train once, cache, verify, load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from .config import apply_overrides, convert_free_kwargs, parse_set_options
from .data.registry import build_dataset, get_dataset_spec
from .engine import EngineSettings
from .environment import configure_threads, resolve_device
from .errors import UserError, unknown_name
from .models.zoo import is_model, list_architectures
from .progress import NULL_REPORTER, Reporter
from .teacher_zoo import TeacherKey, TeacherZoo


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

    `sets` accepts the `data.*`, `teacher_recipe.*` and `teacher.*` scopes of `kdbench run --set`.
    """
    if not is_model(arch):
        raise unknown_name("teacher architecture", arch, list_architectures(), max_listed=30)
    spec = get_dataset_spec(dataset)
    scoped = parse_set_options(sets)
    data_params = apply_overrides(spec.params, scoped.pop("data", {}), "data")
    recipe = apply_overrides(spec.recipe.replace(epochs=epochs), scoped.pop("teacher_recipe", {}), "teacher_recipe")
    options = convert_free_kwargs(scoped.pop("teacher", {}))
    if scoped:
        raise UserError(f"unknown --set scope '{next(iter(scoped))}'. Valid: data, teacher_recipe, teacher")
    import dataclasses

    key = TeacherKey(arch, dataset, recipe, seed, dataclasses.asdict(data_params), options)
    configure_threads()
    dev = resolve_device(device)
    data = build_dataset(dataset, data_params, data_root, recipe.augment)
    return TeacherZoo(zoo_dir, reporter).get_or_train(key, data, EngineSettings(dev))
