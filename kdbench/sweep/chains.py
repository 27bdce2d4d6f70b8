"""Teacher-assistant chains in one sweep: `--chain resnet152,resnet50,resnet18` (or `chains:` in a sweep file).

A chain of architectures A → B → C is a run per link, each distilling with the sweep's method: stage 1 distils
the zoo teacher A into B, stage 2 distils stage 1's student (`--teacher run:<stage 1's run id>`) into C, and so
on. A run teacher is identified by its run id (`RunConfig.teacher_run`), a content hash of a config that is
known before it trains, so every stage's config and run id are known when the sweep is planned: the plan, the
dry run's JSON, `kdbench status` and `--resume` see the whole chain. Each stage runs with the same seed, grid
point and options as its chain's first stage (the teacher recipe and seed only reach stage 1, the zoo teacher).

A stage waits for the stage before it: on SLURM it is a job of its own with `--dependency=afterok:<job of the
stage before>` (a failed stage cancels the rest of its chain); on the local executor it runs in the same worker,
after it; the debug executor runs the plan in order, stages in chain order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kdbench.core.errors import UserError
from kdbench.spec.config import RunConfig


def parse_chains(value: str | list[Any] | None) -> list[list[str]]:
    """`"resnet152,resnet50,resnet18"`, a list of such strings (one per chain, e.g. repeated `--chain`), or a
    YAML list of architecture lists → a list of chains of at least two architectures each."""
    if value is None or value == "":
        return []
    items = [value] if isinstance(value, str) else list(value)
    if items and all(isinstance(item, str) and "," not in item for item in items) and len(items) > 1 \
            and not isinstance(value, str):
        items = [items]  # one chain written as a YAML list of names
    chains = []
    for item in items:
        chain = [str(a).strip() for a in item] if isinstance(item, list | tuple) else \
            [a.strip() for a in str(item).split(",")]
        chain = [a for a in chain if a]
        if len(chain) < 2:
            raise UserError(f"chain '{item}': expected at least two architectures, teacher first "
                            "(e.g. resnet152,resnet50,resnet18)")
        chains.append(chain)
    return chains


def chain_configs(chain: list[str], resolve: Callable[[str, str, str | None], RunConfig]) -> list[RunConfig]:
    """The configs of `chain`'s stages, in order: `resolve(teacher, student, teacher_run)` resolves one link
    (teacher_run None for the zoo teacher of stage 1, else the run id of the stage before)."""
    configs: list[RunConfig] = []
    for teacher, student in zip(chain, chain[1:], strict=False):
        configs.append(resolve(teacher, student, configs[-1].run_id if configs else None))
    return configs


def parents(run_ids: list[str], configs: list[RunConfig]) -> dict[str, str]:
    """Run id → the run id of its teacher run, for the runs among `run_ids` whose teacher run is also among them
    (the stages that must wait for another job of the same submission)."""
    todo = set(run_ids)
    return {c.run_id: c.teacher_run for c in configs
            if c.run_id in todo and c.teacher_run is not None and c.teacher_run in todo}


def local_shares(run_ids: list[str], parent_of: dict[str, str], workers: int) -> list[list[int]]:
    """Indices of `run_ids` per local worker: round-robin, except that a stage goes to the worker of the stage
    before it, after it (a worker runs its share in order). `run_ids` lists a stage after its teacher run."""
    shares: list[list[int]] = [[] for _ in range(max(1, workers))]
    worker_of: dict[str, int] = {}
    turn = 0
    for i, run_id in enumerate(run_ids):
        parent = parent_of.get(run_id)
        if parent is not None and parent in worker_of:
            w = worker_of[parent]
        else:
            w, turn = turn % len(shares), turn + 1
        shares[w].append(i)
        worker_of[run_id] = w
    return [share for share in shares if share]
