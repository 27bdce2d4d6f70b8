"""What a sweep must submit: the teachers missing from the zoo, then every run not already done.

The plan is a pure function of the run records and the zoo, so submitting the same sweep twice submits
nothing the second time, and `--resume` is the same computation on a saved sweep. A run counts as done when
its `result.json` says `completed` or `diverged` (a diverged run is a result: rerunning the same config would
diverge again); `--force` submits it anyway. A teacher counts as cached when its card exists and the weights
match the card's sha256; otherwise a teacher job trains it (the zoo renames a corrupt file and retrains).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from kdbench.spec.config import RunConfig
from kdbench.store.records import RunStore
from kdbench.sweep.grid import SweepRun, setting_value
from kdbench.teachers.zoo import TeacherKey, TeacherZoo
from kdbench.teachers.zoo_files import BadZooFile

DONE_STATUSES = ("completed", "diverged")


@dataclass(frozen=True)
class TeacherTask:
    """A job that trains one zoo teacher; `config` is a run that uses it (its dataset and data parameters)."""

    key: TeacherKey
    config: RunConfig

    @property
    def label(self) -> str:
        return f"{self.key.arch} on {self.key.dataset} ({self.key.recipe.name}, {self.key.recipe.epochs} epochs, " \
               f"seed {self.key.seed}{self.key.data_note})"


@dataclass
class Plan:
    runs: list[SweepRun]  # the whole sweep
    teacher_tasks: list[TeacherTask] = field(default_factory=list)
    run_tasks: list[SweepRun] = field(default_factory=list)
    skipped: list[tuple[SweepRun, str]] = field(default_factory=list)  # (run, why it is not submitted)
    cached_teachers: list[TeacherKey] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.teacher_tasks and not self.run_tasks


def teacher_is_cached(zoo: TeacherZoo, key: TeacherKey) -> bool:
    """The same test as `TeacherZoo.load` (a card, weights of its sha256 and size, nothing out of the zoo)
    without building the model; an entry the zoo would reject is not cached (its teacher job retrains it)."""
    try:
        return zoo.verified_card(key) is not None
    except BadZooFile:
        return False


def make_plan(
    runs: list[SweepRun],
    results_dir: str | Path | None,
    zoo_dir: str | Path | None,
    *,
    force: bool = False,
    in_flight: dict[str, str] | None = None,
) -> Plan:
    """Decide what to submit. `in_flight` maps run ids to job ids still queued or running (never doubled)."""
    store, zoo = RunStore(results_dir), TeacherZoo(zoo_dir)
    in_flight = in_flight or {}
    plan = Plan(runs=list(runs))
    for run in runs:
        if run.run_id in in_flight:
            plan.skipped.append((run, f"in flight (job {in_flight[run.run_id]})"))
            continue
        status = store.status(run.run_id)
        if status in DONE_STATUSES and not force:
            plan.skipped.append((run, status))
            continue
        plan.run_tasks.append(run)

    seen: dict[str, bool] = {}
    for run in plan.run_tasks:
        key = run.teacher
        if key is None or key.digest in seen:
            continue
        seen[key.digest] = cached = teacher_is_cached(zoo, key)
        if cached:
            plan.cached_teachers.append(key)
        else:
            plan.teacher_tasks.append(TeacherTask(key, run.config))
    return plan


def runs_of_sweep(sweep: dict) -> list[SweepRun]:
    """A saved sweep's runs, rebuilt from the configs it stored (not re-resolved: defaults may have changed
    since, and a resume must finish the runs that were asked for)."""
    from kdbench.execute.build import teacher_key

    out = []
    for entry in sweep["runs"]:
        config = RunConfig.from_dict(entry["config"])
        out.append(SweepRun(config, teacher_key(config) if config.teacher_recipe is not None else None))
    return out


def plan_entries(plan: Plan, grid_keys: list[str] = ()) -> list[dict]:
    """The plan as JSON-ready dicts, one per run of the sweep: identity, resolved method parameters, the value
    each gridded key took in that run, and what the plan does with it (`submit`, or why it is skipped)."""
    skipped = {run.run_id: why for run, why in plan.skipped}
    entries = []
    for run in plan.runs:
        c = run.config
        grid = {}
        for key in grid_keys:
            try:
                grid[key] = setting_value(c, key)
            except KeyError:  # a key of another method's scope
                continue
        why = skipped.get(run.run_id)
        entries.append({
            "run_id": run.run_id, "method": c.method, "method_params": c.method_params, "teacher": c.teacher,
            # a chain's stage: the run whose student is its teacher (it runs after that run)
            "teacher_run": c.teacher_run, "teacher_seed": c.teacher_seed if c.teacher_recipe else None,
            # what a zoo teacher trains on: {"train_fraction": F} for the information-matched control
            **({"teacher_data": c.teacher_data} if c.teacher_data else {}),
            "student": c.student, "dataset": c.dataset,
            "seed": c.seed, "world_size": c.world_size, "sync_bn": c.sync_bn, "grid": grid,
            "completed": why == "completed", "planned": why or "submit",
        })
    return entries
