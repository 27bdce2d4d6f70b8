"""Which executor a sweep runs on, and the submitit executor built from a sweep's resources.

Executors: `slurm` (sbatch), `local` (subprocesses of this machine) and `debug` (in this process, one after
another). The default is slurm when `sbatch` is on PATH and `scontrol ping` reaches the controller; submitit's
own auto-detection picks slurm whenever `srun` exists, even with the controller down.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import submitit

from kdbench.core.errors import UserError
from kdbench.sweep.grid import Resources
from kdbench.sweep.time_limits import signal_delay_s

EXECUTORS = ("slurm", "local", "debug")


def slurm_available() -> tuple[bool, str]:
    """Whether SLURM can take jobs now, and why (shown to the user with the executor choice)."""
    if shutil.which("sbatch") is None:
        return False, "no sbatch on PATH"
    try:
        ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"`scontrol ping` failed ({e})"
    if ping.returncode == 0 and " UP" in ping.stdout:
        return True, "sbatch on PATH and `scontrol ping` reaches the controller"
    first = (ping.stdout.strip() or ping.stderr.strip()).splitlines()[:1]
    return False, f"`scontrol ping`: {first[0] if first else 'no controller'}"


def choose_executor(name: str | None) -> tuple[str, str]:
    """(executor, reason). `None` means: slurm if it answers, else local."""
    if name is not None:
        if name not in EXECUTORS:
            raise UserError(f"unknown executor '{name}'. Valid: {', '.join(EXECUTORS)}")
        if name == "slurm":
            ok, why = slurm_available()
            if not ok:
                raise UserError(f"--executor slurm: SLURM is not reachable ({why}); use --executor local")
            return name, why
        return name, "asked for"
    ok, why = slurm_available()
    return ("slurm", why) if ok else ("local", f"SLURM not reachable: {why}")


def make_executor(kind: str, folder: Path, resources: Resources, name: str,
                  dependency: str | None = None) -> submitit.Executor:
    """A submitit executor of `kind` asking for `resources`; on SLURM, after `dependency` if given."""
    # Requeues after the time limit's warning: as many as --max-requeues (submitit's default is 3).
    executor = submitit.AutoExecutor(folder=folder, cluster=kind, slurm_max_num_timeout=resources.max_requeues)
    # nodes × tasks_per_node tasks (one per GPU by default) train each run data-parallel: see jobs.RunJob.
    params: dict[str, Any] = {"name": name, "timeout_min": resources.timeout_min, "nodes": resources.nodes,
                              "tasks_per_node": resources.tasks}
    if resources.gpus_per_node:
        params["gpus_per_node"] = resources.gpus_per_node
    if resources.cpus_per_task:
        params["cpus_per_task"] = resources.cpus_per_task
    if resources.mem_gb:
        params["mem_gb"] = resources.mem_gb
    if kind == "slurm":
        extra: dict[str, Any] = {"kill-on-invalid-dep": "yes"}
        # An option given without a value (`--sbatch exclusive`) becomes a bare flag.
        extra.update({k: (v if v != "" else True) for k, v in resources.sbatch.items()})
        if dependency:
            extra["dependency"] = dependency
        params.update(slurm_signal_delay_s=signal_delay_s(resources.timeout_min),
                      slurm_partition=resources.partition, slurm_account=resources.account,
                      slurm_qos=resources.qos, slurm_constraint=resources.constraint,
                      slurm_array_parallelism=resources.array_parallelism, slurm_additional_parameters=extra)
    executor.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return executor
