"""`kdbench sweep`: a grid of runs (methods × teachers × students, or explicit teacher:student pairs, × datasets ×
seeds) through submitit.

Teachers missing from the zoo get one job each; every run not yet completed goes into ONE job array that
starts after those teacher jobs succeeded. Submitting the same sweep again submits nothing new.

The command gathers its flags into option groups (kdbench.cli.sweep_options), then plans, shows, submits and
reports in the short steps below, each callable on its own.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from kdbench.cli.app import app
from kdbench.cli.options import (
    BatchSizeOption,
    CacheDirOption,
    DataRootOption,
    DeviceOption,
    EpochsOption,
    ForceOption,
    LrOption,
    ResultsDirOption,
    SetsOption,
    TeacherCacheOption,
    TeacherEpochsOption,
    TeacherSeedOption,
    ZooDirOption,
)
from kdbench.cli.reporter import console
from kdbench.cli.status_cmd import counts_line, status_table
from kdbench.cli.sweep_options import (
    GridSelection,
    SchedulerFlags,
    SweepActions,
    SweepPlaces,
    sweep_flags,
    sweep_inputs,
)
from kdbench.core.errors import UserError
from kdbench.execute.folders import check_sweep_folders
from kdbench.spec.paths import Paths
from kdbench.sweep.chains import parents
from kdbench.sweep.executors import choose_executor
from kdbench.sweep.grid import DEFAULT_MAX_RUNS, at_world_size, expand
from kdbench.sweep.plan import Plan, make_plan, plan_entries, runs_of_sweep
from kdbench.sweep.saved_sweep import load_saved_sweep, new_sweep
from kdbench.sweep.status import SweepState, cancel_jobs, env_poll_s, sweep_state, wait_for_sweep
from kdbench.sweep.submit import Submitted, submit_plan
from kdbench.sweep.sweep_file import parse_sbatch, resources_from_options
from kdbench.sweep.time_limits import limit_warnings


def plan_table(plan: Plan, executor: str, reason: str) -> Table:
    table = Table(title=f"sweep plan — executor {executor} ({reason})", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("runs in the grid", str(len(plan.runs)))
    for task in plan.teacher_tasks:
        table.add_row("teacher job", task.label)
    for key in plan.cached_teachers:
        table.add_row("teacher cached", f"{key.arch} on {key.dataset} ({key.recipe.name}, seed {key.seed}"
                                        f"{key.data_note})")
    dep = " (after the teacher jobs)" if plan.teacher_tasks else ""
    stages = len(parents([r.run_id for r in plan.run_tasks], [r.config for r in plan.run_tasks]))
    table.add_row("array tasks", f"{len(plan.run_tasks) - stages}{dep}")
    if stages:
        table.add_row("chain stages", f"{stages} (each after the run it distils from)")
    for i, run in enumerate(plan.run_tasks):
        table.add_row(f"  [{i}]", f"{run.run_id}  {run.label()}")
    reasons: dict[str, int] = {}
    for _, why in plan.skipped:
        reasons[why.split(" (")[0]] = reasons.get(why.split(" (")[0], 0) + 1
    table.add_row("skipped", ", ".join(f"{n} {why}" for why, n in reasons.items()) or "0")
    return table


def _wait(sweep: dict[str, Any]) -> SweepState:
    total = len(sweep["runs"])
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task(f"sweep {sweep['sweep_id']}", total=total, info="")

        def update(state: SweepState) -> None:
            c = state.counts()
            progress.update(task, completed=c["completed"] + c["failed"] + c["diverged"] + c["interrupted"],
                            info=counts_line(state).split(": ", 1)[1])

        return wait_for_sweep(sweep, update, poll_s=env_poll_s())


@app.command("sweep")
def sweep_command(
    methods: str = typer.Option(None, "--methods", help="Comma list of methods, e.g. ce,kd,crd."),
    teachers: str = typer.Option(None, "--teachers", help="Comma list of teacher architectures."),
    students: str = typer.Option(None, "--students", help="Comma list of students \\[default: each method's]."),
    pairs: str = typer.Option(None, "--pairs", help="Explicit TEACHER:STUDENT pairs, comma list, in place of "
                              "--teachers × --students; a lone STUDENT is trained alone (by ce)."),
    chains: list[str] = typer.Option(None, "--chain", help="Teacher-assistant chain ARCH,ARCH,... (zoo teacher "
                                     "first), repeatable: each link distils from the student of the link before "
                                     "(`run:<its id>`), submitted after it."),
    datasets: str = typer.Option(None, "--datasets", help="Comma list of datasets \\[default: digits]."),
    seeds: str = typer.Option(None, "--seeds", help="Seeds: 0,1,2 or a range 0-4 \\[default: 0]."),
    teacher_seed: TeacherSeedOption = None,
    teacher_seeds: str = typer.Option(None, "--teacher-seeds", help="Zoo teacher seeds, 0,1,2 or 0-2: one teacher "
                                      "per seed, each distilled into every run (with --grid data.subset_seed=... "
                                      "and --seeds: the `leaderboard --table variance` design)."),
    epochs: EpochsOption = None,
    teacher_epochs: TeacherEpochsOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    sets: SetsOption = None,
    grids: list[str] = typer.Option(None, "--grid", help="SCOPE.KEY=V1,V2,..., repeatable: run every value "
                                    "(several --grid: their product), e.g. kd.temperature=1,2,4,8; a method's "
                                    "scope reaches that method's runs only."),
    portable: bool = typer.Option(False, "--portable", help="CPU: every run and zoo teacher with numbers every "
                                  "x86 CPU computes alike (kdbench run --portable; another run id); the sweep "
                                  "file's `portable: true` does the same."),
    compile: bool = typer.Option(False, "--compile", help="Every run and zoo teacher through torch.compile "
                                 "(kdbench run --compile; another run id); the sweep file's `compile: true` does "
                                 "the same."),
    compile_mode: str = typer.Option(None, "--compile-mode", help="With --compile: torch.compile's mode "
                                     "(default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs)."),
    max_runs: int = typer.Option(None, "--max-runs", help="Refuse a grid of more runs than this, before "
                                 f"expanding it \\[default: {DEFAULT_MAX_RUNS}]; `max_runs:` in a sweep file."),
    results_dir: ResultsDirOption = None,
    zoo_dir: ZooDirOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = None,
    teacher_cache: TeacherCacheOption = None,
    cache_dir: CacheDirOption = None,
    checkpoint_every_steps: int = typer.Option(None, "--checkpoint-every-steps", min=0, help="Each run also saves "
                                               "a checkpoint every N optimizer steps inside an epoch (0: at epoch "
                                               "ends only; a scheduler's signal saves the step in progress either "
                                               "way). Not in the run ids."),
    config: Path = typer.Option(None, "--config", help="Sweep file (YAML) with the same keys; flags override it."),
    executor: str = typer.Option(None, "--executor", help="slurm | local | debug \\[default: slurm if it answers]."),
    partition: str = typer.Option(None, "--partition", help="SLURM partition."),
    gpus_per_node: int = typer.Option(None, "--gpus-per-node",
                                      help="GPUs per node of each run's job (one task per GPU unless "
                                      "--tasks-per-node says otherwise)."),
    tasks_per_node: int = typer.Option(None, "--tasks-per-node", help="Processes per node of each run's job; "
                                       "nodes × tasks train the run data-parallel \\[default: one per GPU, ≥ 1]."),
    nodes: int = typer.Option(None, "--nodes", help="Nodes per run's job \\[default: 1]."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="SyncBatchNorm across each run's processes (GPU jobs "
                                 "of more than one task; part of the run id)."),
    cpus_per_task: int = typer.Option(None, "--cpus-per-task", help="CPUs per task (torch threads follow)."),
    mem_gb: float = typer.Option(None, "--mem-gb", help="Memory per job in GB."),
    timeout_min: int = typer.Option(None, "--timeout-min", help="Time limit per job in minutes \\[default: 60]; "
                                    "a job near it checkpoints and requeues itself."),
    max_requeues: int = typer.Option(None, "--max-requeues", help="Requeues per job after the time limit "
                                     "\\[default: 300]; an attempt that finishes no epoch counts toward failure."),
    array_parallelism: int = typer.Option(None, "--array-parallelism", help="Array tasks running at once."),
    account: str = typer.Option(None, "--account", help="SLURM account."),
    qos: str = typer.Option(None, "--qos", help="SLURM QOS."),
    constraint: str = typer.Option(None, "--constraint", help="SLURM node constraint."),
    sbatch: list[str] = typer.Option(None, "--sbatch", help="Extra sbatch option KEY=VALUE, repeatable."),
    resume: str = typer.Option(None, "--resume", help="Resubmit what is missing or failed in sweep ID."),
    force: ForceOption = False,
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan; submit nothing."),
    as_json: bool = typer.Option(False, "--json", help="With --dry-run: print the planned runs as a JSON list "
                                 "(run id, method and its resolved parameters, pair, dataset, seed, gridded "
                                 "values, whether a completed record exists)."),
    wait: bool = typer.Option(False, "--wait", help="Block until every job ended; exit 1 if a run failed."),
) -> None:
    """Submit a grid of runs: one job per missing teacher, then all runs as one job array.

    Examples:

      kdbench sweep --methods ce,kd --teachers resnet18 --seeds 0,1,2 --wait

      kdbench sweep --config slurm/sweeps/embedded.yaml --partition gpu --dry-run

      kdbench sweep --methods ce,kd --pairs resnet50:resnet18,resnet34:resnet18 --dry-run

      kdbench sweep --methods ce,kd --teachers resnet18 --grid kd.temperature=2,4 --set kd.w_ce=0.5 --dry-run --json

      kdbench sweep --methods kd --chain resnet152,resnet50,resnet18 --seeds 0,1,2 --dry-run --json

      kdbench sweep --resume 20250101-120000-ab12
    """
    selection = GridSelection(
        methods=methods, teachers=teachers, students=students, pairs=pairs, chains=chains, datasets=datasets,
        seeds=seeds, teacher_seed=teacher_seed, teacher_seeds=teacher_seeds, epochs=epochs,
        teacher_epochs=teacher_epochs, batch_size=batch_size, lr=lr, sets=sets, grid=grids, portable=portable,
        compile=compile, compile_mode=compile_mode, max_runs=max_runs)
    places = SweepPlaces(results_dir=results_dir, zoo_dir=zoo_dir, data_root=data_root, device=device,
                         teacher_cache=teacher_cache, cache_dir=cache_dir,
                         checkpoint_every_steps=checkpoint_every_steps)
    scheduler = SchedulerFlags(
        executor=executor, partition=partition, gpus_per_node=gpus_per_node, tasks_per_node=tasks_per_node,
        nodes=nodes, sync_bn=sync_bn, cpus_per_task=cpus_per_task, mem_gb=mem_gb, timeout_min=timeout_min,
        max_requeues=max_requeues, array_parallelism=array_parallelism, account=account, qos=qos,
        constraint=constraint, sbatch=sbatch)
    actions = SweepActions(config=config, resume=resume, force=force, dry_run=dry_run, as_json=as_json, wait=wait)
    run_sweep(sweep_flags(selection, places, scheduler), actions)


def run_sweep(flags: dict[str, Any], actions: SweepActions) -> None:
    """Plan the sweep, show the plan, then (unless a dry run or nothing is left to do) submit it and, with --wait
    or on the debug executor, report how its runs ended; exit 1 if one failed."""
    actions.check()
    sweep, plan, reason = plan_sweep(flags, actions)
    if not actions.dry_run and not plan.empty:  # before the plan is shown: one line, not a table then a traceback
        check_sweep_folders(Paths.from_dict(sweep["paths"]), trains_teachers=bool(plan.teacher_tasks))
    show_plan(sweep, plan, reason, as_json=actions.as_json)
    if actions.dry_run:
        console.print("dry run: nothing submitted", highlight=False)
        return
    if plan.empty:
        console.print(f"nothing to submit: all {len(plan.runs)} runs are done or in flight", highlight=False)
        return
    t0 = time.perf_counter()
    submitted = submit_plan(sweep, plan, force=actions.force)
    console.print(submission_line(sweep, submitted, time.perf_counter() - t0), highlight=False)
    console.print(escape(f"follow it with: kdbench status {sweep['sweep_id']} --results-dir "
                         f"{sweep['paths']['results_dir']}"),
                  highlight=False)
    # The debug executor ran every job in this process already: its outcome is known without waiting.
    if actions.wait or sweep["executor"] == "debug":
        report_outcome(sweep)


def plan_sweep(flags: dict[str, Any], actions: SweepActions) -> tuple[dict[str, Any], Plan, str]:
    """(sweep, plan, why this executor): a resumed sweep's missing runs, or a new sweep from the file and flags."""
    if actions.resume:
        return _resume_plan(actions.resume, flags, actions.force)
    new = sweep_inputs(flags, actions.config)
    runs = at_world_size(expand(new.grid, new.max_runs), new.resources.world_size, new.resources.sync_bn)
    kind, reason = choose_executor(new.executor)
    plan = make_plan(runs, new.paths.results_dir, new.paths.zoo_dir, force=actions.force)
    return new_sweep(new.grid, new.paths, new.resources, kind, reason, runs, new.jobs), plan, reason


def show_plan(sweep: dict[str, Any], plan: Plan, reason: str, *, as_json: bool) -> None:
    """The plan as JSON (stdout, for scripts) or a table, then any run whose time limit looks too short."""
    if as_json:
        typer.echo(json.dumps(plan_entries(plan, list(sweep["grid"].get("grid") or {})), indent=2, default=str))
    else:
        console.print(plan_table(plan, sweep["executor"], reason))
    for line in limit_warnings(plan.run_tasks, sweep["paths"]["results_dir"], sweep["resources"]["timeout_min"]):
        console.print(f"[yellow]warning[/]: {escape(line)}", highlight=False)


def submission_line(sweep: dict[str, Any], submitted: Submitted, seconds: float) -> str:
    """One line saying which jobs a submission started and where its runs go."""
    rec = submitted.record
    teacher_ids = ", ".join(t["job_id"] for t in rec["teacher_jobs"].values()) or "none"
    if rec["array_job"]:
        where = f"in array {rec['array_job']}"
    elif rec["workers"]:
        where = f"in {len(rec['workers'])} local workers"
    else:
        where = "in this process"
    return (f"sweep [bold]{sweep['sweep_id']}[/bold]: teacher jobs {teacher_ids}; {len(rec['tasks'])} runs {where}"
            + (f" ({rec['dependency']})" if rec["dependency"] else "") + f"; submitted in {seconds:.1f}s")


def report_outcome(sweep: dict[str, Any]) -> None:
    """Wait for the sweep's jobs (the debug executor's have ended), print their status; exit 1 if a run failed."""
    state = _wait(sweep) if sweep["executor"] != "debug" else sweep_state(sweep)
    if state.stuck:
        raise UserError(stuck_line(sweep, state))
    console.print(status_table(state, sweep))
    console.print(counts_line(state), highlight=False)
    if state.counts()["failed"]:
        raise typer.Exit(1)


def stuck_line(sweep: dict[str, Any], state: SweepState) -> str:
    """The one line `--wait` stops with when a job can never start, after cancelling every such job: left queued,
    it would hold its runs `in flight`, and a `--resume` would not resubmit them."""
    first = state.stuck[0]
    ids = [s.job_id for s in state.stuck]
    cancelled = cancel_jobs(ids)
    more = f" (and {len(ids) - 1} more job(s) for the same reason)" if len(ids) > 1 else ""
    them = "it" if len(ids) == 1 else "them"
    done = f"cancelled {them}" if cancelled else f"could not cancel {them} (scancel {' '.join(ids)})"
    return f"sweep {sweep['sweep_id']}: {first.line()}{more}; {done}: change the option and submit again"


_RESOURCE_FLAGS = ("partition", "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "max_requeues",
                   "array_parallelism", "account", "qos", "constraint")
_GRID_FLAGS = ("methods", "teachers", "students", "pairs", "chains", "datasets", "seeds", "teacher_seed",
               "teacher_seeds", "epochs", "teacher_epochs", "batch_size", "lr", "zoo_dir", "data_root", "device",
               # how many processes train each run, and how, is in its config and id: kept on resume as well
               "tasks_per_node", "nodes", "sync_bn")


def _resume_plan(sweep_id: str, cli: dict[str, Any], force: bool) -> tuple[dict[str, Any], Plan, str]:
    """The saved sweep with resource flags applied, and a plan of its runs not done and not in flight."""
    # --max-runs too: it bounds a grid's expansion, and a resumed sweep's runs were expanded when it started.
    given = [k for k in (*_GRID_FLAGS, "max_runs") if cli.get(k) is not None] + \
        [k for k in ("sets", "grid") if cli.get(k)]
    if given:
        raise UserError(f"--resume keeps the sweep's grid and paths; drop --{given[0].replace('_', '-')} "
                        "(resource flags such as --timeout-min may change)")
    sweep = load_saved_sweep(cli.get("results_dir"), sweep_id)
    if cli.get("executor") not in (None, sweep["executor"]):
        raise UserError(f"sweep {sweep_id} runs on the {sweep['executor']} executor; --resume cannot change it")
    kind, reason = choose_executor(sweep["executor"])
    sweep_resources_gpus = sweep["resources"].get("gpus_per_node", 0)
    sweep["resources"].update({k: cli[k] for k in _RESOURCE_FLAGS if cli.get(k) is not None})
    if cli.get("sbatch"):
        sweep["resources"]["sbatch"] = {**sweep["resources"]["sbatch"], **parse_sbatch(cli["sbatch"])}
    resources = resources_from_options(sweep["resources"])  # validates the merged values
    if cli.get("checkpoint_every_steps") is not None:  # how the jobs save, not what they compute: may change too
        sweep["paths"]["checkpoint_every_steps"] = cli["checkpoint_every_steps"]
    runs = runs_of_sweep(sweep)
    # Tasks per node default to one per GPU: a new --gpus-per-node would give the runs' jobs another number of
    # ranks than their configs (and ids) were planned for.
    planned = {r.config.world_size for r in runs}
    if planned and planned != {resources.world_size}:
        raise UserError(f"sweep {sweep_id}'s runs train on {', '.join(map(str, sorted(planned)))} process(es) "
                        f"each, but these resources give {resources.world_size}: keep --gpus-per-node at "
                        f"{sweep_resources_gpus} or start a new sweep")
    paths = Paths.from_dict(sweep["paths"])
    in_flight = sweep_state(sweep).in_flight()
    plan = make_plan(runs, paths.results_dir, paths.zoo_dir, force=force, in_flight=in_flight)
    return sweep, plan, reason
