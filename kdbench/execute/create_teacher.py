"""`create_teacher`: the Python face of the teacher zoo (train once, cache, verify, load)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch.nn as nn

from kdbench.core.environment import configure_threads, resolve_device
from kdbench.core.errors import UserError
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.execute.folders import check_zoo_can_store
from kdbench.execute.model_probe import check_teacher_takes_data
from kdbench.execute.resolve import TEACHER_SCOPES, resolve_teacher
from kdbench.spec.scoped_sets import parse_set_options
from kdbench.teachers.zoo import TeacherZoo, training_data
from kdbench.train.engine import EngineSettings


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

    `sets` accepts the `data.*`, `teacher_recipe.*`, `teacher_data.*` and `teacher.*` scopes of `kdbench run --set`
    (`teacher_data.train_fraction=0.1`: the control teacher, trained on the 10 % a student's
    `data.train_fraction=0.1` draws); the key is :func:`kdbench.execute.resolve.resolve_teacher`'s, the one
    `kdbench run`
    looks up.
    """
    scoped = parse_set_options(sets)
    unknown = sorted(set(scoped) - set(TEACHER_SCOPES))
    if unknown:
        raise UserError(f"unknown --set scope '{unknown[0]}'. Valid: {', '.join(TEACHER_SCOPES)}")
    key = resolve_teacher(arch, dataset, epochs=epochs, seed=seed, sets=scoped)
    zoo = TeacherZoo(zoo_dir, reporter)
    check_zoo_can_store(zoo, key)  # one line before the data loads and the teacher trains, not a traceback after
    configure_threads()
    dev = resolve_device(device)
    data = training_data(key, data_root)
    check_teacher_takes_data(zoo, key, data)  # one line, not timm's traceback from its first training step
    return zoo.get_or_train(key, data, EngineSettings(dev))
