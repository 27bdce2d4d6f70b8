"""The teacher-output cache: a frozen teacher's outputs on the training images, computed once per (seed, epoch).

A sweep runs many methods and hyperparameters with the same teacher on the same augmented images (augmentation
is a pure function of (seed, epoch, sample index): a counter hash, kdbench.data.keyed; the batches are a function
of (seed, epoch, batch size)). So the teacher's outputs for sample i in epoch e are the same bits in
every such run, and the first run stores them for the others to read.

An entry is one file per (namespace, epoch, output): the (N, ...) tensor of every training sample's output plus a
mask of the rows filled. The namespace is the hash of everything the bits depend on: the teacher checkpoint's
sha256, dataset and data parameters (its transform), the recipe's augmentation, seed, batch size (the batch a
sample was computed in: a convolution's bits may depend on it), training-set size, device type, AMP,
channels_last, stored dtype and the harness's RESULTS_VERSION. Outputs are "logits" always, and the feature
stages ("stage2", ...) or "embedding" a method asks for (kdbench.train.method.Distiller.teacher_features).

File format (no pickle, as kdbench.core.safe_load requires of anything loaded): 8 bytes little-endian header length,
a JSON header (tensor names, dtypes, shapes, offsets, the sha256 of the payload), then the raw tensor bytes. A
file whose payload does not match its checksum (truncated, corrupted) is removed and recomputed, never used (the
run says so once; the record counts them). The cache only saves time: a disk that refuses its writes (full,
read-only) is said once and the run goes on without storing to it, with the same numbers.
Writes are atomic (kdbench.core.storage), so concurrent runs filling the same entry each write a whole file and the
last rename wins. The cache is capped at $KDBENCH_CACHE_GB (default 20) with least-recently-used eviction (a read
touches its file); a run whose feature entries alone would exceed the cap recomputes its features (logits are
still cached).

fp32 (default): the cached bits are the recomputed bits, so results are unchanged and the cache is not in the run
id. float16 (opt-in, `--teacher-cache-dtype float16`) halves the size but changes results: it is in the run id.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from kdbench.core.errors import UserError
from kdbench.core.progress import NULL_REPORTER, Reporter
from kdbench.core.storage import atomic_write_bytes, atomic_write_json

FORMAT = 1
SUFFIX = ".kdtc"
DEFAULT_CAP_GB = 20.0
DTYPES = ("float32", "float16")
MODES = ("on", "off")
_MAGIC = b"KDTC"


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
# One entry file


def encode_entry(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """Tensors (CPU) and a JSON-able `meta` as one self-checking byte string (format in the module docstring)."""
    parts, index, offset = [], {}, 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        index[name] = {"dtype": str(t.dtype).removeprefix("torch."), "shape": list(t.shape), "offset": offset,
                       "nbytes": len(raw)}
        parts.append(raw)
        offset += len(raw)
    payload = b"".join(parts)
    header = json.dumps({"format": FORMAT, "tensors": index, "meta": meta,
                         "sha256": hashlib.sha256(payload).hexdigest()}, sort_keys=True).encode()
    return _MAGIC + struct.pack("<Q", len(header)) + header + payload


def decode_entry(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """The tensors and meta of an :func:`encode_entry` blob, or None when it is truncated, corrupt or foreign."""
    try:
        if blob[:4] != _MAGIC:
            return None
        (n,) = struct.unpack("<Q", blob[4:12])
        header = json.loads(blob[12 : 12 + n])
        payload = blob[12 + n :]
        if header.get("format") != FORMAT or hashlib.sha256(payload).hexdigest() != header["sha256"]:
            return None
        out = {}
        for name, info in header["tensors"].items():
            dtype = getattr(torch, info["dtype"])
            chunk = bytearray(payload[info["offset"] : info["offset"] + info["nbytes"]])
            flat = torch.frombuffer(chunk, dtype=dtype) if chunk else torch.empty(0, dtype=dtype)
            out[name] = flat.reshape(info["shape"])
        return out, header["meta"]
    except (ValueError, KeyError, TypeError, AttributeError, struct.error, RuntimeError):
        return None


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
    """The cache as one run uses it: `lookup` / `store` per batch, `set_epoch` by the engine, `flush` at epoch end.

    `key` is the namespace's identity (see the module docstring); `epochs` and the cap decide whether features
    are cached (their entries for the whole run must fit the cap).
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
    features: str = "none asked"
    # Where the cache says what the run should know (a damaged entry recomputed, a disk it cannot write): once.
    reporter: Reporter = NULL_REPORTER
    # Why nothing is written any more (a full or read-only disk): the cache is optional, the run goes on without it.
    unwritable: str = ""
    _slots: dict[str, _Slot] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.namespace = hashlib.sha256(json.dumps(self.key, sort_keys=True).encode()).hexdigest()[:20]
        self.dir = self.root / self.namespace

    # -- epochs ---------------------------------------------------------------------------------------------

    def teacher_outputs(self, teacher: torch.nn.Module, tap: Any, images: torch.Tensor, index: torch.Tensor) -> Any:
        """What Distiller.teacher_features asks of the cache: the batch's outputs, read or computed and stored."""
        return teacher_outputs(self, teacher, tap, images, index)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.flush()
            self._slots = {}
            self.epoch = epoch

    def _path(self, name: str) -> Path:
        return self.dir / f"e{self.epoch:05d}-{name}{SUFFIX}"

    def _slot(self, name: str) -> _Slot | None:
        """The epoch's stored `name` (read from disk on first use), or None when there is none yet."""
        if name in self._slots:
            return self._slots[name]
        path = self._path(name)
        try:
            blob = path.read_bytes()
        except OSError:
            return None
        decoded = decode_entry(blob)
        if decoded is None or set(decoded[0]) != {"values", "filled"} or \
                decoded[0]["values"].shape[0] != self.num_train or not hasattr(torch, str(decoded[1].get("produced"))):
            self.corrupt += 1
            if self.corrupt == 1:  # said once per run; the record counts them all
                self.reporter.log(f"teacher-output cache: {path} is damaged (truncated or corrupt); recomputing "
                                  "the teacher's outputs it held (same numbers; any further ones are counted in "
                                  "the record's teacher_cache)")
            # Never used; recomputed and rewritten by this run (a read-only cache keeps it: refused again by its
            # checksum).
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return None
        tensors, meta = decoded
        self.bytes_read += len(blob)
        with contextlib.suppress(OSError):  # a read-only cache is read all the same
            os.utime(path)  # least-recently-used eviction reads the modification time
        slot = _Slot(tensors["values"], tensors["filled"].bool(), getattr(torch, meta["produced"]))
        self._slots[name] = slot
        return slot

    # -- per batch ------------------------------------------------------------------------------------------

    def features_allowed(self, example: dict[str, torch.Tensor]) -> bool:
        """Whether feature outputs like `example` (one batch's) fit the cap for the whole run; decided once."""
        if self.features in ("cached", "recomputed"):
            return self.features == "cached"
        rows = {n: t for n, t in example.items() if n != "logits"}
        per_epoch = sum(t[0].numel() * _stored_size(t.dtype, self.dtype) for t in rows.values()) * self.num_train
        self.features = "cached" if per_epoch * self.epochs <= self.cap else "recomputed"
        self.feature_bytes = per_epoch * self.epochs
        return self.features == "cached"

    def lookup(self, names: list[str], index: torch.Tensor) -> dict[str, torch.Tensor] | None:
        """The batch's stored outputs by name (rows `index`, on `index`'s device), or None (a miss) unless every
        name has every row."""
        rows = index.cpu()
        out = {}
        for name in names:
            slot = self._slot(name)
            if slot is None or not bool(slot.filled[rows].all()):
                self.misses += 1
                return None
            out[name] = slot.values[rows].to(device=index.device, dtype=slot.produced)
        self.hits += 1
        return out

    def store(self, outputs: dict[str, torch.Tensor], index: torch.Tensor) -> None:
        if self.unwritable:  # nothing would reach the disk: keep no copy in memory either
            return
        rows = index.cpu()
        for name, value in outputs.items():
            value = value.detach()
            stored = value.to("cpu", dtype=torch.float16) if self.dtype == "float16" and value.is_floating_point() \
                else value.to("cpu")
            slot = self._slots.get(name)
            if slot is None:
                slot = _Slot(torch.zeros((self.num_train, *stored.shape[1:]), dtype=stored.dtype),
                             torch.zeros(self.num_train, dtype=torch.bool), value.dtype)
                self._slots[name] = slot
            slot.values[rows] = stored
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
        wrote = False
        for name, slot in self._slots.items():
            if not slot.dirty:
                continue
            self.dir.mkdir(parents=True, exist_ok=True)
            key_file = self.dir / "key.json"
            if not key_file.exists():
                atomic_write_json(key_file, self.key)
            blob = encode_entry({"values": slot.values, "filled": slot.filled.to(torch.uint8)},
                                {"epoch": self.epoch, "output": name, "namespace": self.namespace,
                                 "produced": str(slot.produced).removeprefix("torch.")})
            atomic_write_bytes(self._path(name), blob)
            self.bytes_written += len(blob)
            slot.dirty = False
            wrote = True
        if wrote:
            self.evicted += evict(self.root, self.cap, keep={self._path(n) for n in self._slots})

    def describe(self, mode: str = "on") -> dict[str, Any]:
        out = {"mode": mode, "dtype": self.dtype, "hits": self.hits, "misses": self.misses,
               "bytes_read": self.bytes_read, "bytes_written": self.bytes_written, "features": self.features,
               "namespace": self.namespace, "dir": str(self.root)}
        if self.corrupt:
            out["corrupt_entries_recomputed"] = self.corrupt
        if self.evicted:
            out["evicted_entries"] = self.evicted
        if self.unwritable:
            out["unwritable"] = self.unwritable
        if self.features == "recomputed":
            out["feature_bytes_needed"] = self.feature_bytes
        return out


def _stored_size(dtype: torch.dtype, cache_dtype: str) -> int:
    if cache_dtype == "float16" and dtype.is_floating_point:
        return 2
    return torch.empty((), dtype=dtype).element_size()


# ---------------------------------------------------------------------------------------------------------------
# The cache directory as a whole (kdbench cache list|clear, eviction)


def entries(root: Path) -> list[Path]:
    return sorted(Path(root).glob(f"*/*{SUFFIX}"))


def evict(root: Path, cap: int, keep: set[Path] = frozenset()) -> int:
    """Remove least-recently-used entries (oldest modification time first) until the cache holds ≤ `cap`
    bytes, never removing those in `keep` (the entries just written). The number removed."""
    files = []
    for path in entries(root):
        try:
            st = path.stat()
        except OSError:  # removed by another process meanwhile
            continue
        files.append((st.st_mtime, st.st_size, path))
    total = sum(size for _, size, _ in files)
    removed = 0
    for _, size, path in sorted(files):
        if total <= cap:
            break
        if path in keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed += 1
    return removed


def list_namespaces(root: Path) -> list[dict[str, Any]]:
    """One row per namespace: its key, entries, bytes and last use."""
    rows = []
    for ns in sorted(p for p in Path(root).glob("*") if p.is_dir()):
        files = list(ns.glob(f"*{SUFFIX}"))
        try:
            key = json.loads((ns / "key.json").read_text())
        except (OSError, ValueError):
            key = {}
        rows.append({"namespace": ns.name, "key": key, "entries": len(files),
                     "bytes": sum(f.stat().st_size for f in files),
                     "last_used": time.strftime("%Y-%m-%d %H:%M", time.localtime(
                         max((f.stat().st_mtime for f in files), default=ns.stat().st_mtime)))})
    return rows


def clear(root: Path) -> int:
    """Remove every namespace under `root`; the number of entries removed."""
    n = len(entries(root))
    for ns in Path(root).glob("*"):
        if ns.is_dir():
            shutil.rmtree(ns, ignore_errors=True)
    return n


# ---------------------------------------------------------------------------------------------------------------
# The one path from a method to its teacher's outputs (kdbench.train.method.Distiller.teacher_features)


def output_names(tap: Any) -> list[str]:
    """The cache names of what a FeatureTap (or None: logits only) returns."""
    if tap is None:
        return ["logits"]
    return ["logits", *(f"stage{i}" for i in tap.stage_ids), *(["embedding"] if tap.want_embedding else [])]


@torch.no_grad()
def teacher_outputs(cache: TeacherOutputCache | None, teacher: torch.nn.Module, tap: Any, images: torch.Tensor,
                    index: torch.Tensor) -> Any:
    """The teacher's :class:`~kdbench.models.features.Features` for a batch: read from `cache` when it holds every
    output for every sample, else computed (by `tap`, or the plain teacher for logits only) and stored."""
    from kdbench.models.features import Features

    names = output_names(tap)
    wants_features = len(names) > 1
    if cache is not None and not (wants_features and cache.features == "recomputed"):
        got = cache.lookup(names, index)
        if got is not None:
            stages = {i: got[f"stage{i}"] for i in (tap.stage_ids if tap is not None else [])}
            return Features(got["logits"], stages, got.get("embedding"))
    f = tap(images) if tap is not None else Features(teacher(images), {}, None)
    if cache is not None:
        outputs = {"logits": f.logits, **{f"stage{i}": v for i, v in f.stages.items()},
                   **({"embedding": f.embedding} if f.embedding is not None else {})}
        cache.store(outputs if not wants_features or cache.features_allowed(outputs) else {"logits": f.logits},
                    index)
        if cache.dtype == "float16":  # what a reading run gets, whether this batch was stored or not
            f = Features(_round_half(f.logits), {i: _round_half(v) for i, v in f.stages.items()},
                         None if f.embedding is None else _round_half(f.embedding))
    return f


def _round_half(t: torch.Tensor) -> torch.Tensor:
    return t.half().to(t.dtype) if t.is_floating_point() else t


# ---------------------------------------------------------------------------------------------------------------
# A run's cache


def open_run_cache(config: Any, record: dict[str, Any], num_train: int, device: torch.device, mode: str,
                   cache_dir: str | Path | None, reporter: Reporter = NULL_REPORTER,
                   ) -> tuple[TeacherOutputCache | None, dict[str, Any]]:
    """The run's cache (None when it has none) and what its record says about it before training; `reporter`
    hears of damaged entries and of a disk the cache cannot write, once each."""
    dtype = getattr(config, "teacher_cache_dtype", "") or "float32"
    check_options(mode, dtype)
    if dtype == "float16" and mode == "off":
        raise UserError("--teacher-cache-dtype float16 rounds the teacher's outputs through the cache: it needs "
                        "--teacher-cache on")
    if config.teacher is None and not config.teacher_ckpt_sha256:
        return None, {"mode": "off", "why": "no teacher"}
    if mode == "off":
        return None, {"mode": "off"}
    sha = (record.get("teacher_metrics") or {}).get("sha256") or config.teacher_ckpt_sha256
    if not sha:
        return None, {"mode": "off", "why": "the teacher has no checkpoint digest to key its outputs by"}
    from kdbench.store.fingerprint import RESULTS_VERSION

    key = {"format": FORMAT, "results_version": RESULTS_VERSION, "teacher_sha256": sha, "teacher": config.teacher,
           "teacher_params": config.teacher_params, "cifar_stem": config.recipe.cifar_stem,
           "dataset": config.dataset, "data_params": config.data_params, "augment": config.recipe.augment,
           "seed": config.seed, "batch_size": config.recipe.batch_size, "num_train": num_train,
           "device": device.type, "amp": config.amp, "channels_last": config.channels_last, "dtype": dtype}
    if getattr(config, "world_size", 1) > 1:
        # Each rank computes (and fills) only its own slices of the global batches, with its own batch size:
        # one entry per rank, or the ranks' writes would replace each other's rows.
        from kdbench.core import distributed

        key.update(world_size=config.world_size, rank=distributed.rank())
    cache = TeacherOutputCache(Path(cache_dir).expanduser() if cache_dir else default_cache_dir(), key, num_train,
                               config.recipe.epochs, dtype, reporter=reporter)
    return cache, cache.describe()
