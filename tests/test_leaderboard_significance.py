"""Significance marks: each method's cell against the student alone (ce) of its column, Welch's t-test over seeds
(records written with RunStore from resolved configs, numbers chosen so that p is known)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import ttest_ind
from test_leaderboard import make_config, write_run

from kdbench.leaderboard import build, render
from kdbench.leaderboard.stats import welch_p

PAIR = "digits · resnet50 → resnet18 · digits-v1"
CE = [85.0, 86.0, 87.0]
ABOVE = [90.0, 92.0, 94.0]  # p ≈ 0.020
BELOW = [80.0, 81.0, 83.0]  # p ≈ 0.016
NOISE = [84.0, 86.5, 88.0]  # p ≈ 0.91: same as ce within noise


def _column(root: Path, with_ce: bool = True) -> None:
    runs = {"kd": ABOVE, "at": BELOW, "pkt": NOISE, "rkd": [99.0]}
    if with_ce:
        runs["ce"] = CE
    for method, values in runs.items():
        teacher = None if method == "ce" else "resnet50"
        for seed, v in enumerate(values):
            write_run(root, make_config(method, teacher=teacher, seed=seed), v)


def test_welch_p_is_scipys_unequal_variance_test_and_needs_two_seeds_a_side() -> None:
    assert welch_p(ABOVE, CE) == pytest.approx(ttest_ind(ABOVE, CE, equal_var=False).pvalue)
    assert welch_p(ABOVE, CE) == pytest.approx(0.0196, abs=1e-4)
    assert math.isnan(welch_p([99.0], CE)) and math.isnan(welch_p(CE, [1.0, math.nan]))
    assert math.isnan(welch_p([1.0, 1.0], [1.0, 1.0]))  # no spread on either side: nothing to test


def test_cells_beyond_noise_are_marked_up_or_down_with_the_p_value_in_the_data(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    _column(root)
    board = build(root)
    t = board.table
    assert t.loc["kd", PAIR] == "92.00 ± 2.00 (3)↑"
    assert t.loc["at", PAIR] == "81.33 ± 1.53 (3)↓"
    assert t.loc["pkt", PAIR] == "86.17 ± 2.02 (3)"  # within noise: no mark
    assert t.loc["rkd", PAIR] == "99.00 (1)†"  # one seed: no test
    assert t.loc["ce", PAIR] == "86.00 ± 1.00 (3)" and t.loc["teacher", PAIR] == "99.00 (1)"
    p = board.data.set_index("row")["p_vs_ce"]
    assert p["kd"] == pytest.approx(welch_p(ABOVE, CE)) and p["at"] == pytest.approx(welch_p(BELOW, CE))
    assert p["pkt"] > 0.05 and all(math.isnan(p[r]) for r in ("rkd", "ce", "teacher"))
    assert any(line.startswith("↑ / ↓: above / below the student alone") and "Welch" in line
               for line in board.footer)
    csv = pd.read_csv(io.StringIO(render(board, "csv")))
    assert csv.set_index("row").loc["kd", "p_vs_ce"] == pytest.approx(welch_p(ABOVE, CE))
    latex = render(board, "latex")
    assert r"92.00 $\pm$ 2.00 (3)$\uparrow$" in latex and r"(3)$\downarrow$" in latex
    assert "92.00 ± 2.00 (3)↑" in render(board, "markdown")


def test_a_column_without_the_student_alone_has_no_marks(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    _column(root, with_ce=False)
    board = build(root)
    assert board.table.loc["kd", PAIR] == "92.00 ± 2.00 (3)"
    assert board.data["p_vs_ce"].isna().all()
    assert not any("Welch" in line for line in board.footer)
