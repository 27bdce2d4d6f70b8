"""Issue #38.4's `variance` table on a synthetic runs table, against components computed by hand: the nested
method-of-moments ANOVA (teacher seed ⊃ subset draw ⊃ student seed), its clipping at 0, the shares, which source
dominates, and the paired difference from ce with its two-stage cluster-bootstrap interval."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from kdbench.report.leaderboard import prepare_runs, render
from kdbench.report.leaderboard.nested import cluster_bootstrap, nested_components
from kdbench.report.leaderboard.variance import variance_table
from kdbench.report.results import COLUMNS

# kd: teacher seed → subset draw → [student seed 0, seed 1] top-1 (90 + the values of the hand computation below)
KD = {0: {0: [91.0, 93.0], 1: [95.0, 97.0]}, 1: {0: [92.0, 94.0], 1: [100.0, 102.0]}}
CE = {0: [90.0, 92.0], 1: [94.0, 94.0]}  # subset draw → [seed 0, seed 1]
DATA = {"image_size": 8, "split_seed": 0, "test_fraction": 0.2, "train_fraction": 0.1}


def _run(method: str, teacher_seed: int, draw: int, seed: int, top1: float) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    teacher = "cifar_resnet8" if method != "ce" else None
    # Draw 0 is split_seed's own draw: no subset_seed in the record (the same run id as before the setting).
    data = {**DATA, **({"subset_seed": draw} if draw else {})}
    row.update(run_id=f"{method}-{teacher_seed}-{draw}-{seed}", status="completed", method=method, teacher=teacher,
               student="cifar_resnet8", dataset="digits", seed=seed, recipe="digits-v1", top1_last=top1,
               data_params=data, teacher_seed=teacher_seed if teacher else 0, method_params={}, student_params={},
               recipe_params={"name": "digits-v1", "epochs": 1}, **{"data.num_test": 360})
    return row


def _runs() -> pd.DataFrame:
    rows = [_run("kd", t, d, s, v) for t, draws in KD.items() for d, vals in draws.items()
            for s, v in enumerate(vals)]
    rows += [_run("ce", 0, d, s, v) for d, vals in CE.items() for s, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_components_match_the_hand_computation_with_a_negative_estimate_clipped() -> None:
    # Draw means 92, 96 | 93, 101; teacher means 94, 97; grand 95.5 (a = b = n = 2).
    # MS_seed = 8 / 4 = 2; MS_draw = 2 · (4 + 4 + 16 + 16) / 2 = 40; MS_teacher = 4 · (2.25 + 2.25) / 1 = 18.
    # σ²_seed = 2, σ²_draw = (40 − 2) / 2 = 19, σ²_teacher = (18 − 40) / 4 = −5.5 → 0.
    comp = nested_components([[draw for draw in KD[t].values()] for t in KD])
    assert comp.mean == 95.5
    assert comp.mean_square == {"teacher": 18.0, "draw": 40.0, "seed": 2.0}
    assert comp.raw == {"teacher": -5.5, "draw": 19.0, "seed": 2.0}
    assert comp.variance == {"teacher": 0.0, "draw": 19.0, "seed": 2.0}
    assert comp.share("draw") == pytest.approx(19 / 21) and comp.share("teacher") == 0.0
    assert comp.dominant() == "draw"


def test_unequal_sizes_use_the_unbalanced_coefficients() -> None:
    # T0: draws [0, 2], [6]; T1: [3, 5, 7]. N = 6, B = 3, a = 2; n_t = 3, 3.
    # ȳ = 23/6; teacher means 8/3, 5; draw means 1, 6, 5.
    # SS_T = 3 (8/3 − 23/6)² + 3 (5 − 23/6)² = 49/6; SS_D = 2 (1 − 8/3)² + (6 − 8/3)² = 50/3; SS_e = 2 + 8 = 10.
    # k1 = (6 − (5/3 + 3)) / 1 = 4/3; k2 = ((5/3 + 3) − (4 + 1 + 9)/6) / 1 = 7/3; k3 = (6 − 18/6) / 1 = 3.
    comp = nested_components([[[0, 2], [6]], [[3, 5, 7]]])
    ms_t, ms_d, ms_e = 49 / 6, 50 / 3, 10 / 3
    draw = (ms_d - ms_e) / (4 / 3)
    teacher = (ms_t - ms_e - 7 / 3 * draw) / 3
    assert comp.df == {"teacher": 1, "draw": 1, "seed": 3}
    assert comp.raw["seed"] == pytest.approx(ms_e) and comp.raw["draw"] == pytest.approx(draw)
    assert comp.raw["teacher"] == pytest.approx(teacher)


def test_one_teacher_has_no_teacher_component_and_the_bootstrap_needs_two_units() -> None:
    comp = nested_components([[CE[0], CE[1]]])  # ce: draw means 91, 94; MS_seed = 2/2, MS_draw = 2 · 4.5
    assert math.isnan(comp.variance["teacher"])
    assert comp.variance["draw"] == pytest.approx((9 - 1) / 2) and comp.variance["seed"] == pytest.approx(1)
    assert comp.share("draw") == pytest.approx(0.8)
    assert math.isnan(cluster_bootstrap([[[1.0]]])[1])


def test_the_table_pools_teachers_and_draws_and_pairs_each_run_with_ce() -> None:
    board = variance_table(prepare_runs(_runs()))
    data = board.data.set_index("row")
    kd, ce = data.loc["kd"], data.loc["ce"]
    assert (kd["n_teachers"], kd["n_draws"], kd["n_runs"]) == (2, 2, 8)
    assert (kd["var_teacher"], kd["var_draw"], kd["var_seed"]) == (0.0, 19.0, 2.0)
    assert kd["dominant"] == "draw" and ce["dominant"] == "draw"
    assert math.isnan(ce["var_teacher"]) and ce["var_draw"] == pytest.approx(4.0)
    # Paired with ce's run of the same draw and seed: differences T0 [1, 1] [1, 3], T1 [2, 2] [6, 8]; draw means
    # 1, 2 | 2, 7; teacher means 1.5, 4.5; estimate 3. Each resample is a mean of draw means in [1, 7].
    assert kd["diff"] == pytest.approx(3.0) and kd["n_pairs"] == 8
    assert 1.0 <= kd["diff_lo"] < 3.0 < kd["diff_hi"] <= 7.0
    assert math.isnan(ce["diff"])
    shown = render(board, "markdown")
    column = "digits · cifar_resnet8 → cifar_resnet8 · digits-v1"
    assert f"| kd | {column} | 2 × 2, 8 | 95.50 | 0.00 (0 %) | 19.00 (90 %) | 2.00 (10 %) | subset draw |" in shown
    assert "dominant variance: subset draw in ce, kd" in shown
    assert "teacher_seed" not in board.table["column"].iloc[0]  # the pooled column names no one teacher
