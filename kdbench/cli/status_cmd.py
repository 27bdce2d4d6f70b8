"""`kdbench status [SWEEP_ID]`: each run of a sweep (latest if omitted) with its state, as a table."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from kdbench.cli.app import app
from kdbench.cli.options import ResultsDir
from kdbench.cli.reporter import console
from kdbench.sweep.saved_sweep import load_saved_sweep
from kdbench.sweep.status import STATES, SweepState, sweep_state, teacher_state

_STYLE = {"completed": "green", "failed": "bold red", "diverged": "magenta", "running": "cyan", "pending": "dim",
          "interrupted": "yellow"}


def counts_line(state: SweepState) -> str:
    counts = state.counts()
    return f"{len(state.runs)} runs: " + ", ".join(f"{counts[s]} {s}" for s in STATES)


def _position(position: dict | None) -> str:
    """`3` (epoch 3 done), `3+40` (and 40 steps of the next saved), `?` (the attempt never said)."""
    if position is None:
        return "?"
    return f"{position['epoch']}+{position['step']}" if position.get("step") else str(position["epoch"])


# Attempts shown in the table's cell (a 240-epoch run under a short limit has dozens): the latest ones.
SHOWN_ATTEMPTS = 5


def progress_cell(attempts: tuple[dict, ...]) -> str:
    """Each attempt's saved progress, oldest first: `0→3 3→5 5→5!` (`!`: it advanced nothing); the latest
    SHOWN_ATTEMPTS after a count of the others (`--json` has them all)."""
    earlier = len(attempts) - SHOWN_ATTEMPTS
    cells = [f"({earlier} earlier)"] if earlier > 0 else []
    for a in attempts[-SHOWN_ATTEMPTS:]:
        moved = a["to"] is not None and a["to"] != a["from"]
        running = a["reason"] is None
        cells.append(f"{_position(a['from'])}→{'…' if running else _position(a['to'])}"
                     f"{'' if moved or running else '!'}")
    return " ".join(cells) or "—"


def failure_lines(state: SweepState) -> list[str]:
    """Why each failed run failed, whole (the table cuts the first line short): e.g. the line of a run stopped
    because its attempts made no progress."""
    return [f"{r.run_id}: {r.error.splitlines()[0]}" for r in state.runs if r.state == "failed" and r.error]


def status_table(state: SweepState, sweep: dict) -> Table:
    lines = failure_lines(state)
    table = Table(title=f"sweep {state.sweep_id} ({state.executor}) — {counts_line(state)}", title_justify="left",
                  caption=escape("\n".join(lines)) if lines else None, caption_justify="left")
    for col in ("run id", "run", "state", "top-1", "job", "epochs by attempt"):
        table.add_column(col, justify="right" if col == "top-1" else "left", overflow="fold")
    for r in state.runs:
        note = f" ({r.error.splitlines()[0][:60]})" if r.state == "failed" and r.error else ""
        job = f"{r.job_id} {r.job_state or ''}".strip() if r.job_id else "—"
        job += f" ({r.reason})" if r.reason else ""  # why SLURM keeps it pending
        table.add_row(r.run_id, r.label, f"[{_STYLE[r.state]}]{r.state}[/]{note}",
                      f"{r.top1:.2f}" if r.top1 is not None else "", job, progress_cell(r.attempts))
    labels = {d: t["label"] for sub in sweep["submissions"] for d, t in sub["teacher_jobs"].items()}
    for digest, (job_id, job_state) in state.teachers.items():
        t_state = teacher_state(job_state)
        shown = f"[{_STYLE[t_state]}]{t_state}[/]" if t_state else ""
        table.add_row(digest, f"teacher {labels.get(digest, '')}", shown, "", f"{job_id} {job_state or ''}".strip(),
                      "")
    return table


def stuck_groups(state: SweepState) -> dict[str, list[str]]:
    """The line of each stuck job's reason and fix (the first job's), and the ids of the jobs it holds for."""
    groups: dict[tuple[str, str], list[str]] = {}
    for stuck in state.stuck:
        groups.setdefault((stuck.reason, stuck.fix), []).append(stuck.job_id)
    return {next(s for s in state.stuck if s.job_id == ids[0]).line(): ids for ids in groups.values()}


@app.command("status")
def status_command(
    sweep_id: str = typer.Argument(None, help="Sweep id \\[default: the latest sweep in the results folder]."),
    results_dir: Path = ResultsDir,
    as_json: bool = typer.Option(False, "--json", help="Print each run's state as JSON instead of a table."),
) -> None:
    """Show the state of every run of a sweep: pending, running, completed, failed or diverged, and the epochs
    each of its attempts advanced it (`0→3 3→3!`: the second attempt saved nothing).

    Examples:

      kdbench status

      kdbench status 20250101-120000-ab12 --results-dir /shared/results
    """
    sweep = load_saved_sweep(results_dir, sweep_id)
    state = sweep_state(sweep)
    if state.scheduler_note:  # one line, on stderr so that --json stays parseable
        typer.echo(f"warning: {state.scheduler_note}", err=True)
    for line, ids in stuck_groups(state).items():  # jobs that will wait forever: say so, with the option to change
        more = f" (and {len(ids) - 1} more job(s) for the same reason)" if len(ids) > 1 else ""
        typer.echo(f"warning: {line}{more}; cancel (scancel {' '.join(ids)}) and submit again", err=True)
    if as_json:
        typer.echo(json.dumps({"sweep_id": state.sweep_id, "executor": state.executor, "counts": state.counts(),
                               "scheduler_note": state.scheduler_note,
                               "stuck": [dataclasses.asdict(s) for s in state.stuck],
                               "runs": [dataclasses.asdict(r) for r in state.runs],
                               "teachers": {d: {"job_id": j, "job_state": s} for d, (j, s) in state.teachers.items()}},
                              indent=2))
        return
    console.print(status_table(state, sweep))
    console.print(counts_line(state), highlight=False)
