"""Teachers trained elsewhere, imported into the teacher zoo: the CRD codebase's published checkpoints, and plain
state dicts of any timm architecture (a timm or torchvision `.pth`, a `.safetensors`).

Students then distil from exactly the teachers the papers used, or from weights a user has on disk.
`import_teacher` reads the file with the safe loader only (`kdbench.models.state_dicts.read_weights_file`: weights
nested under "state_dict"/"model" and "module." prefixes are unwrapped), loads it strictly into the
architecture (a file that does not fit is refused in one line naming the first missing/unexpected keys, shapes,
or a classifier of another class count), evaluates it on the dataset's test split, and writes a zoo entry like a
trained one: `model.safetensors` + `card.json` (sha256 of the safetensors file; `source: "imported"`, the
original file's path, sha256 and format, a RepDistiller file's epoch/best_acc entries).

Keying: a zoo entry is (arch, dataset + its parameters, teacher recipe, teacher seed, teacher options). An
imported teacher takes the dataset's recipe renamed **"imported"** (`IMPORTED_RECIPE`), so a run selects it
explicitly and its run id differs from runs whose teacher the harness trained:

    kdbench teachers import ckpt_epoch_240.pth --arch cifar_resnet32x4 --dataset cifar100
    kdbench run --method kd --teacher cifar_resnet32x4 --student cifar_resnet8x4 --dataset cifar100 \
        --set teacher_recipe.name=imported
    kdbench teachers import my_resnet50.safetensors --arch resnet50 --dataset stl10   # any timm architecture

`--seed N` at import pairs with the run's `--teacher-seed N` (several imported teachers of one architecture).
The zoo never trains an "imported" teacher: a run that asks for one that is absent stops with a message.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from safetensors.torch import save_file

from kdbench.core.environment import configure_threads, environment, resolve_device
from kdbench.core.errors import UserError, unknown_name
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.core.storage import atomic_path, atomic_write_json
from kdbench.data.loaders import make_eval_loader
from kdbench.data.registry import build_dataset, get_dataset_spec
from kdbench.models.state_dicts import check_fits, read_weights_file
from kdbench.models.zoo import count_parameters, create_model, is_model, list_architectures
from kdbench.spec.config import apply_overrides, convert_free_kwargs
from kdbench.spec.paths import check_folder
from kdbench.spec.scoped_sets import parse_set_options
from kdbench.teachers.zoo import CARD, IMPORTED_RECIPE, WEIGHTS, TeacherKey, TeacherZoo, weights_facts
from kdbench.teachers.zoo_files import (
    BadZooFile,
    claim_folder,
    read_card,
    regular_source,
    unlink_if_symlink,
    user_file_sha256,
)
from kdbench.train.evaluate import evaluate


def imported_key(arch: str, dataset: str, *, seed: int = 0, sets: list[str] | None = None) -> TeacherKey:
    """The zoo key of an imported teacher: the dataset's recipe named "imported", `data.*` / `teacher.*` sets."""
    spec = get_dataset_spec(dataset)
    scoped = parse_set_options(sets)
    data_params = apply_overrides(spec.params, scoped.pop("data", {}), "data")
    options = convert_free_kwargs(scoped.pop("teacher", {}))
    if scoped:
        raise UserError(f"unknown --set scope '{next(iter(scoped))}'. Valid: data, teacher")
    recipe = dataclasses.replace(spec.recipe, name=IMPORTED_RECIPE)
    return TeacherKey(arch, spec.name, recipe, seed, dataclasses.asdict(data_params), options)


def import_teacher(
    path: str | Path,
    arch: str,
    dataset: str,
    *,
    seed: int = 0,
    sets: list[str] | None = None,
    zoo_dir: str | Path | None = None,
    data_root: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    reporter: Reporter = NULL_REPORTER,
) -> dict[str, Any]:
    """Put the weight file `path` (a CRD-codebase checkpoint or a plain state dict) into the zoo as teacher `arch`
    for `dataset`; returns its card (with `"already_imported": True` when the same file was imported under the
    same key before)."""
    path = Path(path)
    if not is_model(arch):
        raise unknown_name("teacher architecture", arch, list_architectures(), max_listed=30)
    key = imported_key(arch, dataset, seed=seed, sets=sets)
    regular_source(path, "teachers import")  # a link to /dev/zero is refused, not read forever
    state, meta, source_format = read_weights_file(path)  # safe loader first: nothing runs on a refused file
    source_sha = user_file_sha256(path, "teachers import")
    zoo = TeacherZoo(zoo_dir, reporter)
    entry = zoo.entry_dir(key)
    existing = _existing_card(zoo, entry)
    if existing is not None and not force:
        if existing.get("source_sha256") == source_sha:
            return {**existing, "already_imported": True}
        raise UserError(f"{entry} already holds an imported {arch} (from {existing.get('source_file')}); "
                        f"pass --force to replace it, or --seed N to keep both")
    check_folder(zoo.root, f"zoo dir {zoo.root}", "--zoo-dir")  # before the evaluation, not after it (#34)

    configure_threads()
    dev = resolve_device(device)
    params = get_dataset_spec(dataset).params.__class__(**key.data_params)
    data = build_dataset(key.dataset, params, data_root, key.recipe.augment)
    model = create_model(arch, num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size,
                         cifar_stem=key.recipe.cifar_stem, **key.model_options)
    check_fits(model, state, f"{path} does not fit {arch}", data.num_classes)
    model.load_state_dict(state)
    ev = evaluate(model.to(dev), make_eval_loader(data.test, key.recipe.eval_batch_size, 0, dev), dev)
    model = model.to("cpu").eval()

    for link in claim_folder(zoo.root, entry):  # written into below: never through a link out of the zoo
        reporter.log(f"{link} leads out of the zoo; the link is removed")
    lock = Path(str(entry) + ".lock")
    unlink_if_symlink(lock)  # opening a lock file truncates it: never another file through a link
    with FileLock(str(lock)):
        (entry / CARD).unlink(missing_ok=True)  # no card = no entry, until the new one is complete
        with atomic_path(entry / WEIGHTS) as tmp:  # no temp file left behind by a failed write
            save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
        card = {
            "key": key.to_dict(), "path": str(entry), **weights_facts(entry / WEIGHTS), "arch": arch,
            "dataset": key.dataset, "recipe": IMPORTED_RECIPE, "seed": seed, "params": count_parameters(model),
            "epochs": meta.get("epoch"), "top1": ev.top1, "top5": ev.top5, "train_s": 0.0,
            "source": "imported", "source_file": str(path.resolve()), "source_sha256": source_sha,
            "source_format": source_format, "source_meta": meta,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "environment": environment(dev),
        }
        atomic_write_json(entry / CARD, card)
    reporter.log(f"imported {path} as teacher {arch} for {key.dataset}: top-1 {ev.top1:.2f}% at {entry}")
    return card


def _existing_card(zoo: TeacherZoo, entry: Path) -> dict[str, Any] | None:
    """The card of the teacher already imported at `entry`, None when there is none or it is not a card (then the
    import replaces it; reading its path or checksum would take a broken card's word)."""
    card = entry / CARD
    if not card.exists():
        return None
    try:
        return read_card(zoo.root, card)
    except BadZooFile:
        return None
