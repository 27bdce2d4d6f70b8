"""A model built and run once on a blank image of the run's data before any record is written.

timm checks a model's options and input size only when it is built or first called: a ViT built for 32 px fed
digits' 16 px images, `--set teacher.num_heads=3` that does not divide embed_dim, a patch larger than the image.
Met mid-run, each was a timm traceback and a failed run folder; probed here, it is one line naming the model's
input size, the data's and the `--set` that fixes it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from kdbench.core.errors import UserError, shortened
from kdbench.data.registry import DataSplits
from kdbench.execute.build import build_student, teacher_key
from kdbench.models.zoo import create_model
from kdbench.spec.config import RunConfig
from kdbench.teachers.zoo import CARD, TeacherKey, TeacherZoo

# What timm raises for options or inputs a model cannot take (asserts, shape checks, a zero patch size, a string
# where a number goes); a UserError kdbench raised itself passes through as it is.
_MODEL_ERRORS = (AssertionError, RuntimeError, ValueError, TypeError, ZeroDivisionError, IndexError, KeyError)


def check_model_takes_data(role: str, arch: str, options: dict[str, Any], dataset: str, data: DataSplits,
                           build: Callable[[], nn.Module]) -> None:
    """Build `arch` (the run's `role`: "teacher" or "student", with its `--set role.*` `options`) with `build` and
    run it on a blank image of `data`'s shape; a one-line UserError when either fails. The global RNG is left
    as it was: the run's numbers do not change."""
    with torch.random.fork_rng(devices=[]):
        try:
            model = build()
        except _MODEL_ERRORS as e:
            raise UserError(f"--{role} {arch} cannot be built with {_options_text(role, options)}: {_first_line(e)}"
                            f"; change {'them' if options else f'--{role}'}") from None
        example = torch.zeros(1, data.in_chans, data.image_size, data.image_size)  # eval mode: one will do
        try:
            with torch.no_grad():
                model.eval()(example)
        except _MODEL_ERRORS as e:
            size = f"{data.image_size}×{data.image_size}"
            raise UserError(f"--{role} {arch} does not take the {size} images of dataset {dataset} "
                            f"({_first_line(e)}){_built_for(model)}: {_fix(role, model, data.image_size)}") from None


def _options_text(role: str, options: dict[str, Any]) -> str:
    if not options:
        return "its default options"
    return " ".join(f"--set {role}.{k}={v}" for k, v in sorted(options.items()))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return shortened(text.splitlines()[0], 160) if text else type(e).__name__


def _built_for(model: nn.Module) -> str:
    """"; it is built for 32×32" for a model with a fixed input size (a patch embedding's); "" otherwise."""
    size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if isinstance(size, tuple | list) and len(size) == 2:
        return f"; it is built for {size[0]}×{size[1]}"
    return ""


def _fix(role: str, model: nn.Module, image_size: int) -> str:
    embed = getattr(model, "patch_embed", None)
    if embed is None:
        return f"it needs larger images than {image_size}×{image_size}: choose another --{role} or dataset"
    if tuple(getattr(embed, "img_size", ()) or ()) == (image_size, image_size):  # the size fits, the patch not
        return f"choose a --set {role}.patch_size that divides {image_size}"
    return f"build it for that size with --set {role}.img_size={image_size}"


def check_run_models(config: RunConfig, data: DataSplits, zoo_dir: str | Path | None) -> None:
    """The run's zoo teacher and its student, each probed by :func:`check_model_takes_data`. A given teacher (a
    file, timm's weights, a run's student) is loaded and evaluated on the data before any record is written
    already."""
    if config.teacher is not None and not config.teacher_ckpt_sha256 and not config.teacher_run:
        check_teacher_takes_data(TeacherZoo(zoo_dir), teacher_key(config), data)
    assert config.student is not None
    check_model_takes_data("student", config.student, config.student_params, config.dataset, data,
                           lambda: build_student(config, data))


def check_teacher_takes_data(zoo: TeacherZoo, key: TeacherKey, data: DataSplits) -> None:
    """The zoo teacher of `key` probed before the zoo trains it; not when the zoo holds it (then it was built and
    run on this data already)."""
    if (zoo.entry_dir(key) / CARD).exists():
        return
    check_model_takes_data("teacher", key.arch, key.model_options, key.dataset, data, lambda: create_model(
        key.arch, num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size,
        cifar_stem=key.recipe.cifar_stem, **key.model_options))
