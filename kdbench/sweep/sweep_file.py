"""A sweep's options, from a sweep file (YAML) or `kdbench sweep`'s flags: each key's check, and the Grid,
Resources, Paths and JobSettings built from them (kdbench.sweep.grid holds those and expands the grid).

A sweep file uses the CLI's option names (`methods`, `teachers`, `seeds`, `epochs`, `sets` (or `set`, as in a
run's config file; a mapping of SCOPE.KEY: VALUE or a list of SCOPE.KEY=VALUE), `grid`, `partition`,
`gpus_per_node`, `max_runs`, ... with `_` or `-`); lists may be YAML lists or comma strings. A pair is written
`TEACHER:STUDENT` (or a two-item list), a student trained alone just `STUDENT`.

Every key has one entry in OPTION_KEYS: what it allows and the check that converts it. A file may come from a
colleague, so each value is checked where the file is read, and a wrong one (`epochs: 1e999`, `lr: abc`,
`gpus_per_node: abc`) is one line naming the file, the key, the value (shortened) and what is allowed, before
anything is built from it. The same checks hold the command line's values (and a resumed sweep's resources).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.core.errors import UserError, shortened
from kdbench.spec.paths import Paths
from kdbench.spec.scoped_sets import parse_grid, set_items
from kdbench.spec.yaml_file import yaml_mapping
from kdbench.sweep.chains import parse_chains
from kdbench.sweep.grid import DEFAULT_MAX_RUNS, Grid, JobSettings, Resources

INT_MAX = 2**31 - 1  # SLURM's and torch's seeds' bound; no count kdbench takes comes near it
MAX_SEEDS = 100_000  # a seed range longer than this is a typo (`0-1000000000`), refused before it is listed


def split_list(value: str | list[Any] | tuple[Any, ...] | None) -> list[str]:
    """`"ce, kd"` or `["ce", "kd"]` → `["ce", "kd"]`; None or "" → []."""
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in str(value).split(",") if part.strip()]


def parse_pairs(value: str | list[Any] | None) -> list[tuple[str | None, str]]:
    """`"resnet56:resnet20, resnet110:resnet32, resnet18"`, or a YAML list of such strings or of
    [teacher, student]; a lone `STUDENT` is (None, STUDENT), a model trained alone."""
    if value is None:
        return []
    items = value if isinstance(value, list | tuple) else split_list(value)
    out: list[tuple[str | None, str]] = []
    for item in items:
        parts = [str(p).strip() for p in item if p is not None] if isinstance(item, list | tuple) else \
            [p.strip() for p in str(item).split(":")]
        if len(parts) == 1 and parts[0]:
            out.append((None, parts[0]))
        elif len(parts) == 2 and all(parts):
            out.append((parts[0], parts[1]))
        else:
            raise UserError(f"pairs: expected TEACHER:STUDENT (e.g. cifar_resnet32x4:cifar_resnet8x4) or a "
                            f"STUDENT trained alone, got '{shortened(str(item))}'")
    return out


def parse_seeds(value: str | int | list[Any] | None) -> list[int]:
    """`"0,1,2"`, `"0-4"` (inclusive range) or `[0, 1]` → a list of ints in [0, INT_MAX], at most MAX_SEEDS of
    them (a range is measured before it is listed)."""
    out: list[int] = []
    for part in split_list([value] if isinstance(value, int) else value):
        lo, dash, hi = part.partition("-")
        try:
            bounds = (int(lo), int(hi)) if dash and lo else (int(part), int(part))
        except ValueError:
            raise UserError(f"seeds: expected integers like 0,1,2 or 0-4, got '{shortened(part)}'") from None
        if not 0 <= bounds[0] <= bounds[1] <= INT_MAX:
            raise UserError(f"seeds: '{shortened(part)}' is out of range; allowed: integers from 0 to {INT_MAX}, "
                            "a range low-high with low <= high")
        if len(out) + bounds[1] - bounds[0] + 1 > MAX_SEEDS:
            raise UserError(f"seeds: '{shortened(part)}' makes more than {MAX_SEEDS:,} seeds; allowed: at most "
                            f"{MAX_SEEDS:,}")
        out.extend(range(bounds[0], bounds[1] + 1))
    return out


def parse_sbatch(value: dict[str, Any] | list[str] | str | None) -> dict[str, str]:
    """Extra sbatch options from `KEY=VALUE` strings or a mapping (`{"exclusive": ""}` gives `--exclusive`)."""
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k).lstrip("-"): "" if v is None else str(v) for k, v in value.items()}
    out: dict[str, str] = {}
    for item in [value] if isinstance(value, str) else value:
        key, _, val = str(item).partition("=")
        key = key.strip().lstrip("-")
        if not key:
            raise UserError(f"--sbatch expects KEY=VALUE (e.g. --sbatch exclusive= or --sbatch nice=10), got "
                            f"'{shortened(str(item))}'")
        out[key] = val.strip()
    return out


# ---------------------------------------------------------------------------------------------------------
# The key table: each option's check. A check returns the value converted, or raises ValueError/TypeError (the
# caller words the one line from the key's `allowed`), or a UserError of its own (the list parsers above).


@dataclass(frozen=True)
class OptionKey:
    allowed: str  # what the key takes, as an error line says it
    check: Callable[[Any], Any]  # the value converted; ValueError or TypeError when not allowed


def _integer(low: int, high: int = INT_MAX) -> OptionKey:
    def check(value: Any) -> int:
        # A bool is an int to Python (`epochs: true` would be 1 epoch) and a float would be truncated (2.5 → 2):
        # only an integer, or its text, is one.
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise TypeError(value)
        number = int(value)  # ValueError for text that is not an integer (or of over 4,300 digits)
        if not low <= number <= high:
            raise ValueError(value)
        return number

    return OptionKey(f"an integer from {low} to {high}", check)


def _number(*, positive: bool) -> OptionKey:
    """A number (its text too); `positive`: finite and > 0, else any float (a range checked downstream)."""

    def check(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(value)
        number = float(value)  # ValueError for text that is not a number
        if positive and not (math.isfinite(number) and number > 0):  # 1e999 reads as inf, .nan as NaN
            raise ValueError(value)
        return number

    return OptionKey("a finite number > 0" if positive else "a number", check)


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):  # bool("false") is True: a string is never taken for a flag
        raise TypeError(value)
    return value


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Path) or not str(value).strip():
        raise TypeError(value)
    return str(value)


def _names(value: Any) -> list[str]:
    items = value if isinstance(value, list | tuple) else [value]
    if any(isinstance(v, bool) or not isinstance(v, str | int | float) for v in items):
        raise TypeError(value)
    return split_list(value if isinstance(value, list | tuple) else str(value))


def _on_off(value: Any) -> str:
    word = {True: "on", False: "off"}.get(value, value) if isinstance(value, bool) else str(value).strip().lower()
    if word not in ("on", "off"):  # YAML reads a bare on/off as a boolean: both spellings are taken
        raise ValueError(value)
    return word


_NAMES = OptionKey("a name or a list of names (YAML list or comma text)", _names)
_PATH = OptionKey("a folder path", _text)
_TEXT = OptionKey("text", _text)
_FLAG = OptionKey("true or false", _flag)

OPTION_KEYS: dict[str, OptionKey] = {
    # the grid (kdbench.sweep.grid.Grid)
    "methods": _NAMES, "teachers": _NAMES, "students": _NAMES, "datasets": _NAMES,
    "pairs": OptionKey("TEACHER:STUDENT pairs (a list or comma text)", parse_pairs),
    "chains": OptionKey("chains ARCH,ARCH,... (a list)", parse_chains),
    "seeds": OptionKey(f"integers 0,1,2 or a range 0-4 (from 0 to {INT_MAX})", parse_seeds),
    # epochs, batch size and lr: the recipe (kdbench.spec.recipe) holds their ranges and checks them (NaN and
    # ±inf included), as for `kdbench run`
    "teacher_seed": _integer(0),
    "teacher_seeds": OptionKey(f"integers 0,1,2 or a range 0-2 (from 0 to {INT_MAX})", parse_seeds),
    "epochs": _integer(1), "teacher_epochs": _integer(1), "batch_size": _integer(1),
    "lr": _number(positive=False),
    "sets": OptionKey("SCOPE.KEY: VALUE settings (a mapping or a list of SCOPE.KEY=VALUE)",
                      lambda v: set_items(v, "sets")),
    "grid": OptionKey("SCOPE.KEY: [VALUES] (a mapping or a list of SCOPE.KEY=V1,V2)", lambda v: parse_grid(v, "grid")),
    "amp": _FLAG, "channels_last": _FLAG, "portable": _FLAG, "compile": _FLAG, "compile_mode": _TEXT,
    # where things live and how each job runs (kdbench.spec.paths.Paths, kdbench.sweep.grid.JobSettings)
    "results_dir": _PATH, "zoo_dir": _PATH, "data_root": _PATH, "cache_dir": _PATH,
    "device": _TEXT, "teacher_cache": OptionKey("on or off", _on_off), "checkpoint_every_steps": _integer(0),
    # what each job asks the scheduler for (kdbench.sweep.grid.Resources)
    "partition": _TEXT, "account": _TEXT, "qos": _TEXT, "constraint": _TEXT,
    "gpus_per_node": _integer(0), "cpus_per_task": _integer(1), "mem_gb": _number(positive=True),
    "timeout_min": _integer(1), "max_requeues": _integer(0), "array_parallelism": _integer(1),
    "tasks_per_node": _integer(1), "nodes": _integer(1), "sync_bn": _FLAG,
    "sbatch": OptionKey("KEY=VALUE items (a mapping or a list)", parse_sbatch),
    # the sweep itself
    "executor": _TEXT,
    "max_runs": _integer(1),
}


def checked(key: str, value: Any, where: str = "") -> Any:
    """`value` of option `key` through its check; a value it refuses is one line naming the option (`where`
    `key` for a file's, e.g. "--config f.yaml: epochs", else the flag), the value (shortened) and what is
    allowed. None (not given, or YAML's null) stays None."""
    if value is None:
        return None
    option = OPTION_KEYS[key]
    try:
        return option.check(value)
    except (ValueError, TypeError, OverflowError):
        name = f"{where}{key}" if where else f"--{key.replace('_', '-')}"
        raise UserError(f"{name}: {shortened(repr(value))}: allowed: {option.allowed}") from None
    except UserError as e:  # a list parser's own line (it names the key)
        raise UserError(f"{where}{e}") from None


def read_sweep_file(path: str | Path) -> dict[str, Any]:
    """A sweep YAML as a flat dict of checked option values, keys normalised (`gpus-per-node` →
    `gpus_per_node`, `set` → `sets`).

    Unknown keys are an error listing the valid ones, so a typo never silently drops an option.
    """
    path = Path(path)
    raw = yaml_mapping(path)
    if not isinstance(raw, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value at the top level")
    out = {str(k).replace("-", "_"): v for k, v in raw.items()}
    if "set" in out:  # a run config file's name for it (`kdbench run --config`)
        if "sets" in out:
            raise UserError(f"--config {path}: give the settings once, as set: or as sets:")
        out["sets"] = out.pop("set")
    unknown = sorted(set(out) - set(OPTION_KEYS))
    if unknown:
        raise UserError(f"--config {path}: unknown key '{shortened(unknown[0])}'. Valid: "
                        f"{', '.join(sorted(OPTION_KEYS))}")
    return {key: checked(key, value, f"--config {path}: ") for key, value in out.items()}


def _option(options: dict[str, Any], key: str) -> Any:
    """The checked value of `key` in merged options (the file's are checked already: a value refused here is a
    flag's, named as its flag)."""
    return checked(key, options.get(key))


def grid_from_options(options: dict[str, Any]) -> Grid:
    """Build a :class:`Grid` from merged file + CLI options (lists as lists or comma strings)."""
    return Grid(
        methods=_option(options, "methods") or [],
        teachers=_option(options, "teachers") or [],
        students=_option(options, "students") or [],
        pairs=_option(options, "pairs") or [],
        chains=_option(options, "chains") or [],
        datasets=_option(options, "datasets") or ["digits"],
        seeds=_option(options, "seeds") or [0],
        teacher_seed=_option(options, "teacher_seed") or 0,
        teacher_seeds=_option(options, "teacher_seeds") or [],
        epochs=_option(options, "epochs"),
        teacher_epochs=_option(options, "teacher_epochs"),
        batch_size=_option(options, "batch_size"),
        lr=_option(options, "lr"),
        sets=_option(options, "sets") or [],
        grid=_option(options, "grid") or {},
        amp=bool(_option(options, "amp")),
        channels_last=bool(_option(options, "channels_last")),
        portable=bool(_option(options, "portable")),
        compile=bool(_option(options, "compile")),
        compile_mode=_option(options, "compile_mode") or "default",
    )


def max_runs_from_options(options: dict[str, Any]) -> int:
    """The most runs the sweep may expand to (`--max-runs`, `max_runs:`; DEFAULT_MAX_RUNS)."""
    given = _option(options, "max_runs")
    return DEFAULT_MAX_RUNS if given is None else given


def resources_from_options(options: dict[str, Any]) -> Resources:
    """What each job asks for, every value checked, then the checks across values."""
    kw = {f.name: _option(options, f.name) for f in dataclasses.fields(Resources)}
    res = Resources(**{k: v for k, v in kw.items() if v is not None})
    if res.sync_bn and res.world_size == 1:
        raise UserError("--sync-bn synchronises BatchNorm across the processes of one run, and each run has one: "
                        "add --tasks-per-node N or --nodes M, or drop --sync-bn")
    if res.sync_bn and res.gpus_per_node == 0:
        raise UserError("--sync-bn needs GPUs (torch's SyncBatchNorm does not run on CPU): add --gpus-per-node N "
                        "or drop --sync-bn")
    return res


def paths_from_options(options: dict[str, Any]) -> Paths:
    return Paths.from_dict({f.name: _option(options, f.name) for f in dataclasses.fields(Paths)})


def job_settings_from_options(options: dict[str, Any]) -> JobSettings:
    return JobSettings(device=_option(options, "device") or "auto",
                       teacher_cache=_option(options, "teacher_cache") or "on",
                       checkpoint_every_steps=_option(options, "checkpoint_every_steps") or 0)
