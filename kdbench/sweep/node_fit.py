"""CPUs per task on SLURM: the default that fits a node, and a refusal before submitting one that cannot.

A job of `tasks_per_node` tasks asks tasks × CPUs per task of each node it gets. SLURM queues a job whose
request no node of the partition can hold (reason PartitionConfig) and leaves it pending forever, so the
default divides a node's CPUs among every task that may run on it at once (the tasks of each array task that
runs concurrently), and an explicit `--cpus-per-task` too large for the largest node is refused here.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

from kdbench.core.errors import UserError
from kdbench.sweep.grid import Resources

# Node states (sinfo's short form, flags such as `*` stripped) in which a node takes no new job until a person
# acts: down, drained or draining, failed, invalid.
UNUSABLE_STATES = ("down", "drain", "drng", "drained", "draining", "fail", "failg", "failing", "inval")


@dataclass(frozen=True)
class PartitionNodes:
    """What sinfo says of a partition's nodes: one entry per node."""

    name: str  # the partition (the default one's name when none was asked for)
    cpus: list[int]
    states: list[str]
    time_limit: str  # sinfo's `%l`: `infinite`, `1-00:00:00`, ...

    @property
    def all_unusable(self) -> bool:
        return bool(self.states) and all(s.rstrip("*~#%$@^-!") in UNUSABLE_STATES for s in self.states)


def partition_nodes(partition: str | None) -> PartitionNodes | None:
    """The nodes of `partition` (the default one if None), from sinfo; None when sinfo does not answer."""
    try:
        out = subprocess.run(["sinfo", "-h", "-N", "-o", "%P|%N|%c|%t|%l"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [line.split("|") for line in out.splitlines() if line.count("|") == 4]
    if partition is None:  # the default partition is the one sinfo marks with `*`
        rows = [r for r in rows if r[0].endswith("*")]
    else:
        rows = [r for r in rows if r[0].rstrip("*") == partition]
    if not rows:
        return None
    return PartitionNodes(name=rows[0][0].rstrip("*"),
                          cpus=[int(r[2].rstrip("+")) for r in rows if r[2].rstrip("+").isdigit()],
                          states=[r[3] for r in rows], time_limit=rows[0][4])


def node_cpu_counts(partition: str | None) -> list[int]:
    """CPUs of each node of `partition` (the default one if None); empty when unknown."""
    nodes = partition_nodes(partition)
    return nodes.cpus if nodes else []


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
