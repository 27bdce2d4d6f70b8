"""SLURM pending reasons that never clear (kdbench.sweep.pending) and CPUs per task that fit a node
(kdbench.sweep.node_fit), on squeue's and sinfo's own output lines as the real 2-CPU cluster printed them."""

from __future__ import annotations

import pytest

from kdbench.core.errors import UserError
from kdbench.sweep.grid import Resources
from kdbench.sweep.node_fit import PartitionNodes, check_fits, default_cpus_per_task
from kdbench.sweep.pending import never_clears
from kdbench.sweep.status import _parse_states, stuck_jobs

# `squeue -h -r -o "%i|%T|%r"` on the 2-CPU cluster (sbatch -c 3, -n 2 -c 2, -N 2, --begin, -H, an array of -c 3),
# and reasons of other clusters as squeue prints them.
SQUEUE = """\
2|PENDING|PartitionConfig
3|PENDING|PartitionConfig
4|PENDING|PartitionNodeLimit
9|PENDING|BeginTime
10|PENDING|JobHeldUser
13_[0-2]|PENDING|PartitionConfig
20|PENDING|Resources
21|PENDING|Priority
22|PENDING|Dependency
23|PENDING|ReqNodeNotAvail, UnavailableNodes:localhost
24|PENDING|QOSMaxCpuPerJobLimit
25|PENDING|QOSGrpCpuLimit
26|PENDING|QOSMaxJobsPerUserLimit
27|PENDING|AssocMaxWallDurationPerJobLimit
28|PENDING|BadConstraints
29|PENDING|PartitionTimeLimit
30|PENDING|JobArrayTaskLimit
31|RUNNING|None
32|PENDING|None
"""
DEBUG = PartitionNodes(name="debug", cpus=[2], states=["idle"], time_limit="infinite")


def reasons() -> dict[str, str]:
    out: dict[str, str] = {}
    _parse_states(SQUEUE, out)
    return out


def test_squeue_lines_give_each_pending_jobs_reason_array_tasks_included():
    got = reasons()
    assert got["13_0"] == got["13_2"] == "PartitionConfig"
    assert got["23"] == "ReqNodeNotAvail, UnavailableNodes:localhost"
    assert "31" not in got and "32" not in got  # running, or no reason yet


def test_only_reasons_that_never_clear_make_a_job_stuck():
    stuck = {s.job_id: s for s in stuck_jobs(reasons(), Resources(cpus_per_task=2, tasks_per_node=2, qos="low"))}
    clears = {"9", "10", "20", "21", "22", "23", "25", "26", "30"}
    assert clears.isdisjoint(stuck)  # the node is idle, not down: ReqNodeNotAvail clears
    assert {"2", "3", "4", "13_0", "13_1", "13_2", "24", "27", "28", "29"} <= set(stuck)


@pytest.mark.parametrize(("reason", "resources", "named"), [
    ("PartitionConfig", Resources(cpus_per_task=2, tasks_per_node=2),
     "--cpus-per-task 2 × --tasks-per-node 2 asks 4 CPUs of one node, the nodes of partition debug have at most 2"),
    ("PartitionConfig", Resources(nodes=2), "--nodes 2 asks more nodes than partition debug has (1)"),
    ("PartitionNodeLimit", Resources(nodes=3), "--nodes 3 asks more nodes than partition debug has (1)"),
    ("PartitionConfig", Resources(cpus_per_task=1, mem_gb=64.0), "--mem-gb 64"),
    ("PartitionNodeLimit", Resources(nodes=2), "--nodes 2"),
    ("PartitionTimeLimit", Resources(timeout_min=600), "--timeout-min 600"),
    ("BadConstraints", Resources(constraint="a100"), "--constraint a100"),
    ("QOSMaxCpuPerJobLimit", Resources(cpus_per_task=8, qos="low"), "--cpus-per-task 8 is beyond the qos's limit"),
    ("QOSMaxWallDurationPerJobLimit", Resources(timeout_min=900), "--timeout-min 900"),
    ("AssocMaxNodePerJobLimit", Resources(nodes=4), "--nodes 4 is beyond the account's limit"),
    ("InvalidQOS", Resources(qos="gold"), "--qos gold"),
])
def test_a_reason_that_never_clears_names_the_option_to_change(reason, resources, named):
    fix = never_clears(reason, resources, lambda: DEBUG)
    assert fix is not None and named in fix and "\n" not in fix


def test_req_node_not_avail_never_clears_only_when_every_node_is_down_or_drained():
    down = PartitionNodes(name="gpu", cpus=[8, 8], states=["down*", "drain"], time_limit="1-00:00:00")
    one_up = PartitionNodes(name="gpu", cpus=[8, 8], states=["down*", "mix"], time_limit="1-00:00:00")
    reason = "ReqNodeNotAvail, UnavailableNodes:g[01-02]"
    assert "--partition" in never_clears(reason, Resources(partition="gpu"), lambda: down)
    assert never_clears(reason, Resources(partition="gpu"), lambda: one_up) is None


def test_default_cpus_per_task_shares_a_node_among_tasks_per_node_and_concurrent_array_tasks():
    assert default_cpus_per_task(Resources(tasks_per_node=2), n_tasks=1, node_cpus=[2]) == 1  # was 2: pended
    assert default_cpus_per_task(Resources(), n_tasks=1, node_cpus=[2]) == 2
    assert default_cpus_per_task(Resources(tasks_per_node=2), n_tasks=4, node_cpus=[16, 32]) == 2
    assert default_cpus_per_task(Resources(array_parallelism=2), n_tasks=10, node_cpus=[8]) == 4
    assert default_cpus_per_task(Resources(tasks_per_node=4), n_tasks=1, node_cpus=[2]) == 1  # never 0
    assert default_cpus_per_task(Resources(), n_tasks=1, node_cpus=[]) is None  # unknown: SLURM's default


def test_cpus_that_no_node_can_hold_are_refused_in_one_line_naming_the_fix():
    check_fits(Resources(tasks_per_node=2), 1, [2])
    check_fits(Resources(), 3, [])  # node size unknown: SLURM decides
    with pytest.raises(UserError, match=r"--cpus-per-task 3 × --tasks-per-node 1 asks 3 CPUs .* use "
                                        r"--cpus-per-task 2 at most"):
        check_fits(Resources(), 3, [2])
    with pytest.raises(UserError, match="use --tasks-per-node 2 at most"):
        check_fits(Resources(tasks_per_node=3), 1, [2])
