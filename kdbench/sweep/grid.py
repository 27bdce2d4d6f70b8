"""A sweep's grid (methods × teachers × students × datasets × seeds) and its expansion into run configs.

Instead of the product teachers × students, `pairs` lists explicit teacher → student pairs (a paper's table
distils each teacher into its own students, not into every student); an entry with a student only is a model
trained alone, run by the methods without a teacher (a depth ladder's CNNs beside a distilled pair).

The grid holds the same options as `kdbench run` (epochs, `--set`, ...), applied to every run. A setting scoped
to a method (`--set kd.w_ce=0.5`) goes to the runs of the methods with that scope only (a named variant shares its
class's scope: `crd.*` reaches `crd+kd`); the common scopes (recipe, data, student, teacher, teacher_recipe) go
to every run. `grid` (`--grid kd.temperature=1,2,4`, or `grid:` in a sweep file) multiplies each method's runs by
the values of the keys in its scopes, several keys forming their product. Each point is
resolved with :func:`kdbench.execute.resolve.resolve_config`, so a sweep's run ids are exactly the ids `kdbench run`
gives the same options. A method that needs no teacher (`ce`) expands once per student: its run id has no
teacher in it, and expanding it per teacher would only repeat the same run. With `pairs`, such a method runs
once per distinct student of the pairs (student-only entries included).

`chains` (`--chain resnet152,resnet50,resnet18`) adds teacher-assistant chains: see kdbench.sweep.chains.

`teacher_seeds` (`--teacher-seeds 0,1,2`) multiplies the runs of each method with a teacher by its zoo teachers'
seeds (one teacher trained per seed); with `--grid data.subset_seed=0,1,2` (kdbench.data.subset) and `--seeds` this
is the nested design of the leaderboard's `variance` table (teacher seeds × subset draws × student seeds). A method
without a teacher runs once per subset draw and seed.

A grid is counted before it is expanded (:func:`count_runs`, from the lengths of its lists), and one of more than
`max_runs` runs (DEFAULT_MAX_RUNS, or `--max-runs`) is refused with its count; the expansion then walks the grid
point by point, holding only the distinct runs it keeps.

Reading a sweep file and the command line's options into a Grid, Resources, Paths and JobSettings is
kdbench.sweep.sweep_file's.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from kdbench.core.errors import UserError
from kdbench.execute.build import teacher_key
from kdbench.execute.resolve import COMMON_SCOPES, RunOptions, method_scopes, resolve_config
from kdbench.spec.config import RunConfig
from kdbench.spec.scoped_sets import set_key, set_scope
from kdbench.sweep.chains import chain_configs
from kdbench.teachers.zoo import TeacherKey
from kdbench.train.method import get_method

# The most runs a sweep expands to unless --max-runs says otherwise: resolving 10,000 points takes ~10 s, and a
# larger grid is more often a typo (a value list pasted into three --grid keys) than a plan.
DEFAULT_MAX_RUNS = 10_000


@dataclass
class Grid:
    """What to run: every combination of the lists, with the shared `kdbench run` options."""

    methods: list[str]
    teachers: list[str] = field(default_factory=list)
    students: list[str] = field(default_factory=list)  # empty: each method's default student
    # Explicit (teacher, student) pairs in place of teachers × students (the two cannot be mixed); a None
    # teacher is a student that only the methods without a teacher train.
    pairs: list[tuple[str | None, str]] = field(default_factory=list)
    # Teacher-assistant chains (kdbench.sweep.chains): each a list of architectures, the zoo teacher first; every
    # method with a teacher distils along each link, stage i from stage i−1's student.
    chains: list[list[str]] = field(default_factory=list)
    datasets: list[str] = field(default_factory=lambda: ["digits"])
    seeds: list[int] = field(default_factory=lambda: [0])
    teacher_seed: int = 0
    # Several zoo teachers per architecture, one per seed (`--teacher-seeds 0,1,2`, issue #38.4: teacher seeds ×
    # `--grid data.subset_seed=…` × seeds, nested); empty: `teacher_seed` alone.
    teacher_seeds: list[int] = field(default_factory=list)
    epochs: int | None = None
    teacher_epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    sets: list[str] = field(default_factory=list)
    # SCOPE.KEY → the values it takes (as `--set` text); each method's runs take the product of its keys.
    grid: dict[str, list[str]] = field(default_factory=dict)
    amp: bool = False
    channels_last: bool = False
    portable: bool = False  # `portable: true`: every run (and zoo teacher) in --portable mode (another run id)
    compile: bool = False  # `compile: true`: every run (and zoo teacher) through torch.compile (another run id)
    compile_mode: str = "default"  # torch.compile's mode for them (kdbench.train.compile.COMPILE_MODES)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in d.items() if k in names}
        kept["pairs"] = [(t, s) for t, s in kept.get("pairs") or []]  # JSON turns tuples into lists
        kept["chains"] = [list(c) for c in kept.get("chains") or []]
        return cls(**kept)

    def teacher_seed_list(self, needs_teacher: bool) -> list[int]:
        """The teacher seeds a method's runs take: `teacher_seeds` (or `teacher_seed`) when it distils; one (0,
        unused) when it does not, so `ce` is not repeated per teacher seed."""
        if self.teacher_seeds and self.teacher_seed:
            raise UserError("a sweep takes --teacher-seed or --teacher-seeds (teacher_seed: or teacher_seeds:), "
                            "not both")
        if not needs_teacher:
            return [self.teacher_seed]
        return list(dict.fromkeys(self.teacher_seeds)) or [self.teacher_seed]

    def points(self, needs_teacher: bool) -> list[tuple[str | None, str | None]]:
        """The (teacher, student) combinations one method runs over; None student: the method's default."""
        if self.chains and not (self.pairs or self.teachers):  # chains only: a method without a teacher runs on
            # each student of the chains (e.g. `ce`: each chain student trained alone, beside its distilled runs)
            return [] if needs_teacher else [(None, s) for s in dict.fromkeys(s for c in self.chains for s in c[1:])]
        if self.pairs:
            if self.teachers or self.students:
                raise UserError("a sweep takes either pairs (TEACHER:STUDENT) or teachers × students, not both")
            if needs_teacher:
                return [(t, s) for t, s in dict.fromkeys(self.pairs) if t is not None]
            return [(None, s) for s in dict.fromkeys(s for _, s in self.pairs)]
        teachers: list[str | None] = list(self.teachers) if needs_teacher else [None]
        students: list[str | None] = list(self.students) or [None]
        return [(t, s) for t in teachers for s in students]


@dataclass
class JobSettings:
    """How each job runs its run, beside where things live (kdbench.spec.paths.Paths, made absolute at submission
    because jobs may start elsewhere); a sweep stores the two together as its `paths`."""

    device: str = "auto"
    teacher_cache: str = "on"  # "on"|"off": the teacher-output cache under Paths.cache_dir
    checkpoint_every_steps: int = 0  # also a step-level checkpoint every N optimizer steps (0: off)


@dataclass
class Resources:
    """What each job asks the scheduler for. `None` leaves the scheduler's default."""

    partition: str | None = None
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    timeout_min: int = 60
    max_requeues: int = 300  # time-limit requeues per job (time_limits.DEFAULT_MAX_REQUEUES)
    array_parallelism: int = 64
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    sbatch: dict[str, str] = field(default_factory=dict)  # extra `#SBATCH --KEY=VALUE` lines
    # Tasks of one run's job: nodes × tasks_per_node processes train it data-parallel (kdbench.core.distributed).
    # tasks_per_node defaults to one per GPU (at least one).
    tasks_per_node: int | None = None
    nodes: int = 1
    # SyncBatchNorm across a run's processes (GPU jobs with world size > 1 only): part of each run's config and id.
    sync_bn: bool = False

    @property
    def tasks(self) -> int:
        return self.tasks_per_node or max(1, self.gpus_per_node)

    @property
    def world_size(self) -> int:
        return self.nodes * self.tasks


@dataclass(frozen=True)
class SweepRun:
    """One point of the grid: its resolved config and, if it distils from a zoo teacher, that teacher's key."""

    config: RunConfig
    teacher: TeacherKey | None

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def label(self) -> str:
        c = self.config
        teacher = f"{c.teacher} of run:{c.teacher_run}" if c.teacher_run else c.teacher
        pair = f"{teacher} → {c.student}" if c.teacher else c.student
        # The nested design's levels (issue #38.4), named only away from their defaults.
        nested = f" teacher seed {c.teacher_seed}" if c.teacher_recipe is not None and c.teacher_seed else ""
        draw = c.data_params.get("subset_seed")
        nested += f" subset draw {draw}" if draw is not None else ""
        return f"{c.method} {pair} {c.dataset}{nested} seed {c.seed}"


def check_scopes(grid: Grid) -> None:
    """Each `--set` and `--grid` key must reach a run: its scope is common, or some method of the sweep has it.
    A key both set and gridded is ambiguous."""
    reachable = {*COMMON_SCOPES}
    for method in grid.methods:
        reachable |= method_scopes(method)
    named = [("--set", item, set_scope(item)) for item in grid.sets]
    named += [("--grid", key, key.partition(".")[0]) for key in grid.grid]
    for flag, item, scope in named:
        if scope not in reachable:
            raise UserError(f"{flag} {item}: no method of this sweep ({', '.join(grid.methods)}) has the scope "
                            f"'{scope}'. Valid scopes: {', '.join(sorted(reachable))}")
    both = sorted({set_key(item) for item in grid.sets} & set(grid.grid))
    if both:
        raise UserError(f"{both[0]} is both in --set and in --grid: give it in one of them")


def _gridded_keys(grid: Grid, method: str) -> list[str]:
    """The `--grid` keys that reach `method`'s runs (in its scopes or a common one), in the order given."""
    scopes = {*COMMON_SCOPES, *method_scopes(method)}
    return [key for key in grid.grid if key.partition(".")[0] in scopes]


def method_settings(grid: Grid, method: str) -> Iterator[list[str]]:
    """The `--set` items of each of `method`'s grid points, one point at a time: the sets in its scopes, then one
    value per gridded key in its scopes (the product of those keys, in the order given; one point when none is
    gridded). A generator: a grid of a million points is never held in memory."""
    scopes = {*COMMON_SCOPES, *method_scopes(method)}
    fixed = [item for item in grid.sets if set_scope(item) in scopes]
    keys = _gridded_keys(grid, method)
    for values in itertools.product(*(grid.grid[key] for key in keys)):
        yield [*fixed, *(f"{key}={value}" for key, value in zip(keys, values, strict=True))]


def count_runs(grid: Grid) -> int:
    """How many runs the grid expands to (points resolving to the same run id counted apart), from the lengths
    of its lists alone: the cap is checked before a single point is resolved."""
    total = 0
    for method in grid.methods:
        needs_teacher = get_method(method).needs_teacher
        pairs = len(grid.points(needs_teacher)) + (sum(len(c) - 1 for c in grid.chains) if needs_teacher else 0)
        total += math.prod(len(grid.grid[key]) for key in _gridded_keys(grid, method)) * pairs \
            * len(grid.teacher_seed_list(needs_teacher))
    return total * len(grid.datasets) * len(grid.seeds)


def check_size(grid: Grid, max_runs: int) -> None:
    """Refuse a grid of more than `max_runs` runs, saying how many it has: expanding a grid resolves every point
    (about a millisecond each), so three `--grid` keys of 100 values would run for minutes and fill memory."""
    count = count_runs(grid)
    if count > max_runs:
        raise UserError(f"this sweep's grid has {count:,} runs, more than the {max_runs:,} allowed: narrow it, or "
                        "raise the limit with --max-runs N (max_runs: N in a sweep file)")


def setting_value(config: RunConfig, key: str) -> Any:
    """The resolved value of `SCOPE.KEY` in a run's config (KeyError when the run has no such setting)."""
    scope, _, name = key.partition(".")
    sections: dict[str, Any] = {"recipe": config.recipe, "teacher_recipe": config.teacher_recipe,
                                "data": config.data_params, "student": config.student_params,
                                "teacher": config.teacher_params, "teacher_data": config.teacher_data}
    section = sections.get(scope, config.method_params if scope in method_scopes(config.method) else None)
    if isinstance(section, dict):
        return section[name]
    if section is None or not hasattr(section, name):
        raise KeyError(key)
    return getattr(section, name)


def at_world_size(runs: list[SweepRun], world: int, sync_bn: bool = False) -> list[SweepRun]:
    """The runs trained data-parallel by `world` processes each, with SyncBatchNorm across them if `sync_bn`
    (their configs, and so their ids, say so)."""
    if world == 1:
        return runs
    return [SweepRun(dataclasses.replace(r.config, world_size=world, sync_bn=sync_bn), r.teacher) for r in runs]


def expand(grid: Grid, max_runs: int = DEFAULT_MAX_RUNS) -> list[SweepRun]:
    """Every distinct run of the grid, in grid order (dataset, method, grid point, teacher, student, seed);
    two points that resolve to the same run id are one run. A grid of more than `max_runs` runs is refused
    before any is resolved (:func:`check_size`)."""
    if not grid.methods:
        raise UserError("a sweep needs at least one method: --methods ce,kd")
    if not grid.seeds:
        raise UserError("a sweep needs at least one seed: --seeds 0,1,2")
    if not grid.datasets:
        raise UserError("a sweep needs at least one dataset: --datasets digits")
    check_scopes(grid)
    check_size(grid, max_runs)
    runs: dict[str, SweepRun] = {}
    for dataset in grid.datasets:
        for method in grid.methods:
            spec = get_method(method)
            if spec.needs_teacher and not (grid.teachers or any(t for t, _ in grid.pairs) or grid.chains):
                raise UserError(f"method '{method}' distils from a teacher: pass --teachers ARCH[,ARCH...], "
                                "--pairs TEACHER:STUDENT[,...] or --chain TEACHER,ASSISTANT,STUDENT")
            points = grid.points(spec.needs_teacher)
            teacher_seeds = grid.teacher_seed_list(spec.needs_teacher)
            for sets in method_settings(grid, method):  # nested loops: itertools.product would list the points
                for (teacher, student), t_seed, seed in itertools.product(points, teacher_seeds, grid.seeds):
                    config = _resolve_point(grid, method, dataset, seed, sets, teacher, student, teacher_seed=t_seed)
                    runs.setdefault(config.run_id, _sweep_run(config))
            for sets in method_settings(grid, method) if grid.chains and spec.needs_teacher else ():
                for chain, t_seed, seed in itertools.product(grid.chains, teacher_seeds, grid.seeds):
                    link = functools.partial(_resolve_point, grid, method, dataset, seed, sets, teacher_seed=t_seed)
                    for config in chain_configs(chain, link):
                        runs.setdefault(config.run_id, _sweep_run(config))
    return list(runs.values())


def _resolve_point(grid: Grid, method: str, dataset: str, seed: int, sets: list[str], teacher: str | None,
                   student: str | None, teacher_run: str | None = None, teacher_seed: int | None = None) -> RunConfig:
    return resolve_config(RunOptions(
        method=method, teacher=teacher, student=student, dataset=dataset, seed=seed,
        teacher_seed=grid.teacher_seed if teacher_seed is None else teacher_seed,
        epochs=grid.epochs, teacher_epochs=grid.teacher_epochs,
        batch_size=grid.batch_size, lr=grid.lr, sets=sets, amp=grid.amp, channels_last=grid.channels_last,
        teacher_run=teacher_run, portable=grid.portable, compile=grid.compile, compile_mode=grid.compile_mode,
    ))


def _sweep_run(config: RunConfig) -> SweepRun:
    # Only a zoo teacher has a zoo key (a job trains it when missing); a run teacher is another run of the plan.
    return SweepRun(config, teacher_key(config) if config.teacher_recipe is not None else None)
