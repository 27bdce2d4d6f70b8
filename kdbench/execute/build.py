"""The pieces of a run, built from its config: its data, its teacher's zoo key and data, the user's or another
run's teacher, its student, its distiller and its loaders.

Shared by the runner (kdbench.execute.runner), which trains them, and by what rebuilds a run's pieces without
training it: re-evaluation, the sweep's plan and teacher jobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from kdbench.core import distributed
from kdbench.core.errors import UserError
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.data.loaders import make_eval_loader, make_train_loader
from kdbench.data.registry import DataSplits, build_dataset, get_dataset_spec
from kdbench.data.subset import TRAIN_KEY, keep_train_fraction, subset_seed_of, train_fraction_of
from kdbench.data.validation import split_data_params
from kdbench.execute.resolve import TeacherCheckpoint, zoo_teacher_code
from kdbench.spec.config import RunConfig
from kdbench.store import exports
from kdbench.teachers.pretrained import find_weights, is_pretrained_name, load_pretrained_teacher
from kdbench.teachers.zoo import TeacherKey, load_teacher_checkpoint, training_data
from kdbench.train.method import Distiller, MethodContext, get_method, method_params


def teacher_key(config: RunConfig) -> TeacherKey:
    """The zoo key of the run's teacher: its training data is the full training split unless the run asks for the
    information-matched control (`teacher_data.train_fraction`), never the student's `data.train_fraction`."""
    assert config.teacher is not None and config.teacher_recipe is not None
    own, val_fraction = split_data_params(config.data_params)
    return TeacherKey(
        arch=config.teacher, dataset=config.dataset, recipe=config.teacher_recipe, seed=config.teacher_seed,
        data_params=own, model_options=config.teacher_params,
        code=zoo_teacher_code(config.teacher_recipe),
        train_fraction=train_fraction_of(config.teacher_data), val_fraction=val_fraction,
        portable=config.portable, compiled=config.compile,
    )


def load_teacher_data(config: RunConfig, data_root: str | Path | None, student: DataSplits | None = None) -> DataSplits:
    """The data the run's zoo teacher trains on (:func:`kdbench.teachers.zoo.training_data` of its key). The
    student's `data` is reused when it holds the very same samples (no validation split, the same fraction, the
    same augmentation), so a dataset is not read twice for nothing."""
    key = teacher_key(config)
    if student is not None and student.val is None and key.recipe.augment == config.recipe.augment \
            and key.train_fraction == train_fraction_of(config.data_params):
        return student
    return training_data(key, data_root)


def load_data(
    config: RunConfig, data_root: str | Path | None, augment: str | None = None, *, validation: bool = True
) -> DataSplits:
    """The run's data; with `validation` (the student's) the `data.val_fraction` split is held out of training
    and the training split cut to `data.train_fraction`, without it the full training split is returned (e.g.
    for its test split). What a zoo teacher trains on is :func:`load_teacher_data`'s."""
    spec = get_dataset_spec(config.dataset)
    own, val_fraction = split_data_params(config.data_params)
    params = spec.params.__class__(**own) if own else spec.params
    splits = build_dataset(config.dataset, params, data_root, augment or config.recipe.augment,
                           val_fraction=val_fraction if validation else 0.0)
    if not validation:
        return splits
    seed = subset_seed_of(config.data_params, int(getattr(params, "split_seed", 0)))
    return keep_train_fraction(splits, train_fraction_of(config.data_params), seed)


def student_model_facts(config: RunConfig, data: DataSplits) -> dict[str, Any]:
    """Everything `create_model` needs to build the run's student (what a student export's card records)."""
    spec = get_method(config.method)
    options = {**spec.cls.student_options(method_params(config), config.student), **config.student_params}
    return {"architecture": config.student, "num_classes": data.num_classes, "in_chans": data.in_chans,
            "image_size": data.image_size, "cifar_stem": config.recipe.cifar_stem, "options": options}


def build_student(config: RunConfig, data: DataSplits) -> torch.nn.Module:
    return exports.build_from_card(student_model_facts(config, data))


def build_distiller(config: RunConfig, data: DataSplits, teacher: torch.nn.Module | None) -> Distiller:
    """The run's method around a new student, every weight drawn from the run's seed."""
    ctx = MethodContext(
        num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size,
        num_train=len(data.train), train_targets=data.train_targets, epochs=config.recipe.epochs,
        seed=config.seed, label_smoothing=config.recipe.label_smoothing,
    )
    torch.manual_seed(config.seed)  # student and the method's own modules start from the run's seed
    student = build_student(config, data)
    return get_method(config.method).cls(student, teacher, method_params(config), ctx)


@dataclass(frozen=True)
class Loaders:
    train: DataLoader
    test: DataLoader
    val: DataLoader | None  # the `data.val_fraction` hold-out, when the run has one


def build_loaders(config: RunConfig, data: DataSplits, device: torch.device, *,
                  on_device: bool | None = None) -> Loaders:
    """The run's loaders, each rank of a data-parallel run reading its own shard; `on_device`: where an in-memory
    set is kept on a GPU run (kdbench.data.loaders.keep_on_device)."""
    shard = {"rank": distributed.rank(), "world": config.world_size, "on_device": on_device}
    eval_batch = config.recipe.eval_batch_size
    return Loaders(
        train=make_train_loader(data.train, config.recipe.batch_size, config.seed, device, data.num_workers,
                                **shard),
        test=make_eval_loader(data.test, eval_batch, config.seed, device, data.num_workers, **shard),
        val=None if data.val is None else make_eval_loader(data.val, eval_batch, config.seed, device,
                                                           data.num_workers, **shard),
    )


def load_given_teacher(config: RunConfig, teacher_ckpt: TeacherCheckpoint | str | Path | None,
                       results_dir: str | Path | None, data: DataSplits,
                       dev: torch.device, *, zoo_dir: str | Path | None = None,
                       reporter: Reporter = NULL_REPORTER,
                       evaluated: dict[str, Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]] | None:
    """The teacher the run was given rather than trained by the zoo: timm's pretrained weights (`config.teacher` is
    `arch.tag`; their card goes to the zoo at `zoo_dir`), the user's file (`config.teacher_ckpt_sha256`) or
    another run's student (`config.teacher_run`); None for a zoo teacher or none. `evaluated`: its metrics from an
    earlier attempt (kdbench.teachers.zoo.load_teacher_checkpoint keeps them for the same file)."""
    if config.teacher_ckpt_sha256 and not config.teacher_run and is_pretrained_name(config.teacher):
        return load_pretrained(config, teacher_ckpt, data, dev, zoo_dir=zoo_dir, reporter=reporter)
    if config.teacher_ckpt_sha256:
        return load_user_teacher(config, teacher_ckpt, data, dev, evaluated)
    if config.teacher_run:
        return load_run_teacher(config, results_dir, data, dev, evaluated)
    return None


def load_pretrained(config: RunConfig, teacher_ckpt: TeacherCheckpoint | str | Path | None, data: DataSplits,
                    dev: torch.device, *, zoo_dir: str | Path | None = None,
                    reporter: Reporter = NULL_REPORTER) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The run's pretrained timm teacher: the same weights the config was resolved with (the user's file, or the
    cache's, found again offline), measured on the run's evaluation split (kdbench.teachers.pretrained)."""
    assert config.teacher is not None
    path = teacher_ckpt.path if isinstance(teacher_ckpt, TeacherCheckpoint) else teacher_ckpt
    known = teacher_ckpt.sha256 if isinstance(teacher_ckpt, TeacherCheckpoint) else None
    weights = find_weights(config.teacher, path, known)
    if weights.sha256 != config.teacher_ckpt_sha256:
        raise UserError(f"--teacher {config.teacher}: the weights at {weights.path} (sha256 {weights.sha256[:12]}…) "
                        f"are not the ones this run was resolved with ({str(config.teacher_ckpt_sha256)[:12]}…): "
                        "resolve the run again (rerun the command or resubmit the sweep)")
    own, _ = split_data_params(config.data_params)
    eval_params = {k: v for k, v in own.items() if k != TRAIN_KEY}  # the evaluation split is the same at any fraction
    teacher, card = load_pretrained_teacher(weights, config.dataset, eval_params, data, dev,
                                            options=config.teacher_params, zoo_dir=zoo_dir,
                                            eval_batch_size=config.recipe.eval_batch_size, reporter=reporter)
    # The digest of the weights just loaded, never a stored card's claim: the record states it and the
    # teacher-output cache is keyed by it (a card with another teacher's sha256 served that teacher's outputs).
    return teacher, {**card, "sha256": weights.sha256}


def load_user_teacher(
    config: RunConfig, teacher_ckpt: TeacherCheckpoint | str | Path | None, data: DataSplits, dev: torch.device,
    evaluated: dict[str, Any] | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    ckpt = teacher_ckpt if isinstance(teacher_ckpt, TeacherCheckpoint) or teacher_ckpt is None \
        else TeacherCheckpoint.hash(teacher_ckpt)
    if ckpt is None or ckpt.sha256 != config.teacher_ckpt_sha256:
        raise UserError("this run's teacher is a user checkpoint: pass the same --teacher-ckpt file")
    assert config.teacher is not None
    return load_teacher_checkpoint(ckpt.path, config.teacher, data, dev, cifar_stem=config.recipe.cifar_stem,
                                   sha256=ckpt.sha256, evaluated=evaluated)


def load_run_teacher(config: RunConfig, results_dir: str | Path | None, data: DataSplits, dev: torch.device,
                     evaluated: dict[str, Any] | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The student of run `config.teacher_run` (its last-epoch export, checked against its card) as the teacher;
    the run must be completed and its student of the architecture the config names."""
    assert config.teacher is not None and config.teacher_run is not None
    path = exports.run_teacher_file(exports.RUN_TEACHER_PREFIX + config.teacher_run, results_dir)
    teacher, card = load_teacher_checkpoint(path, config.teacher, data, dev, cifar_stem=config.recipe.cifar_stem,
                                            evaluated=evaluated)
    if card.get("source") != exports.RUN_TEACHER_PREFIX + config.teacher_run or \
            exports.read_card(path.parent)["architecture"] != config.teacher:
        raise UserError(f"--teacher run:{config.teacher_run}: its export is not a {config.teacher} of that run")
    return teacher, card
