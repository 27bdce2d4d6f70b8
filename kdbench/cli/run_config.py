"""`kdbench run --config FILE.yaml` and `--save-config FILE.yaml`: one run's options in a YAML file.

The file's keys are the command's option names (`method`, `teacher`, `teacher_seed` or `teacher-seed`, `epochs`,
`amp`, ...), plus `set:`, a mapping of `SCOPE.KEY: VALUE` (or `SCOPE: {KEY: VALUE}`, or a list of
`SCOPE.KEY=VALUE`). Each value goes through the very conversion click gives the flag, so a file and the command
line give the same run id. An option given on the command line wins over the file (click's parameter source
tells a typed flag from a default); a `--set` wins over the file's same key. (Typer ships its own copy of click,
so the command, its parameters and the source are typer's objects; the source is compared by name.)

`--save-config` writes the options as given, with the student, epochs, batch size and learning rate the run
resolved to (so a later change of a recipe default does not change what the file reruns) and paths made
absolute; reading it back with `--config` gives the same run id. `--force` is left out: it is an act, not a
setting.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
import yaml

from kdbench.core.errors import UserError
from kdbench.core.storage import atomic_write_text
from kdbench.execute.resolve import RunOptions, resolve_config, with_run_teacher
from kdbench.spec.config import RunConfig
from kdbench.spec.scoped_sets import parse_set_options, set_items, value_text
from kdbench.spec.yaml_file import yaml_mapping, yaml_scalar

# Options about this invocation, not about the run: never read from or written to a config file.
INVOCATION_OPTIONS = ("config", "save_config", "as_json", "dry_run")
# Where a parameter's value came from when the command line did not give it (click's ParameterSource names).
NOT_GIVEN = ("DEFAULT", "DEFAULT_MAP")
# Options written only when given: where files live and how this machine runs, not what the run is.
MACHINE_OPTIONS = ("results_dir", "zoo_dir", "data_root", "device", "strict", "deterministic", "cache_dir",
                   "data_on_device", "checkpoint_every_steps")
# `--data-on-device`: the words and what kdbench.execute.api.run is given for each.
DATA_ON_DEVICE = {"auto": None, "on": True, "off": False}
PATH_OPTIONS = ("results_dir", "zoo_dir", "data_root", "teacher_ckpt", "cache_dir")


def _file_keys(command: Any) -> dict[str, Any]:
    """The config-file key of each option of the command (`set` for `--set`), excluding the invocation ones."""
    return {("set" if p.name == "sets" else str(p.name)): p for p in command.params
            if p.name not in INVOCATION_OPTIONS}


def read_run_config(path: Path, command: Any) -> dict[str, Any]:
    """The file's options by key (`-` read as `_`, `sets` as `set`); an unknown key names the valid ones."""
    raw = yaml_mapping(Path(path))
    if not isinstance(raw, dict):
        raise UserError(f"--config {path}: expected a mapping of option: value at the top level")
    keys = _file_keys(command)
    out: dict[str, Any] = {}
    for key, value in raw.items():
        key = str(key).replace("-", "_")
        key = "set" if key == "sets" else key
        if key not in keys:
            raise UserError(f"--config {path}: unknown key '{key}'. Valid: {', '.join(sorted(keys))}")
        out[key] = value
    return out


def _convert(param: Any, ctx: typer.Context, value: Any, path: Path, key: str) -> Any:
    """A file value as the command would receive it from its flag (the same type checks and conversions)."""
    if value is None:
        return None
    try:
        return param.process_value(ctx, value)
    except typer.BadParameter as e:
        raise UserError(f"--config {path}: {key}: {e.message}") from None


def run_params(ctx: typer.Context, path: Path | None) -> dict[str, Any]:
    """The command's parameters with the config file under them: a flag given on the command line wins, and
    the file's `set` items come first so that a `--set` of the same key overrides them."""
    params = dict(ctx.params)
    params["sets"] = list(params.get("sets") or [])
    if path is None:
        return params
    keys = _file_keys(ctx.command)
    given = read_run_config(path, ctx.command)
    for key, value in given.items():
        if key == "set":
            continue
        name = str(keys[key].name)
        source = ctx.get_parameter_source(name)
        if source is None or source.name in NOT_GIVEN:
            params[name] = _convert(keys[key], ctx, value, path, key)
    params["sets"] = [*set_items(given.get("set"), f"--config {path}: set"), *params["sets"]]
    return params


def run_options(params: dict[str, Any]) -> RunOptions:
    """The identity-bearing options of a run from the command's parameters."""
    ckpt = params.get("teacher_ckpt")
    return RunOptions(
        method=params["method"], teacher=params.get("teacher"), student=params.get("student"),
        dataset=params.get("dataset") or "digits", seed=params.get("seed") or 0,
        teacher_seed=params.get("teacher_seed") or 0, epochs=params.get("epochs"),
        teacher_epochs=params.get("teacher_epochs"), batch_size=params.get("batch_size"), lr=params.get("lr"),
        sets=list(params.get("sets") or []), teacher_ckpt=str(ckpt) if ckpt else None,
        amp=bool(params.get("amp")), channels_last=bool(params.get("channels_last")),
        teacher_cache_dtype=params.get("teacher_cache_dtype") or "float32", portable=bool(params.get("portable")),
        compile=bool(params.get("compile")), compile_mode=params.get("compile_mode") or "default",
    )


def run_identity(params: dict[str, Any]) -> RunOptions:
    """The run's identity-bearing options; a missing method is a UserError (the one option without a default)."""
    if not params.get("method"):
        raise UserError("pass --method METHOD (or method: in the --config file); see `kdbench methods`")
    return run_options(params)


@dataclass(frozen=True)
class RunMachine:
    """Where a run's files live and how this machine trains it: nothing here is in the run id."""

    results_dir: Path | None = None
    zoo_dir: Path | None = None
    data_root: Path | None = None
    cache_dir: Path | None = None
    device: str = "auto"
    teacher_cache: str = "on"
    force: bool = False
    strict: bool = False
    keep_checkpoint: bool = False
    log: tuple[str, ...] = ()
    deterministic: bool = True
    nproc: int = 1
    sync_bn: bool = False
    data_on_device: bool | None = None  # None: decided by the set's size (kdbench.data.loaders.keep_on_device)
    checkpoint_every_steps: int = 0  # also a step-level checkpoint every N optimizer steps (0: off)


def data_on_device(word: str | bool | None) -> bool | None:
    """`--data-on-device auto|on|off` as run() takes it; another word is refused naming the valid ones. A config
    file's bare `on`/`off` are YAML booleans, which reach here as such or as the option's text "True"/"False"."""
    if isinstance(word, bool):
        return word
    word = "auto" if word is None else str(word).strip().lower()
    word = {"true": "on", "false": "off"}.get(word, word)
    if word not in DATA_ON_DEVICE:
        raise UserError(f"--data-on-device {word!r}: allowed: {', '.join(DATA_ON_DEVICE)}")
    return DATA_ON_DEVICE[word]


def run_machine(params: dict[str, Any]) -> RunMachine:
    """The machine-side options from the command's parameters (None, from a config file's null: the default)."""
    return RunMachine(
        results_dir=params.get("results_dir"), zoo_dir=params.get("zoo_dir"), data_root=params.get("data_root"),
        cache_dir=params.get("cache_dir"), device=params.get("device") or "auto",
        teacher_cache=params.get("teacher_cache") or "on", force=params.get("force"), strict=params.get("strict"),
        keep_checkpoint=params.get("keep_checkpoint"), log=tuple(params.get("log") or ()),
        deterministic=params.get("deterministic"), nproc=params.get("nproc") or 1, sync_bn=params.get("sync_bn"),
        data_on_device=data_on_device(params.get("data_on_device")),
        checkpoint_every_steps=params.get("checkpoint_every_steps") or 0)


def run_arguments(identity: RunOptions) -> dict[str, Any]:
    """The identity as keyword arguments of :func:`kdbench.execute.api.run` (which resolves `run:` teachers
    itself, so `teacher_run` is not one of them)."""
    return {f.name: getattr(identity, f.name) for f in dataclasses.fields(identity) if f.name != "teacher_run"}


def _yaml_value(text: str) -> Any:
    """A `--set` value as the YAML scalar that reads back to the same text (`2` not `'2'`), else the text."""
    value = yaml_scalar(text)
    return value if value_text(value) == text else text


def _absolute(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def run_config_document(params: dict[str, Any], config: RunConfig) -> dict[str, Any]:
    """What `--save-config` writes: the run's options with the recipe values the run resolved to."""
    sets = {f"{scope}.{key}": _yaml_value(value)
            for scope, items in parse_set_options(params.get("sets")).items() for key, value in items.items()}
    teacher = f"run:{config.teacher_run}" if config.teacher_run else config.teacher
    doc: dict[str, Any] = {"method": config.method, "teacher": teacher, "student": config.student,
                           "dataset": config.dataset, "seed": config.seed}
    if config.teacher is not None:
        doc["teacher_seed"] = config.teacher_seed
    doc.update(epochs=config.recipe.epochs, batch_size=config.recipe.batch_size, lr=config.recipe.lr)
    if config.teacher_recipe is not None:
        doc["teacher_epochs"] = config.teacher_recipe.epochs
    if params.get("teacher_ckpt"):
        doc["teacher_ckpt"] = _absolute(params["teacher_ckpt"])
    doc.update(amp=config.amp, channels_last=config.channels_last)
    if config.teacher_cache_dtype:
        doc["teacher_cache_dtype"] = config.teacher_cache_dtype
    if config.portable:  # written only when on, as the run id leaves it out when off
        doc["portable"] = True
    if config.compile:  # the same: written only when on
        doc.update(compile=True, compile_mode=config.compile_mode)
    for name in MACHINE_OPTIONS:
        value = params.get(name)
        if name == "deterministic":  # on by default: written only when turned off
            if value is False:
                doc[name] = False
        elif name == "data_on_device":  # written only when not auto, as the word
            choice = data_on_device(value)
            if choice is not None:
                doc[name] = "on" if choice else "off"
        elif value not in (None, False, "auto"):
            doc[name] = _absolute(value) if name in PATH_OPTIONS else value
    doc["set"] = sets
    return {k: v for k, v in doc.items() if v is not None}


def save_run_config(path: Path, params: dict[str, Any]) -> RunConfig:
    """Resolve the run (every name and range checked) and write its config file; returns the resolved config."""
    config = resolve_config(with_run_teacher(run_options(params), params.get("results_dir")))
    header = (f"# kdbench run --config {Path(path).name}\n"
              f"# run id {config.run_id} when written; command-line options override these, --set adds to set.\n")
    body = yaml.safe_dump(run_config_document(params, config), sort_keys=False, allow_unicode=True)
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, header + body)
    return config

