"""One teacher-output cache entry file: its byte format, and the checks that make a file someone else wrote either
exactly what this run would have written or refused.

Format (no pickle, as kdbench.core.safe_load requires of anything loaded): the magic `KDTC`, 8 bytes little-endian
header length, a JSON header, then the raw tensor bytes (the payload). The header holds exactly `format`,
`tensors` (name → dtype, shape, offset, nbytes), `meta` (epoch, output, namespace, the dtype the teacher
`produced`) and the payload's `sha256`.

A checksum only guards against damage, not against a colleague's file that is whole but wrong: int64 values
labelled float32 were read as floats and changed a run's numbers; a (N, 3) entry for 10 classes failed every run
that used it (issue #34). So :func:`read_entry` takes what the run expects (every output's per-sample shape and
dtype, from the teacher itself) and refuses anything else with the reason (:class:`BadEntry`); the cache then
removes the file and recomputes. It also reads no more than such an entry can hold: a symlink to /dev/zero, a
FIFO or an oversized file is refused (kdbench.core.storage), never read without end.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kdbench.core.storage import UnsafeFile, inside, read_regular_bytes

FORMAT = 1
SUFFIX = ".kdtc"
_MAGIC = b"KDTC"
_PREFIX = len(_MAGIC) + 8
# A header names two tensors and four meta fields: a few hundred bytes. The bound only caps what is read.
_MAX_HEADER = 1 << 16
# The dtypes an entry may hold, by the name its header gives: never `getattr(torch, name)` on a file's word.
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64,
          "uint8": torch.uint8}
_HEADER_KEYS = {"format", "tensors", "meta", "sha256"}
_TENSOR_KEYS = {"dtype", "shape", "offset", "nbytes"}
META_KEYS = {"epoch", "output", "namespace", "produced"}


class BadEntry(ValueError):
    """An entry file this run will not use; the message says why (one phrase, for the run's warning line)."""


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def encode_entry(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """Tensors (CPU) and a JSON-able `meta` as one self-checking byte string (format in the module docstring)."""
    parts, index, offset = [], {}, 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
        index[name] = {"dtype": dtype_name(t.dtype), "shape": list(t.shape), "offset": offset, "nbytes": len(raw)}
        parts.append(raw)
        offset += len(raw)
    payload = b"".join(parts)
    header = json.dumps({"format": FORMAT, "tensors": index, "meta": meta,
                         "sha256": hashlib.sha256(payload).hexdigest()}, sort_keys=True).encode()
    return _MAGIC + struct.pack("<Q", len(header)) + header + payload


def parse_entry(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and meta of an :func:`encode_entry` blob; BadEntry unless its header is well formed (known
    dtypes, each byte count the product of its shape and item size, tensors laid end to end over exactly the
    payload) and the payload matches its checksum."""
    if blob[:4] != _MAGIC or len(blob) < _PREFIX:
        raise BadEntry("not a cache entry")
    (n,) = struct.unpack("<Q", blob[4:_PREFIX])
    if n > _MAX_HEADER or len(blob) < _PREFIX + n:
        raise BadEntry("truncated")
    try:
        header = json.loads(blob[_PREFIX : _PREFIX + n])
    except (ValueError, RecursionError):  # RecursionError: "[[[[…" nested deeper than the parser goes
        raise BadEntry("unreadable header") from None
    if not isinstance(header, dict) or set(header) != _HEADER_KEYS or header["format"] != FORMAT:
        raise BadEntry("a header of another format")
    payload = memoryview(blob)[_PREFIX + n :]
    if not isinstance(header["tensors"], dict) or not isinstance(header["meta"], dict):
        raise BadEntry("a header of another format")
    infos = header["tensors"]
    for name, info in infos.items():
        if not isinstance(info, dict) or set(info) != _TENSOR_KEYS or not isinstance(info["dtype"], str) or \
                info["dtype"] not in DTYPES or \
                type(info["offset"]) is not int:
            raise BadEntry(f"tensor {name!r} of an unknown dtype or layout")
    out, offset = {}, 0
    for name, info in sorted(infos.items(), key=lambda item: item[1]["offset"]):  # (the header's keys are sorted)
        shape = info["shape"]
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise BadEntry(f"tensor {name!r} with a malformed shape")
        dtype = DTYPES[info["dtype"]]
        nbytes = math.prod(shape) * dtype.itemsize
        if info["offset"] != offset or info["nbytes"] != nbytes:
            raise BadEntry(f"tensor {name!r} of {info['nbytes']} bytes at {info['offset']}, not the {nbytes} its "
                           f"shape and dtype take at {offset}")
        if offset + nbytes > len(payload):
            raise BadEntry(f"{len(payload)} payload bytes where its header declares more")
        chunk = bytearray(payload[offset : offset + nbytes])
        flat = torch.frombuffer(chunk, dtype=dtype) if nbytes else torch.empty(0, dtype=dtype)
        out[name] = flat.reshape(shape)
        offset += nbytes
    if len(payload) != offset:
        raise BadEntry(f"{len(payload)} payload bytes where its header declares {offset}")
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise BadEntry("its checksum does not match (truncated or corrupt)")
    return out, header["meta"]


def decode_entry(blob: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
    """:func:`parse_entry`, or None when the blob is truncated, corrupt or foreign."""
    try:
        return parse_entry(blob)
    except BadEntry:
        return None


@dataclass(frozen=True)
class Expected:
    """What one output's entry must hold for this run: every training sample's row of the shape the teacher
    gives one sample, stored in `stored` (the run's cache dtype), read back as `produced` (the teacher's dtype)."""

    num_train: int
    row_shape: tuple[int, ...]
    produced: torch.dtype
    stored: torch.dtype

    @property
    def max_bytes(self) -> int:
        """The most bytes a file holding this entry can have: the read stops there (a device never ends)."""
        return _PREFIX + _MAX_HEADER + self.num_train * (math.prod(self.row_shape) * self.stored.itemsize + 1)


def read_cache_file(root: Path, path: Path, max_bytes: int) -> bytes:
    """The bytes of `path`, a file of the cache folder `root` of at most `max_bytes`: FileNotFoundError when there
    is none, BadEntry when it is reached through a symlink out of `root`, is not a regular file (a device never
    ends, a FIFO never answers) or is larger."""
    if not inside(root, path):
        if not os.path.lexists(path):
            raise FileNotFoundError(path)
        raise BadEntry("a symlink out of the cache folder")
    try:  # the reader refuses a device or FIFO itself (it opens without waiting for a writer)
        return read_regular_bytes(path, max_bytes=max_bytes)
    except UnsafeFile as e:
        raise BadEntry(str(e)) from None


def read_entry(root: Path, path: Path, expected: Expected, meta: dict[str, Any],
               ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The entry at `path` (in the cache folder `root`) as (values, filled rows as bool, bytes read), when it is
    exactly what this run stores: FileNotFoundError when there is none, BadEntry (with the reason) otherwise —
    a file reached through a symlink out of `root`, not a regular file, larger than an entry can be, malformed,
    or whole but of another shape, dtype or `meta` (epoch, output, namespace) than `expected`."""
    blob = read_cache_file(root, path, expected.max_bytes)
    tensors, got_meta = parse_entry(blob)
    if set(tensors) != {"values", "filled"}:
        raise BadEntry(f"tensors {sorted(tensors)}, not values and filled")
    values, filled = tensors["values"], tensors["filled"]
    want = (expected.num_train, *expected.row_shape)
    if tuple(values.shape) != want or values.dtype != expected.stored:
        raise BadEntry(f"values {dtype_name(values.dtype)} {tuple(values.shape)}, where this run stores "
                       f"{dtype_name(expected.stored)} {want}")
    if tuple(filled.shape) != (expected.num_train,) or filled.dtype != torch.uint8 or bool((filled > 1).any()):
        raise BadEntry("a mask of filled rows that is not one 0/1 byte per training sample")
    want_meta = {**meta, "produced": dtype_name(expected.produced)}
    if got_meta != want_meta:
        shown = json.dumps(got_meta, sort_keys=True)[:200]
        raise BadEntry(f"meta {shown}, not {json.dumps(want_meta, sort_keys=True)}")
    return values, filled.bool(), len(blob)
