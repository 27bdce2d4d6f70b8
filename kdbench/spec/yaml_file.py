"""Reading the YAML files a person hands to kdbench (`--config`: a run's options or a sweep's grid): the one
YAML reader of the package.

One reader for both, so each way a file can be unreadable (missing, a directory, a device, too large, not
UTF-8, bad YAML) is the same one-line UserError, naming the flag and where the YAML broke, whichever command
read it. A file may come from a colleague, so the reader also refuses what would hang a command or fill memory
before a value is used:

- an alias (`*name`): a few hundred bytes of nested aliases expand into billions of values as soon as a list is
  walked (the "billion laughs"); a sweep or run file never needs one, so aliases are refused where the parser
  meets them, before anything is built;
- an integer of more than MAX_INT_DIGITS digits: Python refuses to convert one of over 4,300 digits (a
  ValueError out of the YAML library), and no option of kdbench takes one of even a hundred;
- a file over MAX_FILE_BYTES, or one that is not a regular file (/dev/zero would be read forever).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kdbench.core.errors import UserError
from kdbench.core.storage import UnsafeFile, read_regular_bytes

# Sweep and run files are a few kilobytes; a megabyte is room for any of them and bounds the parse (~1 s).
MAX_FILE_BYTES = 1 << 20
# The longest integer a file may write: 2**64 has 20 digits; kdbench's largest values (seeds) have 10.
MAX_INT_DIGITS = 100
INT_TAG = "tag:yaml.org,2002:int"


def yaml_mapping(path: Path) -> Any:
    """The YAML document in `path`; each way it can be unreadable or unsafe is its own one-line UserError."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"--config {path}: no such file")
    if path.is_dir():
        raise UserError(f"--config {path}: is a directory, not a sweep file")
    if not path.is_file():  # the reader below refuses it too; this says what the file is instead
        raise UserError(f"--config {path}: not a regular file (a device or a FIFO); pass a YAML file")
    try:
        data = read_regular_bytes(path, MAX_FILE_BYTES)
    except UnsafeFile:
        raise UserError(f"--config {path}: larger than {MAX_FILE_BYTES >> 20} MiB, or not a regular file; pass a "
                        "YAML file") from None
    except OSError as e:
        raise UserError(f"--config {path}: cannot read it ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"--config {path}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})")\
            from None
    return _load(text, f"--config {path}")


def yaml_scalar(text: str) -> Any:
    """`text` as the YAML scalar it spells (`2` → 2, `true` → True), or the text itself when it is not one (a
    mapping, a list, an alias, an over-long integer, invalid YAML): how a `--set` value is written back to a file."""
    try:
        value = _load(text, "--set")
    except UserError:
        return text
    return text if isinstance(value, dict | list) else value


def _load(text: str, where: str) -> Any:
    """The document in `text`, read by the pure-Python safe loader with aliases and over-long integers refused
    (one line naming `where`, the line and the key)."""
    loader = _NoAliasLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}
        _check_integers(node, where)
        return loader.construct_document(node) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        if isinstance(e, _AliasRefused):
            raise UserError(f"{where}: a YAML alias{at} ({e.problem}): kdbench reads no aliases (a few of them "
                            "can expand into gigabytes); write the value out") from None
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where}: not valid YAML{at} ({problem})") from None
    except RecursionError:
        raise UserError(f"{where}: YAML nested too deeply to read") from None
    finally:
        loader.dispose()


def _check_integers(root: Any, where: str) -> None:
    """Refuse an integer literal of more than MAX_INT_DIGITS digits, naming its key, before it is built (walked
    without recursion: the composed document is a tree, aliases being refused)."""
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, key = stack.pop()
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = str(k.value) if isinstance(k, yaml.ScalarNode) else "?"
                stack.append((v, f"{key}.{name}" if key else name))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, f"{key}[{i}]") for i, v in enumerate(node.value))
        elif node.tag == INT_TAG:
            text = node.value.lstrip("+-")
            digits = sum(ch.isalnum() for ch in (text[2:] if text[:2].lower() in ("0x", "0o", "0b") else text))
            if digits > MAX_INT_DIGITS:
                raise UserError(f"{where}: {key or 'the document'}: {node.value[:12]}… (line "
                                f"{node.start_mark.line + 1}) is an integer of {digits} digits; allowed: "
                                f"at most {MAX_INT_DIGITS} digits")


class _AliasRefused(yaml.MarkedYAMLError):
    """Raised by the loader where it meets an alias."""


class _NoAliasLoader(yaml.SafeLoader):
    """yaml.SafeLoader refusing aliases where the parser meets them, before anything is composed from them (the
    pure-Python loader: libyaml's composer cannot be hooked)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _AliasRefused(problem=f"*{event.anchor}", problem_mark=event.start_mark)
        return super().compose_node(parent, index)
