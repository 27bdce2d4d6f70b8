"""What the scheduler refused, as one line naming the option the user can change.

sbatch's refusals come as two or three lines on stderr (`sbatch: error: invalid partition specified: gpu`,
`allocation failure: ...`), and submitit wraps them in a FailedJobError with a long traceback. A refused
submission is the user's to fix (a partition, gres, account, qos, time or memory the cluster does not have),
so it becomes a UserError: the flag, its value and the scheduler's own words.
"""

from __future__ import annotations

import re

from kdbench.core.errors import UserError
from kdbench.sweep.grid import Resources

# (pattern in sbatch's message, option of kdbench sweep, attribute of Resources holding its value)
_OPTIONS: tuple[tuple[str, str, str | None], ...] = (
    (r"account", "--account", "account"),  # before partition: "invalid account or account/partition ..."
    (r"qos|quality of service", "--qos", "qos"),
    (r"partition", "--partition", "partition"),
    (r"gres|generic resource|gpu", "--gpus-per-node", "gpus_per_node"),
    (r"time limit|--time|time specification", "--timeout-min", "timeout_min"),
    (r"memory|--mem", "--mem-gb", "mem_gb"),
    (r"feature|constraint", "--constraint", "constraint"),
    (r"cpus|processors|cpu count", "--cpus-per-task", "cpus_per_task"),
)
_NODE_ATTRS = ("gpus_per_node", "mem_gb", "constraint", "cpus_per_task")
# Extra `--sbatch KEY=VALUE` lines that ask the node for the same thing as an option above: when sbatch refuses
# that thing, its message names neither (`--sbatch mincpus=64` is refused as "CPU count per node can not be
# satisfied"), so both are named, the extra line first: the option alone was satisfiable before it was added.
_SBATCH_SAME_AS = {
    "cpus_per_task": ("mincpus", "cpus-per-task", "cpus-per-gpu", "ntasks-per-node", "ntasks"),
    "mem_gb": ("mem", "mem-per-cpu", "mem-per-gpu"),
    "gpus_per_node": ("gres", "gpus", "gpus-per-node", "gpus-per-task"),
    "constraint": ("constraint", "cluster-constraint"),
    "partition": ("partition",),
    "account": ("account",),
    "qos": ("qos",),
    "timeout_min": ("time", "time-min"),
}


def scheduler_message(stderr: str) -> str:
    """sbatch's stderr as one line: its `error:` lines without the `sbatch: error:` prefix, deduplicated."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [re.sub(r"^(sbatch: )?error:\s*", "", line) for line in lines if "error" in line.lower()]
    others = [line for line in lines if "error" not in line.lower()]
    picked = errors or others
    out: list[str] = []
    for line in picked:
        if line not in out:
            out.append(line)
    return "; ".join(out) or "no message"


def refused_option(message: str, resources: Resources) -> str | None:
    """The sweep option the scheduler's message is about, with the value asked for (None when unclear)."""
    lowered = message.lower()
    for pattern, flag, attr in _OPTIONS:
        if re.search(pattern, lowered):
            value = getattr(resources, attr) if attr else None
            option = f"{flag} {value}" if value not in (None, "", 0) else flag
            extra = [_sbatch_option(key, value) for key, value in resources.sbatch.items()
                     if key.lower() in _SBATCH_SAME_AS.get(attr or "", ())]
            return " or ".join([*extra, option])
    if "node configuration" in lowered:  # no single culprit: name what was asked of the node
        asked = [f"{flag} {getattr(resources, attr)}" for _, flag, attr in _OPTIONS
                 if attr in _NODE_ATTRS and getattr(resources, attr) not in (None, "", 0)]
        return ", ".join(asked) or None
    for key, value in resources.sbatch.items():  # an extra `--sbatch KEY=VALUE` the message names
        if key.lower() in lowered:
            return _sbatch_option(key, value)
    return None


def _sbatch_option(key: str, value: str) -> str:
    return f"--sbatch {key}={value}" if value else f"--sbatch {key}"


def scheduler_refusal(stderr: str, resources: Resources, what: str) -> UserError:
    """The UserError for a refused submission of `what` (e.g. "the run array")."""
    message = scheduler_message(stderr)
    option = refused_option(message, resources)
    where = f"{option}: " if option else ""
    return UserError(f"{where}SLURM refused {what}: {message}")
