"""The teacher-output cache: a frozen teacher's outputs on the training images, computed once per (seed, epoch).

A sweep runs many methods and hyperparameters with the same teacher on the same augmented images (augmentation
is a pure function of (seed, epoch, sample index): a counter hash, kdbench.data.keyed; the batches are a function
of (seed, epoch, batch size)). So the teacher's outputs for sample i in epoch e are the same bits in
every such run, and the first run stores them for the others to read.

An entry is one file per (namespace, epoch, output): the (N, ...) tensor of every training sample's output plus a
mask of the rows filled. The namespace is the hash of everything the bits depend on: the teacher checkpoint's
sha256, dataset and data parameters (its transform), the recipe's augmentation, seed, batch size (the batch a
sample was computed in: a convolution's bits may depend on it), training-set size, device type, AMP,
channels_last, stored dtype and the harness's RESULTS_VERSION. Outputs are "logits", "embedding" and the feature
stages ("stage2", ...). A batch the cache does not hold is computed once through a tap on all of them, whatever
the asking method takes (kdbench.train.method.Distiller.teacher_features), and the run stores the logits, then
the embedding and the stage maps, smallest first, as far as the cap allows (kdbench.teachers.cache_outputs): so
in a sweep of kd, dkd, pkt and at on one teacher and seed only the first run pays the teacher (issue #35).

An entry's file format, and what makes a file a usable entry, are kdbench.teachers.cache_entry's: a file that is
not exactly what this run would have written (truncated, corrupted, another dtype or shape than the teacher's
outputs, a symlink out of the cache folder, a device or FIFO) is removed and recomputed, never used (the run says
so once; the record counts them; a symlink is removed as a link, never its target). A namespace folder that is
a symlink is neither read nor written through: the link is replaced by a folder of the cache's own. The folder as
a whole (eviction, `kdbench cache list|clear`) is
kdbench.teachers.cache_folder's. The cache only saves time: a disk that refuses its writes (full,
read-only) is said once and the run goes on without storing to it, with the same numbers.
Writes are atomic (kdbench.core.storage), so concurrent runs filling the same entry each write a whole file and the
last rename wins. The cache is capped at $KDBENCH_CACHE_GB (default 20) with least-recently-used eviction (a read
touches its file); the feature outputs whose entries for the whole run do not fit it are not stored, and a method
that reads one of them recomputes the teacher (the logits are always stored).

fp32 (default): the cached bits are the recomputed bits, so results are unchanged and the cache is not in the run
id. float16 (opt-in, `--teacher-cache-dtype float16`) halves the size but changes results: it is in the run id,
and it rounds every output, logits included, whether read or computed, so a float16 run's numbers never depend
on what the cache held. Stage maps follow the same rule and are stored float32 by default, though they are the
large entries (issue #35 suggested float16): a float16 map read back is not the map recomputed, so a feature
method's loss (AT's normalised squared maps, FitNet's MSE) would take other numbers from the cache than without
it; rounding the computed maps too (as float16 does) would make every feature run's numbers differ from its
cache-off run's, the cache's dtype would enter those runs' ids, and the reference records would no longer be the
runs a sweep makes. The size is bounded by the cap instead (the smallest maps first), and
`--teacher-cache-dtype float16` stores twice as many maps under the same cap for whoever accepts its numbers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdbench.core.errors import UserError
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.core.storage import atomic_write_bytes, atomic_write_json
from kdbench.models.features import Features, FeatureTap
from kdbench.teachers.cache_entry import FORMAT, SUFFIX, BadEntry, Expected, dtype_name, encode_entry, read_entry
from kdbench.teachers.cache_folder import evict
from kdbench.teachers.cache_outputs import (
    as_features,
    choose_stored,
    compute_outputs,
    feature_memory,
    output_names,
    row_bytes,
    stage_count,
)

DEFAULT_CAP_GB = 20.0
DTYPES = ("float32", "float16")
MODES = ("on", "off")


def default_cache_dir() -> Path:
    """$KDBENCH_CACHE, else `teacher-outputs` beside the teacher zoo under the user cache directory."""
    return Path(os.environ.get("KDBENCH_CACHE", Path.home() / ".cache" / "kdbench" / "teacher-outputs")).expanduser()


def cap_bytes() -> int:
    raw = os.environ.get("KDBENCH_CACHE_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_CAP_GB
    except ValueError:
        raise UserError(f"KDBENCH_CACHE_GB={raw!r} is not a number of gigabytes") from None
    if not gb >= 0:
        raise UserError(f"KDBENCH_CACHE_GB={raw!r} must be a number of gigabytes ≥ 0")
    return int(gb * 1e9)


def check_options(mode: str, dtype: str) -> None:
    if mode not in MODES:
        raise UserError(f"--teacher-cache {mode!r}: allowed: {', '.join(MODES)}")
    if dtype not in DTYPES:
        raise UserError(f"--teacher-cache-dtype {dtype!r}: allowed: {', '.join(DTYPES)}")



# ---------------------------------------------------------------------------------------------------------------
# The cache of one run


@dataclass
class _Slot:
    """One output of one epoch in memory: every sample's rows, which are filled, whether it changed since read."""

    values: torch.Tensor
    filled: torch.Tensor  # (N,) bool
    produced: torch.dtype  # the dtype the teacher gave (values are float16 under --teacher-cache-dtype float16)
    dirty: bool = False


@dataclass
class TeacherOutputCache:
    """The cache as one run uses it (kdbench.train.teacher_outputs.TeacherOutputs): `features` per batch,
    `begin_epoch` / `end_epoch` (writes the epoch's entries) called by the engine.

    `key` is the namespace's identity (see the module docstring); `epochs` and the cap decide which feature outputs
    are stored (their entries for the whole run must fit the cap together: :meth:`plan`).
    """

    root: Path
    key: dict[str, Any]
    num_train: int
    epochs: int
    dtype: str = "float32"
    cap: int = field(default_factory=cap_bytes)
    epoch: int = 0
    hits: int = 0
    misses: int = 0
    bytes_read: int = 0
    bytes_written: int = 0
    corrupt: int = 0
    evicted: int = 0
    # The outputs a computing batch of this run stores (None until one is computed): see :meth:`plan`.
    stored: list[str] | None = None
    feature_bytes: dict[str, int] = field(default_factory=dict)
    _asked: set[str] = field(default_factory=set)
    # Where the cache says what the run should know (a bad entry recomputed, a disk it cannot write): once.
    reporter: Reporter = NULL_REPORTER
    # Why nothing is written any more (a full or read-only disk): the cache is optional, the run goes on without it.
    unwritable: str = ""
    _slots: dict[str, _Slot] = field(default_factory=dict)
    # What each output's entry must hold: learnt from the teacher (its first computed batch, or a 2-sample probe
    # when the first batch is read), so a file is checked against the run's own outputs, not against its header.
    _expected: dict[str, Expected] = field(default_factory=dict)
    _layouts: dict[str, torch.memory_format] = field(default_factory=dict)  # each output's, learnt as _expected is

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.namespace = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = self.root / self.namespace

    # -- what the train layer calls (kdbench.train.teacher_outputs.TeacherOutputs) ---------------------------

    def features(self, teacher: torch.nn.Module, tap: FeatureTap | None, images: torch.Tensor,
                 index: torch.Tensor) -> Features:
        """The batch's teacher outputs, read or computed and stored."""
        return teacher_outputs(self, teacher, tap, images, index)

    def begin_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.flush()
            self._slots = {}
            self.epoch = epoch

    def end_epoch(self) -> None:
        self.flush()

    # -- entries --------------------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.dir / f"e{self.epoch:05d}-{name}{SUFFIX}"

    def _expect(self, name: str, value: torch.Tensor) -> Expected:
        """What `name`'s entry holds, given one batch of the teacher's `value` for it."""
        if name not in self._expected:
            stored = torch.float16 if self.dtype == "float16" and value.is_floating_point() else value.dtype
            self._expected[name] = Expected(self.num_train, tuple(value.shape[1:]), value.dtype, stored)
            self._layouts[name] = _layout(value)
        return self._expected[name]

    def _bad(self, path: Path, why: str) -> None:
        """`path` is no entry of this run's: counted, said once, removed (a symlink: the link, never its target),
        so this run recomputes and rewrites it."""
        self.corrupt += 1
        if self.corrupt == 1:  # said once per run; the record counts them all
            self.reporter.log(f"teacher-output cache: {path} is damaged ({why}); recomputing the teacher's outputs "
                              "it held (same numbers; any further ones are counted in the record's teacher_cache)")
        # A read-only cache keeps it: refused again next time, never used.
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)

    def _own_namespace(self) -> bool:
        """Whether the namespace folder is the cache's own (or not there yet): a symlink in its place (to a folder
        anywhere) is neither read nor written through; the link is removed and the folder made afresh."""
        if self.dir.is_symlink():
            self._bad(self.dir, "a symlink in place of the cache's own folder")
            return False
        return True

    def _slot(self, name: str, probe: Callable[[], dict[str, torch.Tensor]]) -> _Slot | None:
        """The epoch's stored `name` (read from disk on first use), or None when there is none yet (or it was not
        a usable entry: then removed, see :meth:`_bad`). `probe` gives one small batch of the teacher's outputs
        when the entry must be checked before this run has computed any."""
        if name in self._slots:
            return self._slots[name]
        path = self._path(name)
        if not self._own_namespace() or not os.path.lexists(path):
            return None
        if name not in self._expected:
            for n, value in probe().items():
                self._expect(n, value)
        expected = self._expected[name]
        try:
            values, filled, size = read_entry(self.root, path, expected,
                                              {"epoch": self.epoch, "output": name, "namespace": self.namespace})
        except FileNotFoundError:
            return None
        except BadEntry as e:
            self._bad(path, str(e))
            return None
        except OSError:  # not ours to read (permissions): recomputed, and replaced when this run writes it
            return None
        self.bytes_read += size
        with contextlib.suppress(OSError):  # a read-only cache is read all the same
            os.utime(path)  # least-recently-used eviction reads the modification time
        slot = _Slot(values, filled, expected.produced)
        self._slots[name] = slot
        return slot

    # -- per batch ------------------------------------------------------------------------------------------

    def plan(self, outputs: dict[str, torch.Tensor]) -> list[str]:
        """The outputs this run stores, given one computed batch of all of them; decided once per run (the choice
        is the teacher's, the data's and the cap's: kdbench.teachers.cache_outputs.choose_stored)."""
        if self.stored is None:
            budget = min(self.cap, feature_memory() * self.epochs)  # the disk's cap; an epoch's in memory
            self.stored = choose_stored(outputs, self.num_train * self.epochs, budget, self.dtype)
            self.feature_bytes = {n: row_bytes(v, self.dtype) * self.num_train * self.epochs
                                  for n, v in outputs.items() if n != "logits"}
        return self.stored

    def asked(self, names: list[str]) -> None:
        """Note what the run's method reads (the record's `features` says whether it came from the cache)."""
        self._asked.update(n for n in names if n != "logits")

    def lookup(self, names: list[str], index: torch.Tensor,
               probe: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor] | None:
        """The batch's stored outputs by name (rows `index`, on `index`'s device), or None (a miss) unless every
        name has every row."""
        rows = index.cpu()
        out = {}
        for name in names:
            slot = self._slot(name, probe)
            if slot is None or not bool(slot.filled[rows].all()):
                self.misses += 1
                return None
            # In the layout the teacher gives it (channels_last maps under --channels-last): a reduction over a
            # map's channels sums in another order, so other bits, in a contiguous copy.
            out[name] = slot.values[rows].to(device=index.device, dtype=slot.produced).contiguous(
                memory_format=self._layouts.get(name, torch.contiguous_format))
        self.hits += 1
        return out

    def store(self, outputs: dict[str, torch.Tensor], index: torch.Tensor) -> None:
        """Keep the batch's `outputs` (rows `index`) for the epoch's entries. An output whose entry already holds
        these rows (read from disk: another run stored it) is left as it is, not written again."""
        if self.unwritable:  # nothing would reach the disk: keep no copy in memory either
            return
        rows = index.cpu()
        for name, value in outputs.items():
            value = value.detach()
            expected = self._expect(name, value)
            slot = self._slot(name, probe=dict)  # (its expected shape is known: no probe)
            if slot is not None and bool(slot.filled[rows].all()):
                continue
            if slot is None:
                slot = _Slot(torch.zeros((self.num_train, *value.shape[1:]), dtype=expected.stored),
                             torch.zeros(self.num_train, dtype=torch.bool), value.dtype)
                self._slots[name] = slot
            slot.values[rows] = value.to("cpu", dtype=expected.stored)
            slot.filled[rows] = True
            slot.dirty = True

    def flush(self) -> None:
        """Write this epoch's changed outputs (atomically), then evict down to the cap. A disk that refuses the
        writes (full, read-only, not a folder) turns the writing off for the rest of the run, said once: the
        cache only saves time, so the run goes on, with the same numbers (issue #29)."""
        if self.unwritable:
            return
        try:
            self._write_dirty()
        except OSError as e:
            self.unwritable = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
            self._slots = {name: slot for name, slot in self._slots.items() if not slot.dirty}
            self.reporter.log(f"teacher-output cache at {self.root} cannot be written ({self.unwritable}); going "
                              "on without storing to it (same numbers; --teacher-cache off or --cache-dir DIR "
                              "silence this)")

    def _write_dirty(self) -> None:
        if not any(slot.dirty for slot in self._slots.values()):
            return
        self._own_namespace()  # a symlink put in its place meanwhile is removed, never written through
        self.dir.mkdir(parents=True, exist_ok=True)
        key_file = self.dir / "key.json"
        if not key_file.exists() or key_file.is_symlink():
            atomic_write_json(key_file, self.key)  # a rename: replaces a symlink, never writes through it
        for name, slot in self._slots.items():
            if not slot.dirty:
                continue
            blob = encode_entry({"values": slot.values, "filled": slot.filled.to(torch.uint8)},
                                {"epoch": self.epoch, "output": name, "namespace": self.namespace,
                                 "produced": dtype_name(slot.produced)})
            atomic_write_bytes(self._path(name), blob)
            self.bytes_written += len(blob)
            slot.dirty = False
        self.evicted += evict(self.root, self.cap, keep={self._path(n) for n in self._slots})

    def describe(self, mode: str = "on") -> dict[str, Any]:
        out = {"mode": mode, "dtype": self.dtype, "hits": self.hits, "misses": self.misses,
               "bytes_read": self.bytes_read, "bytes_written": self.bytes_written, "features": self.features_mode(),
               "namespace": self.namespace, "dir": str(self.root)}
        if self.corrupt:
            out["corrupt_entries_recomputed"] = self.corrupt
        if self.evicted:
            out["evicted_entries"] = self.evicted
        if self.unwritable:
            out["unwritable"] = self.unwritable
        if self.stored is not None:
            out["stored"] = list(self.stored)
        if out["features"] == "recomputed":  # what the asked outputs left out would need under the cap
            out["feature_bytes_needed"] = sum(self.feature_bytes.get(n, 0) for n in self._asked)
        return out

    def features_mode(self) -> str:
        """Whether the feature outputs the method reads were cached: "none asked" (logits only), "cached", or
        "recomputed" (some do not fit the cap: every batch runs the teacher)."""
        if not self._asked:
            return "none asked"
        if self.stored is not None and not self._asked <= set(self.stored):
            return "recomputed"
        return "cached"


# ---------------------------------------------------------------------------------------------------------------
# The one path from a method to its teacher's outputs (kdbench.train.method.Distiller.teacher_features)


@torch.no_grad()
def teacher_outputs(cache: TeacherOutputCache | None, teacher: torch.nn.Module, tap: FeatureTap | None,
                    images: torch.Tensor, index: torch.Tensor) -> Features:
    """The teacher's :class:`~kdbench.models.features.Features` for a batch: read from `cache` when it holds every
    output `tap` takes for every sample, else computed — with every output the teacher's taps give, so that the
    other methods of a sweep read theirs (kdbench.teachers.cache_outputs) — and stored as far as the cap allows."""
    if cache is None:
        return tap(images) if tap is not None else Features(teacher(images), {}, None)
    count = stage_count(teacher)
    names = output_names(tap, count)
    cache.asked(names)

    def compute(x: torch.Tensor) -> dict[str, torch.Tensor]:
        return compute_outputs(teacher, tap, x, count)

    # The probe: two samples through the teacher in this batch's context (device, layout, autocast), so a stored
    # entry is checked against the shapes and dtypes this run's teacher gives; only asked for when an entry is
    # read before this run has computed any batch. The teacher is frozen in eval mode: no state.
    got = cache.lookup(names, index, probe=lambda: compute(images[:2]))
    if got is not None:
        return as_features(got, tap, count)
    outputs = compute(images)
    stored = cache.plan(outputs)
    cache.store({n: outputs[n] for n in stored if n in outputs}, index)
    if cache.dtype == "float16":  # what a reading run gets, whether this batch was stored or not
        outputs = {n: _round_half(v) for n, v in outputs.items()}
    return as_features(outputs, tap, count)


def _layout(t: torch.Tensor) -> torch.memory_format:
    """The memory format a read entry's rows are given back in: the teacher's own for this output."""
    if t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def _round_half(t: torch.Tensor) -> torch.Tensor:
    return t.half().to(t.dtype) if t.is_floating_point() else t


# ---------------------------------------------------------------------------------------------------------------
# A run's cache


def run_cache_key(config: Any, teacher_sha256: str, num_train: int, device: torch.device) -> dict[str, Any]:
    """The namespace's identity, from the run's config and its teacher's weights (see the module docstring)."""
    from kdbench.store.fingerprint import RESULTS_VERSION

    key = {"format": FORMAT, "results_version": RESULTS_VERSION, "teacher_sha256": teacher_sha256,
           "teacher": config.teacher, "teacher_params": config.teacher_params, "cifar_stem": config.recipe.cifar_stem,
           "dataset": config.dataset, "data_params": config.data_params, "augment": config.recipe.augment,
           "seed": config.seed, "batch_size": config.recipe.batch_size, "num_train": num_train,
           "device": device.type, "amp": config.amp, "channels_last": config.channels_last,
           "dtype": config.teacher_cache_dtype or "float32"}
    if config.world_size > 1:
        # Each rank computes (and fills) only its own slices of the global batches, with its own batch size:
        # one entry per rank, or the ranks' writes would replace each other's rows.
        from kdbench.core import distributed

        key.update(world_size=config.world_size, rank=distributed.rank())
    return key


def open_run_cache(config: Any, teacher_sha256: str | None, num_train: int, device: torch.device, mode: str,
                   cache_dir: str | Path | None, reporter: Reporter = NULL_REPORTER,
                   ) -> tuple[TeacherOutputCache | None, dict[str, Any]]:
    """The run's cache (None when it has none) and what its record says about it before training.
    `teacher_sha256`: the digest of the teacher's weights the run loaded (its zoo card's or `--teacher-ckpt`'s);
    `reporter` hears of bad entries and of a disk the cache cannot write, once each."""
    dtype = config.teacher_cache_dtype or "float32"
    check_options(mode, dtype)
    if dtype == "float16" and mode == "off":
        raise UserError("--teacher-cache-dtype float16 rounds the teacher's outputs through the cache: it needs "
                        "--teacher-cache on")
    if config.teacher is None and not config.teacher_ckpt_sha256:
        return None, {"mode": "off", "why": "no teacher"}
    if mode == "off":
        return None, {"mode": "off"}
    sha = teacher_sha256 or config.teacher_ckpt_sha256
    if not sha:
        return None, {"mode": "off", "why": "the teacher has no checkpoint digest to key its outputs by"}
    cache = TeacherOutputCache(Path(cache_dir).expanduser() if cache_dir else default_cache_dir(),
                               run_cache_key(config, sha, num_train, device), num_train, config.recipe.epochs, dtype,
                               reporter=reporter)
    return cache, cache.describe()
