"""`kdbench run`: one method, one teacher → student pair, one dataset, one seed."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from kdbench.cli.app import app
from kdbench.cli.options import (
    BatchSizeOption,
    CacheDirOption,
    DataRootOption,
    DatasetOption,
    DeviceOption,
    EpochsOption,
    ForceOption,
    LrOption,
    MethodOption,
    ResultsDirOption,
    SetsOption,
    TeacherCacheDtypeOption,
    TeacherCacheOption,
    TeacherEpochsOption,
    TeacherSeedOption,
    ZooDirOption,
)
from kdbench.cli.reporter import RichReporter, console, out
from kdbench.cli.run_config import RunMachine, run_arguments, run_identity, run_machine, run_params, save_run_config
from kdbench.execute.api import run
from kdbench.execute.dry_run import dry_run_plan
from kdbench.execute.resolve import RunOptions
from kdbench.sweep.signals import stop_on_sigterm


@app.command("run")
def run_command(
    ctx: typer.Context,
    method: MethodOption = None,
    teacher: str = typer.Option(None, "--teacher", "-t", help="Teacher architecture (any timm model; trained by "
                                "the zoo), timm pretrained weights ARCH.TAG (e.g. resnet34.tv_in1k: from the "
                                "Hugging Face cache or --teacher-ckpt, never downloaded; `kdbench teachers list "
                                "--pretrained`), or run:RUN_ID: the student of a completed run under --results-dir."),
    student: str = typer.Option(None, "--student", "-s", help="Student architecture \\[default: the method's]."),
    dataset: DatasetOption = "digits",
    seed: int = typer.Option(0, "--seed", help="Seed of the student run (data order, init, augmentation)."),
    teacher_seed: TeacherSeedOption = 0,
    epochs: EpochsOption = None,
    teacher_epochs: TeacherEpochsOption = None,
    batch_size: BatchSizeOption = None,
    lr: LrOption = None,
    sets: SetsOption = None,
    teacher_ckpt: Path = typer.Option(None, "--teacher-ckpt", help="Your own teacher weights (.safetensors/.pt); "
                                      "with --teacher ARCH.TAG, the file of those pretrained weights."),
    results_dir: ResultsDirOption = None,
    zoo_dir: ZooDirOption = None,
    data_root: DataRootOption = None,
    device: DeviceOption = "auto",
    amp: bool = typer.Option(False, "--amp", help="Mixed precision (CUDA: fp16 + GradScaler; CPU: bf16)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="channels_last memory format (CUDA)."),
    force: ForceOption = False,
    teacher_cache: TeacherCacheOption = "on",
    teacher_cache_dtype: TeacherCacheDtypeOption = "float32",
    cache_dir: CacheDirOption = None,
    log: list[str] = typer.Option(None, "--log", help="Also log the curves to tensorboard and/or wandb (offline "
                                  "unless WANDB_MODE says otherwise), under runs/<id>/logs/. Repeatable."),
    keep_checkpoint: bool = typer.Option(False, "--keep-checkpoint", help="Keep the resumable checkpoint.pt "
                                         "(optimizer state) of the completed run beside its student exports."),
    deterministic: bool = typer.Option(True, "--deterministic/--no-deterministic", help="GPU: deterministic "
                                       "kernels, cuDNN autotuning off (--no-deterministic: cudnn.benchmark on, "
                                       "faster, not bit-reproducible). No effect on CPU; not in the run id."),
    portable: bool = typer.Option(False, "--portable", help="CPU: numbers every x86 CPU computes alike (ATen's "
                                  "DEFAULT kernels, MKL's COMPATIBLE branch, no oneDNN/NNPACK, one thread); "
                                  "slower, and another run id than without it (README: Reproducibility)."),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the student, the teacher's forward and "
                                 "the method's modules (a module that cannot be compiled runs eager); other "
                                 "numbers than eager, so another run id (README: Compiled runs)."),
    compile_mode: str = typer.Option("default", "--compile-mode", help="With --compile: torch.compile's mode "
                                     "(default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs)."),
    strict: bool = typer.Option(False, "--strict", help="Stop (exit 2) on a checkpoint that cannot be resumed "
                                "instead of restarting the run from scratch with a warning."),
    nproc: int = typer.Option(1, "--nproc", help="Train this one run data-parallel across N processes on this "
                              "machine (gloo on CPU, NCCL on GPU; the batch size is the global batch)."),
    sync_bn: bool = typer.Option(False, "--sync-bn", help="With --nproc > 1: SyncBatchNorm (BatchNorm statistics "
                                 "over the global batch)."),
    data_on_device: str = typer.Option("auto", "--data-on-device", help="auto | on | off: keep an in-memory set "
                                       "(digits, CIFAR, STL-10) on the GPU (auto: when it fits 4 GiB, or as "
                                       "$KDBENCH_DATA_ON_DEVICE=0/1 says). The same numbers; not in the run id."),
    checkpoint_every_steps: int = typer.Option(0, "--checkpoint-every-steps", min=0, help="Also save a "
                                               "checkpoint every N optimizer steps inside an epoch (0: at epoch "
                                               "ends only; SIGTERM saves the step in progress either way). The "
                                               "same numbers; not in the run id."),
    as_json: bool = typer.Option(False, "--json", help="Print the run record as JSON instead of a table."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the resolved config, run id, code fingerprint "
                                 "and whether a stored record would be reused; load no data, build no model."),
    config: Path = typer.Option(None, "--config", help="Options from a YAML file (keys: the option names, "
                                "`set:` a mapping of SCOPE.KEY: VALUE); options given here override it."),
    save_config: Path = typer.Option(None, "--save-config", help="Write this run's options (resolved: student, "
                                     "epochs, lr, ...) to a YAML file that --config reads back to the same run."),
) -> None:
    """Train a student with METHOD and record the result.

    Examples:

      kdbench run --method kd --teacher resnet152

      kdbench run --method ce --student resnet18 --epochs 5

      kdbench run --method kd --teacher resnet50 --set kd.temperature=2 --seed 1

      kdbench run --method ce --dataset cifar100 --epochs 24 --dry-run --json

      kdbench run --config kd-t2.yaml --seed 2

      kdbench run --method kd --teacher run:3f2a9c01d2e4b5a6 --student resnet18   (a finished run's student)

      kdbench run --method kd --teacher resnet34.tv_in1k --student resnet18 --dataset imagenet   (timm pretrained)
    """
    params = run_params(ctx, config)  # the command line over the config file
    identity, machine = run_identity(params), run_machine(params)
    output = RunOutput(as_json=as_json, dry_run=dry_run, save_config=save_config)
    if output.save_config is not None:
        save_run_config(output.save_config, params)
        console.print(escape(f"wrote the run's options to {output.save_config}"), highlight=False)
    if output.dry_run:
        show_dry_run(identity, machine, output)
        return
    report_record(train(identity, machine), output)


@dataclass(frozen=True)
class RunOutput:
    """What this invocation shows besides training: JSON or a table, a dry run's plan, a written config file."""

    as_json: bool = False
    dry_run: bool = False
    save_config: Path | None = None


def show_dry_run(identity: RunOptions, machine: RunMachine, output: RunOutput) -> None:
    """What the run would be (config, id, code, reuse), printed as JSON or a table; nothing loaded or built."""
    plan = dry_run_plan(identity, machine.results_dir, force=machine.force)
    if output.as_json:
        typer.echo(json.dumps(plan, indent=2, sort_keys=True))
    else:
        out.print(dry_run_table(plan))


def train(identity: RunOptions, machine: RunMachine) -> dict[str, Any]:
    """Train the run (or reuse its completed record) with a live progress display; returns its record. SIGTERM
    saves the step in progress and exits 143; the same command resumes there (kdbench.sweep.signals)."""
    reporter = RichReporter()
    try:
        with stop_on_sigterm():
            return run(**run_arguments(identity), **dataclasses.asdict(machine), reporter=reporter)
    finally:
        reporter.close()


def report_record(record: dict[str, Any], output: RunOutput) -> None:
    """The record as JSON or a table; a diverged run says where and exits 1."""
    if output.as_json:
        typer.echo(json.dumps(record, indent=2, default=str))
    else:
        out.print(record_table(record))
    if record["status"] == "diverged":
        d = record["divergence"]
        where = escape(f"at epoch {d['epoch']} step {d['step']}: {d['losses']}")
        console.print(f"[bold red]diverged[/bold red] {where}")
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
        source = tm["source"] if tm.get("source") == "timm pretrained" else \
            "zoo (cached)" if tm.get("cached") else "trained now"
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


def dry_run_table(plan: dict) -> Table:
    """`kdbench run --dry-run` as a table: identity, code, reuse, then every resolved config field."""
    table = Table(title=f"run {plan['run_id']} — dry run", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    code = plan["code"]
    table.add_row("code fingerprint", f"{code['fingerprint']} (results version {code['results_version']}; "
                  f"{', '.join(code['sources'])})")
    reuse = "yes: a completed record exists" if plan["would_reuse"] else \
        f"no: it would train ({'stored status: ' + plan['stored_status'] if plan['stored_status'] else 'no record'})"
    table.add_row("would reuse", reuse)
    table.add_row("record", plan["record"])
    if plan["older_code_runs"]:
        table.add_row("older code", "completed under other code: " + ", ".join(plan["older_code_runs"]))
    for key, value in plan["config"].items():
        table.add_row(key, json.dumps(value, sort_keys=True) if isinstance(value, dict | list) else str(value))
    return table
