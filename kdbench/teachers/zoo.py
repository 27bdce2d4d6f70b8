"""The teacher zoo: teachers trained once by the harness, cached with a checksum, shared by every run.

An entry is keyed by (architecture, dataset + its parameters, the training data, recipe, seed) and lives in
`<zoo>/<dataset>/<arch>/<recipe>-s<seed>-<digest>/` as `model.safetensors` plus `card.json` (sha256 of the
weights, accuracy, epochs, time, versions). The card is written last, so an entry without a card is not an
entry. Loading verifies the sha256; a mismatch rejects the file (renamed `*.rejected`) with a message and the
teacher is retrained. So does a card that is not one, weights that are a device or larger than the card's `size`,
or an entry that leads out of the zoo through a symlink (kdbench.teachers.zoo_files: files from a colleague).
Training happens under a file lock, so concurrent runs that need the same missing teacher train it once and the
others wait and load it.

The training data of a teacher trained here is part of its key and its card (`train_data`): the full training
split, or with `teacher_data.train_fraction=F` the stratified F a student's `data.train_fraction=F` draws
(:func:`training_data` builds it from the key; no caller chooses another split). Entries written before the data
was in the key (issue #27: a run with `data.train_fraction` on an empty zoo could store a teacher trained on the
student's subset under the full-data key) have cards without `train_data`; no key reaches them any more, so they
are never loaded: `kdbench teachers list` shows their data as unknown, and they can be deleted.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from filelock import FileLock, Timeout
from safetensors.torch import save_file

from kdbench.core.cpu_numerics import cpu_info
from kdbench.core.environment import environment
from kdbench.core.errors import UserError
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.core.safe_load import load_plain_weights
from kdbench.core.storage import atomic_path, atomic_write_json, sha256_file
from kdbench.data.loaders import make_eval_loader, make_train_loader
from kdbench.data.registry import DataSplits, build_dataset, get_dataset_spec
from kdbench.data.subset import keep_train_fraction
from kdbench.models.state_dicts import check_fits
from kdbench.models.zoo import count_parameters, create_model
from kdbench.spec.config import content_hash
from kdbench.spec.recipe import Recipe
from kdbench.store.record_builder import fit_metrics
from kdbench.teachers.zoo_files import (
    BadZooFile,
    claim_folder,
    outside_note,
    read_card,
    unlink_if_symlink,
    user_file_sha256,
    weights_sha256,
)
from kdbench.train.engine import Engine, EngineSettings, FitResult
from kdbench.train.evaluate import evaluate
from kdbench.train.method import MethodContext, get_method

WEIGHTS = "model.safetensors"
CARD = "card.json"
# The teacher-recipe name of teachers imported from elsewhere (kdbench.teachers.import_weights): never trained here.
IMPORTED_RECIPE = "imported"


def default_zoo_dir() -> Path:
    return Path(os.environ.get("KDBENCH_ZOO", Path.home() / ".cache" / "kdbench" / "zoo")).expanduser()


@dataclass(frozen=True)
class TeacherKey:
    arch: str
    dataset: str
    recipe: Recipe
    seed: int = 0
    data_params: dict[str, Any] = field(default_factory=dict)
    model_options: dict[str, Any] = field(default_factory=dict)
    # The fingerprint of the code that trains the teacher (the `ce` method's, kdbench.store.fingerprint.teacher_code);
    # empty for imported teachers, which were not trained here, and then left out of the digest.
    code: str = ""
    # The teacher's training data: the stratified fraction of each class of the training split it trains on (1:
    # all of it; F < 1: the samples `data.train_fraction=F` gives a student) and, for F < 1, the student's
    # `data.val_fraction` held out before the draw (as for the student; a full-data teacher trains on every
    # training sample, the student's validation samples included).
    train_fraction: float = 1.0
    val_fraction: float = 0.0
    # Trained under `--portable` (the same weights on any x86 CPU): another entry than the native one; left out
    # of the digest when off, so existing entries keep their place.
    portable: bool = False
    # Trained under `--compile` (kdbench.train.compile; inductor's kernels give other numbers): another entry, left
    # out of the digest when off.
    compiled: bool = False

    def __post_init__(self) -> None:
        if self.train_fraction < 1.0 and self.imported:
            raise UserError(f"teacher_data.train_fraction={self.train_fraction:g}: an imported teacher was "
                            "trained elsewhere, on data the zoo cannot choose; train one here instead (leave "
                            f"teacher_recipe.name={IMPORTED_RECIPE} out)")
        if self.train_fraction >= 1.0 and self.val_fraction:
            object.__setattr__(self, "val_fraction", 0.0)  # held out only before a fraction is drawn

    @property
    def imported(self) -> bool:
        return self.recipe.name == IMPORTED_RECIPE

    @property
    def train_data(self) -> dict[str, Any] | None:
        """What the teacher trains on, as its key and card state it; None for an imported teacher (trained
        elsewhere: the zoo does not know)."""
        if self.imported:
            return None
        return {"train_fraction": self.train_fraction, **({"val_fraction": self.val_fraction} if self.val_fraction
                                                          else {})}

    @property
    def data_note(self) -> str:
        """", 0.1 of each class's training samples" for a teacher trained on part of the split; "" otherwise."""
        return "" if self.train_fraction >= 1.0 else f", {self.train_fraction:g} of each class's training samples"

    def to_dict(self) -> dict[str, Any]:
        # `train_data` is in every trained teacher's digest, full-data ones included: entries written before it
        # was (some trained on a student's subset, issue #27) are never found again. Imported entries keep theirs.
        return {
            "arch": self.arch, "dataset": self.dataset, "recipe": self.recipe.to_dict(), "seed": self.seed,
            "data_params": self.data_params, "model_options": self.model_options,
            **({"code": self.code} if self.code else {}), **({"portable": True} if self.portable else {}),
            **({"compiled": True} if self.compiled else {}),
            **({"train_data": self.train_data} if self.train_data is not None else {}),
        }

    @property
    def digest(self) -> str:
        return content_hash(self.to_dict(), length=10)

    @property
    def relpath(self) -> Path:
        return Path(self.dataset) / self.arch / f"{self.recipe.name}-s{self.seed}-{self.digest}"


def training_data(key: TeacherKey, data_root: str | Path | None = None) -> DataSplits:
    """The data teacher `key` trains on (and is built for): the dataset of its key with its recipe's augmentation,
    cut to its `train_data` (the same per-class draw a student's `data.train_fraction` makes, after the same
    validation hold-out); never a validation split of its own."""
    spec = get_dataset_spec(key.dataset)
    params = spec.params.__class__(**key.data_params) if key.data_params else spec.params
    splits = build_dataset(key.dataset, params, data_root, key.recipe.augment, val_fraction=key.val_fraction)
    splits = keep_train_fraction(splits, key.train_fraction, int(getattr(params, "split_seed", 0)))
    return replace(splits, val=None)


def train_data_card(key: TeacherKey, data: DataSplits) -> dict[str, Any]:
    """The card's `train_data`: the key's, plus the number of samples the teacher trained on."""
    assert key.train_data is not None
    return {**key.train_data, "num_train": len(data.train)}


def describe_train_data(card: dict[str, Any]) -> str:
    """A card's training data in a few words (`kdbench teachers list`)."""
    if card.get("source") == "imported":
        return "elsewhere (imported)"
    if card.get("source") == "timm pretrained":  # kdbench.teachers.pretrained: a card of measured accuracy only
        return "elsewhere (timm pretrained)"
    data = card.get("train_data")
    if not isinstance(data, dict):
        return "unknown (old key: unused)"
    n = f"{data['num_train']:,}" if isinstance(data.get("num_train"), int) else "?"
    fraction = float(data.get("train_fraction", 1.0))
    return f"all {n}" if fraction >= 1.0 else f"{fraction:g} of each class ({n})"


def _build(key: TeacherKey, data: DataSplits) -> nn.Module:
    return create_model(
        key.arch, num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size,
        cifar_stem=key.recipe.cifar_stem, **key.model_options,
    )


class TeacherZoo:
    def __init__(self, root: str | Path | None = None, reporter: Reporter = NULL_REPORTER) -> None:
        self.root = Path(root) if root is not None else default_zoo_dir()
        self.reporter = reporter

    def entry_dir(self, key: TeacherKey) -> Path:
        return self.root / key.relpath

    def verified_card(self, key: TeacherKey) -> dict[str, Any] | None:
        """The card of `key`'s complete entry with its weights' sha256 verified, None when there is no entry (no
        card or no weights); BadZooFile saying why an entry there must not be loaded (a broken card, weights of
        another checksum, a device, a file over its declared size, a symlink out of the zoo). Reads, never writes."""
        entry = self.entry_dir(key)
        card_path, weights = entry / CARD, entry / WEIGHTS
        if not card_path.exists() or not weights.exists():
            return None
        note = outside_note(self.root, entry)
        if note:
            raise BadZooFile(f"its folder is {note}")
        try:
            card = read_card(self.root, card_path)
        except BadZooFile as e:
            raise BadZooFile(f"{CARD}: {e}") from None
        try:
            actual = weights_sha256(self.root, weights, card)
        except BadZooFile as e:
            raise BadZooFile(f"{WEIGHTS}: {e}") from None
        if actual != card["sha256"]:  # checked before a byte of the weights is parsed
            raise BadZooFile(f"checksum mismatch (card {card['sha256'][:12]}…, file {actual[:12]}…)")
        return card

    def load(self, key: TeacherKey, data: DataSplits) -> tuple[nn.Module, dict[str, Any]] | None:
        """The cached teacher and its card, or None if absent or rejected (its file set aside, to be retrained;
        an imported teacher, which cannot be, is a UserError)."""
        try:
            card = self.verified_card(key)
        except BadZooFile as e:
            self._reject(key, str(e))
            return None
        if card is None:
            return None
        model = _build(key, data)
        weights = self.entry_dir(key) / WEIGHTS
        try:
            # safetensors: tensors only, no code; a malformed file is refused like a mismatching one, and so are
            # weights whose dtypes are not the model's (float bytes labelled int32 would load as other numbers).
            state = load_plain_weights(weights)
            check_fits(model, state, f"does not fit {key.arch}")
            model.load_state_dict(state)
        except UserError as e:  # UnusableCheckpointError is one
            self._reject(key, str(e))
            return None
        model.eval()
        return model, {**card, "path": str(self.entry_dir(key))}  # where it is now (a zoo may have been moved)

    def _reject(self, key: TeacherKey, why: str) -> None:
        """Set an entry's weights aside (`*.rejected`) and drop its card, so that the teacher is retrained; an
        entry whose folder leads out of the zoo is not touched inside: the link is removed. An imported teacher
        cannot be retrained: a UserError (its file set aside too, so that importing it again replaces it)."""
        entry = self.entry_dir(key)
        if outside_note(self.root, entry):
            removed = claim_folder(self.root, entry)
            done = f"link removed ({'; '.join(removed)})"
        else:
            weights = entry / WEIGHTS
            rejected = weights.with_suffix(".safetensors.rejected")
            try:
                with contextlib.suppress(FileNotFoundError):  # set aside already by a concurrent run
                    os.replace(weights, rejected)  # a symlink is renamed itself: its target is left as it is
                (entry / CARD).unlink(missing_ok=True)
            except OSError as e:  # a read-only zoo (kdbench.execute.folders checks the checksum before a run)
                raise UserError(f"teacher {key.arch} at {entry}: {why}; it cannot be set aside and retrained there "
                                f"({e.strerror or e}): pass --zoo-dir DIR, a folder you can write") from None
            done = f"file rejected as {rejected.name}"
        if key.imported:
            raise UserError(f"imported teacher {key.arch} at {entry}: {why}; {done}: import it again with "
                            f"`kdbench teachers import PATH --arch {key.arch} --dataset {key.dataset}`")
        self.reporter.log(f"teacher {key.arch} at {entry}: {why}; {done}, retraining")

    def get_or_train(
        self, key: TeacherKey, data: DataSplits, settings: EngineSettings
    ) -> tuple[nn.Module, dict[str, Any]]:
        found = self.load(key, data)
        if found is not None:
            self.reporter.log(f"teacher {key.arch} loaded from the zoo ({self.entry_dir(key)})")
            return found[0], {**found[1], "cached": True}
        entry = self.entry_dir(key)
        for link in claim_folder(self.root, entry):  # written into below: never through a link out of the zoo
            self.reporter.log(f"teacher {key.arch}: {link} leads out of the zoo; the link is removed")
        lock_path = Path(str(entry) + ".lock")
        unlink_if_symlink(lock_path)  # opening a lock file truncates it: never another file through a link
        lock = FileLock(str(lock_path))
        try:
            # `lock.is_locked` says whether this object holds the lock, never another process: the waiting line
            # never appeared and a run waited minutes in silence (issue #29). A try without waiting tells.
            lock.acquire(timeout=0)
        except Timeout:
            self.reporter.log(f"teacher {key.arch}: another process is training it ({entry}); waiting")
            lock.acquire()
        try:
            found = self.load(key, data)  # trained by another process while we waited
            if found is not None:
                self.reporter.log(f"teacher {key.arch} loaded from the zoo ({entry})")
                return found[0], {**found[1], "cached": True}
            model, card = self._train(key, data, settings)
        finally:
            lock.release()
        return model, {**card, "cached": False}

    def _train(
        self, key: TeacherKey, data: DataSplits, settings: EngineSettings
    ) -> tuple[nn.Module, dict[str, Any]]:
        """Train the key's teacher (by the `ce` method, through the one engine), store its weights and card."""
        entry = self.entry_dir(key)
        _refuse_to_train_imported(key, entry)
        _check_training_data(key, data)
        unlink_if_symlink(entry / "work")  # the checkpoint is written and resumed there: never through a link
        self.reporter.log(f"training teacher {key.arch} on {key.dataset} ({len(data.train):,} samples"
                          f"{key.data_note}, {key.recipe.epochs} epochs)")
        torch.manual_seed(key.seed)
        model = _build(key, data)
        # Teachers are big (ResNet-152: ~0.5 GB of weights + momentum): checkpoint at most once a minute.
        engine = Engine(replace(settings, checkpoint_interval_s=max(settings.checkpoint_interval_s, 60.0)),
                        self.reporter)
        t0 = time.perf_counter()
        fit = engine.fit(
            _ce_distiller(model, key, data),
            make_train_loader(data.train, key.recipe.batch_size, key.seed, settings.device, data.num_workers),
            make_eval_loader(data.test, key.recipe.eval_batch_size, key.seed, settings.device, data.num_workers),
            key.recipe,
            key.seed,
            checkpoint_path=entry / "work" / "checkpoint.pt",
        )
        train_s = time.perf_counter() - t0
        model = model.to("cpu").eval()
        card = _store_entry(entry, key, data, model, fit, train_s, settings.device)
        self.reporter.log(f"teacher {key.arch}: top-1 {card['top1']:.2f}% in {train_s:.0f} s, cached at {entry}")
        return model, card

    def cards(self) -> list[dict[str, Any]]:
        return self.scan()[0]

    def scan(self) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
        """The cards of the zoo's entries, and (card path, what is wrong) for each that is not one: not JSON, a
        field missing or of another type, a symlink out of the zoo. Nothing is changed."""
        if not self.root.is_dir():
            return [], []
        cards, bad = [], []
        for path in sorted(self.root.glob(f"*/*/*/{CARD}")):
            try:
                cards.append(read_card(self.root, path))
            except BadZooFile as e:
                bad.append((path, str(e)))
        return cards, bad


def _check_training_data(key: TeacherKey, data: DataSplits) -> None:
    """A teacher never trains on data its key does not state: a student's split (cut to its `data.train_fraction`,
    or with its validation split) passed by mistake is refused before anything is stored under the key."""
    cut = "train_fraction" in data.notes  # kdbench.data.subset.keep_train_fraction's note
    if data.val is not None or cut != (key.train_fraction < 1.0):
        raise RuntimeError(f"teacher {key.arch}: the data passed to the zoo is not the teacher's (its key states "
                           f"{key.train_data}; got {len(data.train)} training samples"
                           f"{', a validation split' if data.val is not None else ''}): use "
                           "kdbench.teachers.zoo.training_data(key)")


def _refuse_to_train_imported(key: TeacherKey, entry: Path) -> None:
    if key.recipe.name == IMPORTED_RECIPE:
        raise UserError(
            f"no imported teacher {key.arch} for {key.dataset} (seed {key.seed}) at {entry}: import one with "
            f"`kdbench teachers import PATH --arch {key.arch} --dataset {key.dataset}` (an imported teacher is "
            f"keyed by its dataset's default recipe renamed '{IMPORTED_RECIPE}': change no other teacher_recipe "
            "field, nor --teacher-epochs)"
        )


def load_teacher_checkpoint(
    path: str | Path, arch: str, data: DataSplits, device: torch.device, cifar_stem: bool = False,
    sha256: str | None = None, evaluated: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A user's own teacher weights (`--teacher-ckpt`): safetensors, or a torch file holding a state dict
    (optionally under "state_dict" or "model", "module." prefixes removed; a run's `checkpoint.pt` gives its
    student). A run's student export (`runs/<id>/student*.safetensors`) is built from the card beside it and
    recorded with `source: "run:<id>"`. Evaluated on the test split for the run's teacher metrics.
    `sha256` is the file's digest when the caller already has it (the file is not hashed again). `evaluated`: the
    teacher metrics an earlier attempt of the same run recorded on this device; when they are of this very file
    (its sha256), their top-1/top-5 are kept instead of evaluating the same weights on the same split again.
    A file that is not in the expected format or does not fit `arch` is a UserError naming the path."""
    from kdbench.models.state_dicts import unwrap_state_dict
    from kdbench.store.exports import build_from_card, card_of_file

    path = Path(path)
    sha256 = sha256 or user_file_sha256(path, "--teacher-ckpt")
    # The safe loader refuses (one line, UnsafeCheckpointError) anything but plain tensors: nothing in it runs.
    state = unwrap_state_dict(load_plain_weights(path), f"--teacher-ckpt {path}")
    card = card_of_file(path, sha256)
    if card is not None:
        if (card["num_classes"], card["in_chans"]) != (data.num_classes, data.in_chans):
            raise UserError(f"--teacher-ckpt {path}: run {card['run_id']}'s student has {card['num_classes']} "
                            f"classes and {card['in_chans']} channels, this dataset {data.num_classes} and "
                            f"{data.in_chans}")
        model = build_from_card(card)
    else:
        model = create_model(arch, num_classes=data.num_classes, in_chans=data.in_chans,
                             image_size=data.image_size, cifar_stem=cifar_stem)
    check_fits(model, state, f"--teacher-ckpt {path} does not fit {arch} with {data.num_classes} classes",
               data.num_classes)
    model.load_state_dict(state)
    model.eval()
    if evaluated and evaluated.get("sha256") == sha256 and evaluated.get("top1") is not None:
        top1, top5, when = evaluated["top1"], evaluated.get("top5"), "earlier attempt"
    else:
        ev = evaluate(model.to(device), make_eval_loader(data.test, 256, 0, device), device)
        top1, top5, when = ev.top1, ev.top5, "this attempt"
    return model, {
        "path": str(path), "sha256": sha256, "arch": arch, "params": count_parameters(model),
        "top1": top1, "top5": top5, "evaluated": when, "cached": True, "user_checkpoint": True,
        **({"source": f"run:{card['run_id']}"} if card is not None else {}),
    }


def weights_facts(weights: Path) -> dict[str, Any]:
    """The card's account of the weight file it was just written: its sha256 and its `size`, the most a load
    then reads (a file swapped for a device or a larger one is refused, not read without end)."""
    return {"sha256": sha256_file(weights), "size": weights.stat().st_size}


def _ce_distiller(model: nn.Module, key: TeacherKey, data: DataSplits) -> Any:
    """`model` wrapped by the `ce` method (the student alone, label smoothing from the key's recipe): a teacher
    trains through the same method and engine as a student trained alone."""
    ce = get_method("ce")
    ctx = MethodContext(
        num_classes=data.num_classes, in_chans=data.in_chans, image_size=data.image_size,
        num_train=len(data.train), train_targets=data.train_targets, epochs=key.recipe.epochs, seed=key.seed,
        label_smoothing=key.recipe.label_smoothing,
    )
    return ce.cls(model, None, ce.params, ctx)


def _store_entry(entry: Path, key: TeacherKey, data: DataSplits, model: nn.Module, fit: FitResult, train_s: float,
                 device: Any) -> dict[str, Any]:
    """Write the trained teacher's weights, then its card (whose presence marks the entry complete); the card."""
    weights = entry / WEIGHTS
    # Atomic, the umask's mode (never world-writable: a zoo is shared by every run), no temp file left behind.
    with atomic_path(weights) as tmp:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    card = {
        "key": key.to_dict(),
        "path": str(entry),
        **weights_facts(weights),
        "arch": key.arch,
        "dataset": key.dataset,
        "recipe": key.recipe.name,
        "seed": key.seed,
        "train_data": train_data_card(key, data),
        "params": count_parameters(model),
        **fit_metrics(fit),
        "top1": fit.last.top1,
        "top5": fit.last.top5,
        "train_s": train_s,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "environment": {**environment(device), "cpu": cpu_info()},
    }
    atomic_write_json(entry / CARD, card)  # last: its presence marks the entry complete
    # The whole work folder: with the checkpoint, any temp file of a process killed training it (this process
    # holds the entry's lock, so no live writer has one there).
    shutil.rmtree(entry / "work", ignore_errors=True)
    return card
