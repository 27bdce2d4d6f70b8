"""Reading the teacher zoo's files as files a colleague may have handed over (issue #34): a card is checked before a
field of it is used, a weight file is read no further than its card declares, and nothing is read or written
through a symlink that leads out of the zoo.

- A card (`card.json`) is at most CARD_MAX_BYTES of a regular file, a JSON object with the fields runs and
  `kdbench teachers list` use, each of its type (`arch` a string, `top1` a number...): anything else is a
  :class:`BadZooFile` naming what is wrong.
- The weights (`model.safetensors`) are hashed reading no more than the card's `size` (cards written since issue
  #34; older cards: the regular file's own size), and a device or FIFO (a link to /dev/zero) is refused, not read
  forever.
- An entry folder, card or weight file that resolves out of the zoo's root is not loaded, and is never written
  through: :func:`claim_folder` replaces such links by folders of the zoo's own before anything is stored.
"""

from __future__ import annotations

import json
import os
import re
from numbers import Real
from pathlib import Path
from typing import Any

from kdbench.core.errors import UserError
from kdbench.core.storage import UnsafeFile, inside, read_regular_bytes, sha256_file

CARD_MAX_BYTES = 1 << 20  # a card is ~3 kB: anything near this is not one
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BadZooFile(ValueError):
    """A zoo file that must not be used; the message says what is wrong with it (without its path)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


# The card fields a run or `kdbench teachers list` reads, and the type each must have.
_FIELDS: dict[str, tuple[str, Any]] = {
    "arch": ("a string", lambda v: isinstance(v, str)),
    "dataset": ("a string", lambda v: isinstance(v, str)),
    "recipe": ("a string", lambda v: isinstance(v, str)),
    "seed": ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "sha256": ("64 hex digits", lambda v: isinstance(v, str) and _SHA256.fullmatch(v) is not None),
    "top1": ("a number", _is_number),
    "top5": ("a number", _is_number),
    "params": ("a number", _is_number),
    "train_s": ("a number", _is_number),
}
_OPTIONAL: dict[str, tuple[str, Any]] = {
    "size": ("a byte count", lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0),
    "train_data": ("an object with a numeric train_fraction",
                   lambda v: isinstance(v, dict) and _is_number(v.get("train_fraction", 1.0))),
    "source": ("a string", lambda v: isinstance(v, str)),
}


def outside_note(root: Path, path: Path) -> str | None:
    """"a symlink out of the zoo (→ TARGET)" when `path` resolves out of `root`, else None."""
    if inside(root, path):
        return None
    try:
        target = str(Path(path).resolve())
    except (OSError, RuntimeError):
        target = "a symlink loop"
    return f"a symlink out of the zoo (→ {target})"


def read_card(root: Path, path: Path) -> dict[str, Any]:
    """The zoo card `path` (under the zoo `root`), checked: BadZooFile saying why it is not one."""
    note = outside_note(root, path)
    if note:
        raise BadZooFile(note)
    try:
        text = read_regular_bytes(path, max_bytes=CARD_MAX_BYTES).decode()
        card = json.loads(text)
    except UnsafeFile as e:
        raise BadZooFile(_unsafe_reason(e)) from None
    except OSError as e:
        raise BadZooFile(f"unreadable ({e.strerror or e})") from None
    except (UnicodeDecodeError, ValueError) as e:  # ValueError: JSONDecodeError, and a number of 5,000 digits
        raise BadZooFile(f"not JSON ({_first_line(e)})") from None
    if not isinstance(card, dict):
        raise BadZooFile(f"not a JSON object but a {type(card).__name__}")
    for name, (kind, ok) in _FIELDS.items():
        if name not in card:
            raise BadZooFile(f"no '{name}'")
        if not ok(card[name]):
            raise BadZooFile(f"'{name}' is {_shown(card[name])}, not {kind}")
    for name, (kind, ok) in _OPTIONAL.items():
        if name in card and not ok(card[name]):
            raise BadZooFile(f"'{name}' is {_shown(card[name])}, not {kind}")
    return card


def weights_sha256(root: Path, path: Path, card: dict[str, Any]) -> str:
    """The sha256 of the weight file `path`, reading no more than `card["size"]` bytes (cards without one: the
    file's own size); BadZooFile for a file out of the zoo, a device, a FIFO or a file over its size."""
    note = outside_note(root, path)
    if note:
        raise BadZooFile(note)
    try:
        return sha256_file(path, max_bytes=card.get("size"))
    except UnsafeFile as e:
        raise BadZooFile(_unsafe_reason(e)) from None
    except OSError as e:
        raise BadZooFile(f"unreadable ({e.strerror or e})") from None


def claim_folder(root: Path, folder: Path) -> list[str]:
    """Make `folder` (under `root`) a real folder of the zoo, to write into: each symlink on the way from `root`
    that leads out of it is removed (the link, never its target) and replaced by a folder. The links removed,
    as "PATH → TARGET", for the caller to say."""
    removed = []
    for part in [*reversed(folder.relative_to(root).parents)][1:] + [folder.relative_to(root)]:
        path = root / part
        if path.is_symlink() and not inside(root, path):
            removed.append(f"{path} → {os.path.realpath(path)}")
            path.unlink(missing_ok=True)  # missing: removed by a concurrent run
    folder.mkdir(parents=True, exist_ok=True)
    return removed


def unlink_if_symlink(path: Path) -> None:
    """Remove `path` when it is a symlink, so that what is then written there (a lock file, which opening
    truncates; a work folder) lands in the zoo and not in whatever the link points to."""
    if path.is_symlink():
        path.unlink(missing_ok=True)


def regular_source(path: Path, option: str) -> Path:
    """`path` when it is (a link to) a regular file: a UserError naming `option` when it is missing or a
    device/FIFO (a link to /dev/zero would be read forever)."""
    if not path.exists():
        raise UserError(f"{option} {path}: no such file")
    if not path.is_file():
        raise UserError(f"{option} {path}: not a regular file (a device, a FIFO or a folder): refused, not read")
    return path


def user_file_sha256(path: Path, option: str) -> str:
    """The sha256 of the user's file `path` (`--teacher-ckpt`, `teachers import`): one-line UserError naming
    `option` for a missing file or one that is not a regular file, instead of reading a device without end."""
    regular_source(path, option)
    try:
        return sha256_file(path)
    except UnsafeFile as e:  # swapped for a device after the check above
        raise UserError(f"{option} {path}: {_unsafe_reason(e)}: refused, not read") from None
    except OSError as e:
        raise UserError(f"{option} {path}: cannot read it ({e.strerror or e})") from None


def _unsafe_reason(e: UnsafeFile) -> str:
    text = str(e)
    if text.startswith("not a regular file"):
        return "not a regular file (a device or a FIFO)"
    return "holds " + text.split(" holds ", 1)[1] if " holds " in text else text


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0][:120] if str(e) else type(e).__name__


def _shown(value: Any) -> str:
    return json.dumps(value)[:40] if not isinstance(value, dict | list) else f"a JSON {type(value).__name__}"
