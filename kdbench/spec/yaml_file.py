"""Reading the YAML file a person hands to `--config` (a run's options or a sweep's grid).

One reader for both, so each way a file can be unreadable (missing, a directory, not UTF-8, bad YAML) is the same
one-line UserError, naming the flag and where the YAML broke, whichever command read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdbench.core.errors import UserError


def yaml_mapping(path: Path) -> Any:
    """The YAML document in `path`; each way it can be unreadable is its own one-line UserError."""
    import yaml  # imported here: only the commands that read a file pay for it

    if not path.exists():
        raise UserError(f"--config {path}: no such file")
    if path.is_dir():
        raise UserError(f"--config {path}: is a directory, not a sweep file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"--config {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})")\
            from None
    except OSError as e:
        raise UserError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"--config {path}: not valid YAML{where} ({problem})") from None
