"""An interrupted run (a time limit or preemption stopped it; resumable) has no final metrics: it is never
averaged, and the footer counts it with the other runs left out. Before issue #29 it was silently missing from
both."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_leaderboard import PAIR, make_config, write_run

from kdbench.report.leaderboard import build


# The ladder's scope is the students trained alone (ce) and the distilled methods it names: the kd runs are not
# its own, so it counts the interrupted ce run only.
@pytest.mark.parametrize(("table", "counted"), [("methods", "1 failed, 2 interrupted"), ("ladder", "1 interrupted")])
def test_interrupted_runs_are_counted_in_the_footer_not_averaged(table: str, counted: str,
                                                                 dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    for seed, top1 in enumerate([90.0, 92.0]):
        write_run(root, make_config("kd", teacher="resnet50", seed=seed), top1)
        write_run(root, make_config("ce", seed=seed), 80.0 + seed)
    write_run(root, make_config("kd", teacher="resnet50", seed=5), status="interrupted")
    write_run(root, make_config("ce", seed=6), status="interrupted")
    write_run(root, make_config("kd", teacher="resnet50", seed=7), status="failed")
    board = build(root, table=table)
    assert any(f"not averaged: {counted} run(s)" in line for line in board.footer), board.footer
    if table == "methods":
        kd = board.data[(board.data["row"] == "kd") & (board.data["column"] == PAIR)].iloc[0]
        assert kd["n"] == 2 and kd["mean"] == pytest.approx(91.0)
