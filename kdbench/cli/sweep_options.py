"""`kdbench sweep`'s flags as option groups, and a new sweep's grid, paths and resources from them over a sweep file.

Typer hands the command its flags one by one; they are gathered here by what they hold (which runs, where their
files go, how the scheduler runs them, what this invocation does). A flag not given is None, so the sweep file's
value holds there; `--set`, `--grid` and `--sbatch` add to the file's (see :func:`_merge`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdbench.core.errors import UserError
from kdbench.spec.paths import Paths
from kdbench.spec.scoped_sets import parse_grid, set_items, set_key
from kdbench.sweep.grid import Grid, JobSettings, Resources
from kdbench.sweep.submit import absolute_paths
from kdbench.sweep.sweep_file import (
    checked,
    grid_from_options,
    job_settings_from_options,
    max_runs_from_options,
    parse_sbatch,
    paths_from_options,
    read_sweep_file,
    resources_from_options,
)


@dataclass(frozen=True)
class GridSelection:
    """What to run: the flags that make the grid and the `kdbench run` options every run shares, as typed (None or
    empty: not given, the sweep file's value holds)."""

    methods: str | None = None
    teachers: str | None = None
    students: str | None = None
    pairs: str | None = None
    chains: list[str] | None = None
    datasets: str | None = None
    seeds: str | None = None
    teacher_seed: int | None = None
    teacher_seeds: str | None = None
    epochs: int | None = None
    teacher_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    sets: list[str] | None = None
    grid: list[str] | None = None
    portable: bool | None = None  # False (the flag not given): the sweep file's `portable` holds
    compile: bool | None = None  # False (the flag not given): the sweep file's `compile` holds
    compile_mode: str | None = None
    max_runs: int | None = None  # the most runs the grid may expand to (kdbench.sweep.grid.DEFAULT_MAX_RUNS)


@dataclass(frozen=True)
class SweepPlaces:
    """Where the runs read and write, and on what device: the same for every run, left out of their ids."""

    results_dir: Path | None = None
    zoo_dir: Path | None = None
    data_root: Path | None = None
    device: str | None = None
    teacher_cache: str | None = None
    cache_dir: Path | None = None
    checkpoint_every_steps: int | None = None  # also a step-level checkpoint every N optimizer steps (0: off)


@dataclass(frozen=True)
class SchedulerFlags:
    """How the jobs run: the executor and the resources each job asks the scheduler for."""

    executor: str | None = None
    partition: str | None = None
    gpus_per_node: int | None = None
    tasks_per_node: int | None = None
    nodes: int | None = None
    sync_bn: bool = False
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int | None = None
    max_requeues: int | None = None
    array_parallelism: int | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: list[str] | None = None


@dataclass(frozen=True)
class SweepActions:
    """What this invocation does with the sweep: which one (a file, or a saved sweep to resume), and whether it
    submits, prints JSON, or waits."""

    config: Path | None = None
    resume: str | None = None
    force: bool = False
    dry_run: bool = False
    as_json: bool = False
    wait: bool = False

    def check(self) -> None:
        if self.as_json and not self.dry_run:
            raise UserError("--json prints the plan of a dry run: add --dry-run")


def sweep_flags(selection: GridSelection, places: SweepPlaces, scheduler: SchedulerFlags) -> dict[str, Any]:
    """The command line's sweep options by sweep-file key, None where a flag was not given (an empty list and an
    unset --sync-bn included), so that the sweep file's value holds there."""
    flags = {**dataclasses.asdict(selection), **dataclasses.asdict(places), **dataclasses.asdict(scheduler)}
    for key in ("chains", "sets", "grid", "sbatch", "sync_bn", "portable", "compile"):
        flags[key] = flags[key] or None
    return flags


def _merge(file_options: dict[str, Any], cli: dict[str, Any]) -> dict[str, Any]:
    """CLI flags override the sweep file; `--set`, `--grid` and `--sbatch` add to it (a repeated key: the CLI's
    wins; a key the file grids and the CLI sets, or the reverse, takes the CLI's)."""
    out = dict(file_options)
    file_sets, file_grid = set_items(file_options.get("sets"), "sets"), parse_grid(file_options.get("grid"), "grid")
    cli_sets, cli_grid = list(cli.get("sets") or []), parse_grid(cli.get("grid"))
    cli_set_keys = {set_key(item) for item in cli_sets}
    out["sets"] = [item for item in file_sets if set_key(item) not in cli_grid] + cli_sets
    out["grid"] = {**{k: v for k, v in file_grid.items() if k not in cli_set_keys}, **cli_grid}
    for key, value in cli.items():
        if key in ("sets", "grid"):
            continue
        if key == "sbatch":
            out["sbatch"] = {**parse_sbatch(file_options.get("sbatch")), **parse_sbatch(value or [])}
        elif value is not None:
            out[key] = value
    return out


@dataclass(frozen=True)
class SweepInputs:
    """A new sweep as the sweep file and the flags give it, before it is expanded into runs."""

    grid: Grid
    paths: Paths  # absolute: jobs may start in another folder or on another node
    jobs: JobSettings  # the device and teacher-output cache every job runs with
    resources: Resources  # validated
    executor: str | None  # None: slurm if it answers, else local
    max_runs: int  # the grid is refused, before it is expanded, above this many runs


def sweep_inputs(flags: dict[str, Any], config: Path | None) -> SweepInputs:
    """The sweep file (if any) under the flags, as a new sweep's grid, paths, resources and executor."""
    options = _merge(read_sweep_file(config) if config else {}, flags)
    return SweepInputs(grid_from_options(options), absolute_paths(paths_from_options(options)),
                       job_settings_from_options(options), resources_from_options(options),
                       checked("executor", options.get("executor")), max_runs_from_options(options))
