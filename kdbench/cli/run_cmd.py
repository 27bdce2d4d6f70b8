"""`kdbench run`: one method, one teacher → student pair, one dataset, one seed."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..runner import run
from .app import app
from .options import (
    BatchSizeOption,
    DataRootOption,
    DatasetOption,
    DeviceOption,
    EpochsOption,
    ForceOption,
    LrOption,
    MethodOption,
    ResultsDirOption,
    SetsOption,
    TeacherEpochsOption,
    TeacherSeedOption,
    ZooDirOption,
)
from .reporter import RichReporter, console, out


@app.command("run")
def run_command(
    method: MethodOption,
    teacher: str = typer.Option(None, "--teacher", "-t", help="Teacher architecture (any timm model), or "
                                "run:RUN_ID: the student of a completed run under --results-dir."),
    student: str = typer.Option(None, "--student", "-s", help="Student architecture \\[default: the method's]."),
    dataset: DatasetOption = "digits",
    seed: int = typer.Option(0, "--seed", help="Seed of the student run (data order, init, augmentation)."),
    teacher_seed: TeacherSeedOption = 0,
    epochs: EpochsOption = None,
    teacher_epochs: TeacherEpochsOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    sets: SetsOption = None,
    teacher_ckpt: Path = typer.Option(None, "--teacher-ckpt", help="Your own teacher weights (.safetensors/.pt)."),
    results_dir: ResultsDirOption = None,
    zoo_dir: ZooDirOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = "auto",
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (CUDA: fp16 + GradScaler; CPU: bf16)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels_last memory format (CUDA)."),
    force: ForceOption = False,
    log: list[str] = typer.Option(None, "--log", help="Also log the curves to tensorboard and/or wandb (offline "
                                  "unless WANDB_MODE says otherwise), under runs/<id>/logs/. Repeatable."),
    keep_checkpoint: bool = typer.Option(False, "--keep-checkpoint", help="Keep the resumable checkpoint.pt "
                                         "(optimizer state) of the completed run beside its student exports."),
    strict: bool = typer.Option(False, "--strict", help="Stop (exit 2) on a checkpoint that cannot be resumed "
                                "instead of restarting the run from scratch with a warning."),
    as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON instead of a table."),
) -> None:
    """Train a student with METHOD and record the result.

    Examples:

      kdbench run --method kd --teacher resnet152

      kdbench run --method ce --student resnet18 --epochs 5

      kdbench run --method kd --teacher resnet50 --set kd.temperature=2 --seed 1

      kdbench run --method kd --teacher run:3f2a9c01d2e4b5a6 --student resnet18   (a finished run's student)
    """
    reporter = RichReporter()
    try:
        record = run(
            method, teacher, student=student, dataset=dataset, seed=seed, epochs=epochs,
            teacher_epochs=teacher_epochs, batch_size=batch_size, lr=lr, sets=sets,
            teacher_ckpt=str(teacher_ckpt) if teacher_ckpt else None, results_dir=results_dir,
            zoo_dir=zoo_dir, data_root=data_root, device=device or "auto", amp=amp, channels_last=channels_last,
            force=force, reporter=reporter, teacher_seed=teacher_seed or 0, strict=strict,
            keep_checkpoint=keep_checkpoint, log=log or [],
        )
    finally:
        reporter.close()
    if as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
    else:
        out.print(record_table(record))
    if record["status"] == "diverged":
        d = record["divergence"]
        console.print(f"[bold red]diverged[/bold red] at epoch {d['epoch']} step {d['step']}: {d['losses']}")
        raise typer.Exit(1)


def record_table(record: dict) -> Table:
    table = Table(title=f"run {record['run_id']} — {record['status']}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("method", record["method"])
    table.add_row("teacher → student", f"{record.get('teacher') or '—'} → {record['student']}")
    table.add_row("dataset / seed", f"{record['dataset']} / {record['seed']}")
    tm = record.get("teacher_metrics") or {}
    if tm:
        source = "zoo (cached)" if tm.get("cached") else "trained now"
        table.add_row("teacher top-1", f"{tm['top1']:.2f}  ({source}, {tm.get('params', 0) / 1e6:.1f}M params)")
    m = record.get("metrics") or {}
    if m:
        table.add_row("top-1 last / best", f"{m['top1_last']:.2f} / {m['top1_best']:.2f} (epoch {m['best_epoch']})")
        table.add_row("top-5 last / best", f"{m['top5_last']:.2f} / {m['top5_best']:.2f}")
    si = record.get("student_info") or {}
    if si:
        table.add_row("student params", f"{si['params'] / 1e6:.2f}M, {si['layers']} layers")
    inf = record.get("inference") or {}
    if inf:
        table.add_row("inference", f"{inf['s_per_image'] * 1e3:.3f} ms/image at batch {inf['batch_size']}")
    t = record.get("timing") or {}
    if t:
        table.add_row("time", f"teacher {t['teacher_s']:.1f}s, distillation {t['train_s']:.1f}s, "
                      f"total {t['total_s']:.1f}s")
    return table
