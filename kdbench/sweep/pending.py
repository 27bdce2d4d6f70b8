"""Why a SLURM job is pending, and whether that ever clears by itself.

squeue gives a pending job's reason (`%r`). Most reasons clear as other jobs end: Resources, Priority,
Dependency, BeginTime, JobArrayTaskLimit, a group or per-user limit of a QOS or account (QOSGrpCpuLimit,
QOSMaxJobsPerUserLimit...). Others never do, because the job asks for something the partition, QOS or account
can never give it: SLURM keeps such a job pending forever (it does not refuse it at submission), and a
`--wait` would wait without a word. For each of those, `never_clears` names the sweep option to change.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from kdbench.sweep.grid import Resources
from kdbench.sweep.node_fit import PartitionNodes

# A limit of a QOS or an association (account) on one job, or a minimum per job: a job beyond it never starts.
# Group (`Grp`) and per-user/per-account totals are left out: they clear as the user's other jobs end.
_PER_JOB_LIMIT = re.compile(r"^(QOS|Assoc)(Max\w*Per(Job|Node)\w*|Min\w*)$")
# What each per-job limit is about → the option that sets it (first match in the reason's name).
_LIMIT_OPTIONS = (("Wall", "--timeout-min", "timeout_min"), ("Node", "--nodes", "nodes"),
                  ("Cpu", "--cpus-per-task", "cpus_per_task"), ("GRES", "--gpus-per-node", "gpus_per_node"),
                  ("Mem", "--mem-gb", "mem_gb"))


@dataclass(frozen=True)
class StuckJob:
    """A job pending for a reason that never clears."""

    job_id: str
    reason: str  # SLURM's own word, e.g. PartitionConfig
    fix: str  # the option to change, with what was asked and what the cluster allows where known

    def line(self) -> str:
        return f"job {self.job_id} can never start (SLURM pending reason {self.reason}): {self.fix}"


def _asked(resources: Resources, attrs: tuple[str, ...]) -> str:
    """`--cpus-per-task 2, --tasks-per-node 2` for the attributes of `resources` that are set."""
    values = {"cpus_per_task": resources.cpus_per_task, "tasks_per_node": resources.tasks,
              "nodes": resources.nodes, "gpus_per_node": resources.gpus_per_node, "mem_gb": resources.mem_gb,
              "timeout_min": resources.timeout_min, "constraint": resources.constraint}
    parts = [f"--{a.replace('_', '-')} {values[a]:g}" if isinstance(values[a], float)
             else f"--{a.replace('_', '-')} {values[a]}" for a in attrs if values[a] not in (None, "", 0)]
    parts += [f"--sbatch {k}={v}" if v else f"--sbatch {k}" for k, v in resources.sbatch.items()]
    return ", ".join(parts)


def _too_many_nodes(resources: Resources, nodes: PartitionNodes) -> str:
    have = len(nodes.states)
    return f"--nodes {resources.nodes} asks more nodes than partition {nodes.name} has ({have}): lower --nodes"


def _partition_config(resources: Resources, nodes: PartitionNodes | None) -> str:
    where = f"partition {nodes.name}" if nodes else "the partition"
    per_node = (resources.cpus_per_task or 1) * resources.tasks
    if nodes and nodes.cpus and per_node > max(nodes.cpus):
        return (f"--cpus-per-task {resources.cpus_per_task or 1} × --tasks-per-node {resources.tasks} asks "
                f"{per_node} CPUs of one node, the nodes of {where} have at most {max(nodes.cpus)}: lower "
                "--cpus-per-task or --tasks-per-node")
    if nodes and resources.nodes > len(nodes.states):
        return _too_many_nodes(resources, nodes)
    asked = _asked(resources, ("cpus_per_task", "tasks_per_node", "nodes", "gpus_per_node", "mem_gb"))
    return f"no node of {where} can hold what each job asks ({asked}): change one of these options"


def _per_job_limit(reason: str, resources: Resources) -> str:
    owner = "--qos" if reason.startswith("QOS") else "--account"
    for word, flag, attr in _LIMIT_OPTIONS:
        if word.lower() in reason.lower():
            value = getattr(resources, attr)
            asked = f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"
            return f"{asked} is beyond the {owner[2:]}'s limit per job: lower {flag} or use another {owner}"
    return f"the job is beyond the {owner[2:]}'s limit per job: use another {owner} or ask for less"


def never_clears(reason: str, resources: Resources,
                 nodes: Callable[[], PartitionNodes | None]) -> str | None:
    """What to change when a job pending for `reason` can never start; None when the reason clears by itself.

    `reason` is squeue's `%r` (e.g. `PartitionConfig`, `ReqNodeNotAvail, UnavailableNodes:n[1-4]`); `nodes`
    gives the partition's nodes, asked only for the reasons that need them.
    """
    word = reason.split(",")[0].strip()
    if word == "PartitionConfig":
        return _partition_config(resources, nodes())
    if word == "PartitionNodeLimit":
        part = nodes()
        if part and resources.nodes > len(part.states):
            return _too_many_nodes(resources, part)
        return f"--nodes {resources.nodes} is outside the partition's node limits: change --nodes or --partition"
    if word == "PartitionTimeLimit":
        part = nodes()
        limit = f" ({part.time_limit} on partition {part.name})" if part else ""
        return f"--timeout-min {resources.timeout_min} is over the partition's time limit{limit}: lower --timeout-min"
    if word == "PartitionInactive":  # (PartitionDown clears when an admin brings it up)
        return "the partition schedules no job: use another --partition"
    if word == "BadConstraints":
        asked = f"--constraint {resources.constraint}" if resources.constraint else "the job's constraints"
        return f"no node of the partition has {asked}: change --constraint or --partition"
    if word in ("InvalidQOS", "QOSNotAllowed"):
        return f"--qos {resources.qos or '(default)'} is not usable here: change --qos"
    if word in ("InvalidAccount", "AccountNotAllowed"):
        return f"--account {resources.account or '(default)'} is not usable here: change --account"
    if _PER_JOB_LIMIT.match(word):
        return _per_job_limit(word, resources)
    if word == "DependencyNeverSatisfied":
        return "a job it waits for failed: see `kdbench status`, then `kdbench sweep --resume`"
    if word == "ReqNodeNotAvail":  # clears when a node comes back, unless every node is down or drained
        part = nodes()
        if part is not None and part.all_unusable:
            return (f"every node of partition {part.name} is down or drained "
                    f"({', '.join(sorted(set(part.states)))}): use another --partition")
    return None
