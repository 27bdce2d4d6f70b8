"""CPUs per task on SLURM: the default that fits a node, and a refusal before submitting one that cannot.

A job of `tasks_per_node` tasks asks tasks × CPUs per task of each node it gets. SLURM queues a job whose
request no node of the partition can hold (reason PartitionConfig) and leaves it pending forever, so the
default divides a node's CPUs among every task that may run on it at once (the tasks of each array task that
runs concurrently), and an explicit `--cpus-per-task` too large for the largest node is refused here.
"""

from __future__ import annotations

import subprocess

from kdbench.core.errors import UserError
from kdbench.sweep.grid import Resources


def node_cpu_counts(partition: str | None) -> list[int]:
    """CPUs of each node of `partition` (the default one if None), from sinfo; empty when unknown."""
    cmd = ["sinfo", "-h", "-N", "-o", "%c", *(["-p", partition] if partition else [])]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [int(tok.rstrip("+")) for tok in out.split() if tok.rstrip("+").isdigit()]


def default_cpus_per_task(resources: Resources, n_tasks: int, node_cpus: list[int]) -> int | None:
    """CPUs per task when --cpus-per-task is not given: the smallest node's CPUs shared by the tasks that may run
    on it at once, `tasks_per_node` for each concurrent array task (so one run of two tasks on a 2-core node
    gets one CPU per task, not two); None when the node size is unknown."""
    if not node_cpus:
        return None
    concurrent = max(1, min(resources.array_parallelism, n_tasks))
    return max(1, min(node_cpus) // (resources.tasks * concurrent))


def check_fits(resources: Resources, cpus_per_task: int, node_cpus: list[int]) -> None:
    """Refuse a job whose tasks ask more CPUs of a node than the partition's largest node has (it would pend
    forever); nothing is checked when the node size is unknown."""
    if not node_cpus or cpus_per_task * resources.tasks <= max(node_cpus):
        return
    where = f"partition {resources.partition}" if resources.partition else "the default partition"
    asked = f"--cpus-per-task {cpus_per_task} × --tasks-per-node {resources.tasks}"
    most = max(node_cpus)
    fix = (f"use --cpus-per-task {most // resources.tasks} at most" if resources.tasks <= most
           else f"use --tasks-per-node {most} at most")
    raise UserError(f"{asked} asks {cpus_per_task * resources.tasks} CPUs of one node, but the nodes of {where} "
                    f"have at most {most}: {fix}")
