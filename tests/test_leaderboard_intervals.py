"""Issue #38, parts 1-3, on the committed reference records (results/reference/runs), through `kdbench
leaderboard`: each comparison's difference from ce with its 95 % interval and each cell's Wilson interval (the
issue quoted results version 4's kd +2.94 [2.01, 3.88] and crd −2.28 [−5.17, 0.61]; version 5's are pinned here);
Holm across the table's comparisons by default, per column with `--family column`, the footer naming which; the
power line per comparison at the family's α/m, named post-hoc (against the old pooled line, recomputed from the
CSV)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import pytest

from kdbench.report.leaderboard.intervals import wilson_interval
from kdbench.report.leaderboard.stats import detectable_difference

REFERENCE = Path(__file__).resolve().parents[1] / "results" / "reference"
# embedded-hard's CNN student from the ResNet-18 teacher, as results/tables.sh makes its table: its two columns (the
# full-data teacher's, the information-matched control's) share one ce, the 24 comparisons the README's sentences
# pool; the methods at their defaults (the variants and the other teachers have tables of their own).
CNN = ("--results-dir", str(REFERENCE), "--where", "recipe=embedded-hard-v2,student=cifar_resnet8,"
       "teacher=resnet18|none,teacher_seed=0|none,setting=none,recipe.dot_delta=0|none,data.subset_seed=none")
FULL = "teacher_data.train_fraction=1"  # the full-data teacher's column


def _row(csv: pd.DataFrame, row: str) -> pd.Series:
    hit = csv[(csv["row"] == row) & csv["column"].str.contains(FULL, regex=False)]
    assert len(hit) == 1
    return hit.iloc[0]


def test_cells_carry_the_difference_and_its_interval_and_the_family_is_the_table(in_process) -> None:
    shown = in_process("leaderboard", *CNN, "--format", "markdown", "--ci")
    assert shown.returncode == 0, shown.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in shown.stdout.splitlines() if line.startswith("| ")}
    assert "97.67 ± 0.72 (5)⇑ Δ +3.00 [2.38, 3.62]" in rows["kd"]
    assert "93.78 ± 0.80 (5)↓ Δ −0.89 [−1.51, −0.27]" in rows["crd"]
    assert "94.67 ± 0.69 (5) W [91.84, 96.55]" in rows["ce"]  # the test set's own error at ce's 94.67 %
    # Holm over the table's 24 comparisons: crd's p = 0.016 is ↓ alone, not beyond noise after the correction.
    assert "after Holm's correction across the table's 24 comparisons with ce (family: table;" in shown.stdout
    assert "- power (post-hoc" in shown.stdout and "(α = 0.05/24; 5 pairs)" in shown.stdout
    assert "one image is 0.28 points" in shown.stdout

    by_column = in_process("leaderboard", *CNN, "--format", "markdown", "--family", "column")
    assert by_column.returncode == 0, by_column.stderr
    assert "| hkd+kd | 96.11 ± 0.98 (5) | **98.00 ± 0.50 (5)⇑** |" in by_column.stdout
    assert "(family: column; sizes 4, 20;" in by_column.stdout and "(α = 0.05/20; 5 pairs)" in by_column.stdout

    latex = in_process("leaderboard", *CNN, "--format", "latex", "--ci")
    assert latex.returncode == 0 and latex.stdout.isascii() and r"$\Delta$ +3.00 [2.38, 3.62]" in latex.stdout


def test_the_csv_has_intervals_sizes_and_per_comparison_power(in_process) -> None:
    shown = in_process("leaderboard", *CNN, "--format", "csv")
    assert shown.returncode == 0, shown.stderr
    csv = pd.read_csv(io.StringIO(shown.stdout))
    kd, crd, ce = _row(csv, "kd"), _row(csv, "crd"), _row(csv, "ce")
    assert [f"{kd[k]:.2f}" for k in ("diff", "diff_lo", "diff_hi")] == ["3.00", "2.38", "3.62"]
    assert [f"{crd[k]:.2f}" for k in ("diff", "diff_lo", "diff_hi")] == ["-0.89", "-1.51", "-0.27"]
    # ±1.18 points at ce's 95 % on 360 test images; its Wilson interval.
    assert ce["num_test"] == 360 and f"{ce['binomial_se']:.2f}" == "1.18"
    assert (ce["wilson_lo"], ce["wilson_hi"]) == pytest.approx(wilson_interval(ce["mean"], 360))
    assert set(csv["family_m"][csv["test"].notna()]) == {24}
    full = csv[csv["column"].str.contains(FULL, regex=False) & csv["test"].notna()]
    # What the old line would say of these records: each comparison's own figure at uncorrected α runs 0.33–2.42,
    # and the line pooled them (√ of the mean se²) into one figure, 3.23 at α/20 over this column.
    own = [detectable_difference(se, df) for se, df in zip(full["se_diff"], full["df_diff"], strict=True)]
    assert (f"{min(own):.2f}", f"{max(own):.2f}") == ("0.33", "2.42")
    pooled = math.sqrt((full["se_diff"] ** 2).mean())
    assert f"{detectable_difference(pooled, float(full['df_diff'].min()), 0.05 / 20):.2f}" == "3.23"
    # What the table now says: each comparison at the family's α/m.
    assert full["alpha_mdd"].tolist() == pytest.approx([0.05 / 24] * len(full))
    assert full["mdd"].tolist() == pytest.approx([detectable_difference(se, df, 0.05 / 24) for se, df in
                                                  zip(full["se_diff"], full["df_diff"], strict=True)])


def test_an_unknown_family_is_a_user_error_naming_the_valid_ones(in_process) -> None:
    bad = in_process("leaderboard", *CNN, "--family", "row")
    assert bad.returncode == 2 and "table" in bad.stderr and "column" in bad.stderr and "Traceback" not in bad.stderr


def test_the_wilson_interval_stays_in_range_and_matches_its_formula() -> None:
    lo, hi = wilson_interval(50.0, 100)
    assert (round(lo, 2), round(hi, 2)) == (40.38, 59.62)  # the textbook case, z = 1.96
    assert wilson_interval(100.0, 360)[1] == pytest.approx(100.0) and wilson_interval(100.0, 360)[0] < 99.0
    assert wilson_interval(0.0, 360)[0] == pytest.approx(0.0, abs=1e-9) and wilson_interval(0.0, 360)[1] > 1.0
    assert all(math.isnan(v) for v in wilson_interval(90.0, None))
