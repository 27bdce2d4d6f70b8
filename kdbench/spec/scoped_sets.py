"""`SCOPE.KEY=VALUE` settings — what `--set` takes — parsed in one place, whether they come from the command line,
a YAML file or a `--grid` option.

`--set kd.temperature=2` items become `{"kd": {"temperature": "2"}}` (:func:`parse_set_options`). A config or sweep
file writes them as a flat mapping (`kd.temperature: 2`), a nested one (`kd: {temperature: 2}`) or a list of
`kd.temperature=2` strings (:func:`set_items`); a grid gives each key a list of values (`kd.temperature: [1, 2, 4]`,
or `--grid kd.temperature=1,2,4`; :func:`parse_grid`). Values stay the text `--set` would take, so a file and the
command line go through the one conversion of :func:`kdbench.spec.config.apply_overrides` and give the same run id.
"""

from __future__ import annotations

from typing import Any

from kdbench.core.errors import UserError, shortened


def split_scoped_key(key: str) -> tuple[str, str] | None:
    """`"kd.temperature"` → `("kd", "temperature")` (stripped); None when a scope or a key is missing. Every
    reader of SCOPE.KEY goes through here, so the command line, files and grids agree on what a key is."""
    scope, dot, name = key.strip().partition(".")
    return (scope, name) if dot and scope and name else None


def parse_set_options(items: list[str] | None) -> dict[str, dict[str, str]]:
    """Split `["kd.temperature=2", "student.k=0"]` into `{"kd": {"temperature": "2"}, "student": {"k": "0"}}`.

    Values stay strings here; they are converted against the target dataclass by
    :func:`kdbench.spec.config.apply_overrides`. A later item of the same key wins.
    """
    out: dict[str, dict[str, str]] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        scoped = split_scoped_key(key) if sep else None
        if scoped is None:
            raise UserError(f"--set expects SCOPE.KEY=VALUE (e.g. kd.temperature=2), got '{shortened(item)}'")
        out.setdefault(scoped[0], {})[scoped[1]] = value.strip()
    return out


def set_key(item: str) -> str:
    """`"kd.temperature=2"` → `"kd.temperature"` (the text before `=`, stripped)."""
    return item.partition("=")[0].strip()


def set_scope(item: str) -> str:
    """`"kd.temperature=2"` → `"kd"`."""
    return set_key(item).partition(".")[0]


def value_text(value: Any) -> str:
    """A YAML value as `--set` text: booleans `true`/`false`, null `none`, a list `(a,b)` (a tuple field)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return "(" + ",".join(value_text(v) for v in value) + ")"
    return str(value)


def flatten_scoped(mapping: dict[Any, Any], what: str) -> dict[str, Any]:
    """`{"kd": {"temperature": 2}, "recipe.lr": 0.1}` → `{"kd.temperature": 2, "recipe.lr": 0.1}`."""
    out: dict[str, Any] = {}
    for scope, value in mapping.items():
        scope = str(scope).strip()
        if isinstance(value, dict):
            if "." in scope:
                raise UserError(f"{what}: '{shortened(scope)}' holds a mapping; write SCOPE: {{KEY: VALUE}} or "
                                "SCOPE.KEY: VALUE")
            for key, inner in value.items():
                out[f"{scope}.{str(key).strip()}"] = inner
        else:
            out[scope] = value
    for key in out:
        if split_scoped_key(key) is None:
            raise UserError(f"{what}: expected SCOPE.KEY (e.g. kd.temperature), got '{shortened(key)}'")
    return out


def set_items(value: Any, what: str = "set") -> list[str]:
    """`--set` items from a YAML mapping (flat or nested), a list of `SCOPE.KEY=VALUE` strings, or one string."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [f"{k}={value_text(v)}" for k, v in flatten_scoped(value, what).items()]
    if isinstance(value, str):
        return [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    raise UserError(f"{what}: expected a mapping of SCOPE.KEY: VALUE or a list of SCOPE.KEY=VALUE, got "
                    f"{shortened(repr(value))}")


def split_values(text: str) -> list[str]:
    """`"1,2,4"` → `["1", "2", "4"]`; commas inside brackets stay (`"(1,2),(2,3)"` → two tuple values)."""
    out, depth, current = [], 0, ""
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
        else:
            current += ch
    out.append(current.strip())
    return [v for v in out if v]


def parse_grid(value: Any, what: str = "--grid") -> dict[str, list[str]]:
    """A grid as `{SCOPE.KEY: [value text, ...]}` from `--grid SCOPE.KEY=V1,V2` strings or a YAML mapping
    (values a list, one value, or a comma string). A key's values keep their order; repeats are dropped."""
    if value is None:
        return {}
    grid: dict[str, list[str]] = {}
    if isinstance(value, dict):
        for key, values in flatten_scoped(value, what).items():
            items = values if isinstance(values, list | tuple) else split_values(value_text(values))
            grid[key] = [value_text(v) if not isinstance(v, str) else v.strip() for v in items]
    else:
        for item in [value] if isinstance(value, str) else value:
            key, sep, values = str(item).partition("=")
            if not sep or split_scoped_key(key) is None:
                raise UserError(f"{what} expects SCOPE.KEY=V1,V2,... (e.g. kd.temperature=1,2,4), got "
                                f"'{shortened(str(item))}'")
            grid[key.strip()] = split_values(values)
    for key, values in grid.items():
        if not values:
            raise UserError(f"{what} {key}: no values (expected e.g. {key}=1,2,4)")
        grid[key] = list(dict.fromkeys(values))
    return grid
