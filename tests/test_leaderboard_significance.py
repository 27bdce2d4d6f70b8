"""Significance marks: each method's cell against the student alone (ce) of its column, by the paired t-test over
the seeds both ran (Welch's where they did not), Holm-corrected across the column; the power line and the
binomial test-set error in the footer (records written with RunStore from resolved configs, numbers chosen so
that every p is known)."""

from __future__ import annotations

import io
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import nct, t, ttest_ind, ttest_rel
from test_leaderboard import make_config, write_run

from kdbench.report.leaderboard import build, render
from kdbench.report.leaderboard.stats import binomial_se, detectable_difference, holm, paired_p, welch_p
from kdbench.store.records import RunStore

PAIR = "digits · resnet50 → resnet18 · digits-v1"
CE = [85.0, 86.0, 87.0]
ABOVE = [90.0, 92.0, 94.0]  # per-seed differences 5, 6, 7: paired p ≈ 0.0091
BELOW = [80.0, 81.0, 83.0]  # −5, −5, −4: paired p ≈ 0.0051
NOISE = [84.0, 86.5, 88.0]  # −1, 0.5, 1: paired p ≈ 0.81, same as ce within noise
EDGE = [87.0, 89.0, 91.0]  # 2, 3, 4: paired p ≈ 0.035, below 0.05 alone but not after Holm
OTHER_SEEDS = [95.0, 96.0]  # seeds 0-1 only against ce's 0-2: Welch's p ≈ 0.0014


def _column(root: Path, with_ce: bool = True, num_test: int | None = None) -> None:
    runs = {"kd": ABOVE, "at": BELOW, "pkt": NOISE, "fitnet": EDGE, "crd": OTHER_SEEDS, "rkd": [99.0]}
    if with_ce:
        runs["ce"] = CE
    store = RunStore(root)
    for method, values in runs.items():
        teacher = None if method == "ce" else "resnet50"
        for seed, v in enumerate(values):
            run_id = write_run(root, make_config(method, teacher=teacher, seed=seed), v)
            if num_test is not None:  # what the runner records of the data (kdbench.execute.runner)
                record = store.load(run_id)
                record["data"] = {"num_train": 1437, "num_test": num_test}
                store.write(record)


def _seeds(values: list[float]) -> dict[int, float]:
    return dict(enumerate(values))


def test_welch_p_is_scipys_unequal_variance_test_and_needs_two_seeds_a_side() -> None:
    assert welch_p(ABOVE, CE) == pytest.approx(ttest_ind(ABOVE, CE, equal_var=False).pvalue)
    assert welch_p(ABOVE, CE) == pytest.approx(0.0196, abs=1e-4)
    assert math.isnan(welch_p([99.0], CE)) and math.isnan(welch_p(CE, [1.0, math.nan]))
    assert math.isnan(welch_p([1.0, 1.0], [1.0, 1.0]))  # no spread on either side: nothing to test


def test_paired_p_pairs_runs_by_seed_and_tests_the_differences() -> None:
    p, pairs = paired_p(_seeds(ABOVE), _seeds(CE))
    assert pairs == 3 and p == pytest.approx(ttest_rel(ABOVE, CE).pvalue) and p == pytest.approx(0.0091, abs=1e-4)
    # Only seeds both ran pair up, whatever order they come in: seed 5 of one side has no partner.
    p, pairs = paired_p({2: 94.0, 0: 90.0, 1: 92.0, 5: 10.0}, {1: 86.0, 2: 87.0, 0: 85.0})
    assert pairs == 3 and p == pytest.approx(ttest_rel(ABOVE, CE).pvalue)
    assert paired_p({0: 90.0, 1: 92.0}, {1: 86.0, 2: 87.0}) == (pytest.approx(math.nan, nan_ok=True), 1)
    # Every difference the same: no spread to test against (as Welch's test with two constant sides).
    assert math.isnan(paired_p({0: 90.0, 1: 91.0}, {0: 85.0, 1: 86.0})[0])


def test_holm_adjusts_in_step_down_order_and_leaves_untested_out() -> None:
    # Sorted 0.01, 0.03, 0.04 of m = 3: 3·0.01, max(that, 2·0.03), max(that, 1·0.04); NaN is not counted.
    assert holm([0.01, 0.04, 0.03, math.nan])[:3] == pytest.approx([0.03, 0.06, 0.06])
    assert math.isnan(holm([0.01, 0.04, 0.03, math.nan])[3])
    assert holm([0.02, 0.9]) == pytest.approx([0.04, 0.9])
    assert holm([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1, and never below an earlier step


@pytest.mark.parametrize("df", [1, 2, 4, 9.5, 29])
def test_the_detectable_difference_is_detected_with_the_stated_power(df: float) -> None:
    se = 0.7
    mdd = detectable_difference(se, df)
    crit = t.ppf(0.975, df)
    power = nct.sf(crit, df, mdd / se) + nct.cdf(-crit, df, mdd / se)
    assert power == pytest.approx(0.8, abs=1e-6)
    assert detectable_difference(se, df, power=0.5) < mdd  # less power asks for less
    assert math.isnan(detectable_difference(math.nan, df)) and math.isnan(detectable_difference(se, 0))


def test_binomial_se_is_the_test_sets_error_of_one_figure() -> None:
    assert binomial_se(98.8888889, 360) == pytest.approx(100 * math.sqrt(0.988888889 * 0.011111111 / 360))
    assert binomial_se(50.0, 100) == pytest.approx(5.0)
    assert math.isnan(binomial_se(90.0, None)) and math.isnan(binomial_se(math.nan, 360))


def test_marks_use_the_paired_test_survive_holm_or_not_and_say_so(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    _column(root)
    board = build(root)
    t_ = board.table
    # Five comparisons with ce (rkd has one seed: no test). Holm, smallest p first: crd 0.0014·5, at 0.0051·4,
    # kd 0.0091·3 all below 0.05; fitnet 0.035·2 = 0.07 is not, so it keeps the single arrow.
    assert t_.loc["kd", PAIR] == "92.00 ± 2.00 (3)⇑"
    assert t_.loc["at", PAIR] == "81.33 ± 1.53 (3)⇓"
    assert t_.loc["fitnet", PAIR] == "89.00 ± 2.00 (3)↑"
    assert t_.loc["pkt", PAIR] == "86.17 ± 2.02 (3)"  # within noise: no mark
    assert t_.loc["crd", PAIR] == "95.50 ± 0.71 (2)†⇑ʷ"  # other seeds than ce's: Welch's test, marked ʷ
    assert t_.loc["rkd", PAIR] == "99.00 (1)†"  # one seed: no test
    assert t_.loc["ce", PAIR] == "86.00 ± 1.00 (3)" and t_.loc["teacher", PAIR] == "99.00 (1)"

    d = board.data.set_index("row")
    assert d.loc["kd", "test"] == "paired" and d.loc["crd", "test"] == "welch"
    assert d.loc["kd", "p_vs_ce"] == pytest.approx(ttest_rel(ABOVE, CE).pvalue)
    assert d.loc["kd", "p_welch"] == pytest.approx(welch_p(ABOVE, CE)) and d.loc["kd", "n_pairs"] == 3
    assert d.loc["crd", "p_vs_ce"] == pytest.approx(welch_p(OTHER_SEEDS, CE)) and d.loc["crd", "n_pairs"] == 2
    assert d.loc["fitnet", "p_holm"] == pytest.approx(2 * ttest_rel(EDGE, CE).pvalue)
    assert all(math.isnan(d.loc[r, "p_vs_ce"]) for r in ("rkd", "ce", "teacher"))
    # Each comparison's own smallest detectable difference: paired, se = s_d / √n with df = n − 1, at the family's
    # α / m (five comparisons in this one-column table).
    assert d.loc["kd", "mdd"] == pytest.approx(detectable_difference(1.0 / math.sqrt(3), 2, 0.05 / 5))
    assert d.loc["kd", "alpha_mdd"] == pytest.approx(0.01) and d.loc["kd", "family_m"] == 5
    # The difference's 95 % interval is scipy's for the test that marks the cell: paired, or Welch's.
    paired_ci, welch_ci = ttest_rel(ABOVE, CE).confidence_interval(), \
        ttest_ind(OTHER_SEEDS, CE, equal_var=False).confidence_interval()
    assert (d.loc["kd", "diff_lo"], d.loc["kd", "diff_hi"]) == pytest.approx((paired_ci.low, paired_ci.high))
    assert (d.loc["crd", "diff_lo"], d.loc["crd", "diff_hi"]) == pytest.approx((welch_ci.low, welch_ci.high))

    footer = "\n".join(board.footer)
    assert "⇑ / ⇓: above / below the student alone" in footer and "Holm" in footer
    assert "test: paired t-test on the per-seed differences" in footer and "Welch" in footer
    power = next(line for line in board.footer if line.startswith("power (post-hoc"))
    assert f"{PAIR} (α = 0.05/5; 3 pairs): " in power and f"crdʷ {d.loc['crd', 'mdd']:.2f}" in power  # unpaired

    csv = pd.read_csv(io.StringIO(render(board, "csv"))).set_index("row")
    assert csv.loc["kd", "p_vs_ce"] == pytest.approx(ttest_rel(ABOVE, CE).pvalue)
    assert {"test", "p_paired", "n_pairs", "p_welch", "p_holm", "mdd", "binomial_se"} <= set(csv.columns)
    latex = render(board, "latex")
    assert r"92.00 $\pm$ 2.00 (3)$\Uparrow$" in latex and r"(3)$\Downarrow$" in latex
    assert r"(3)$\uparrow$" in latex and r"$\Uparrow$$^{w}$" in latex
    assert latex.isascii()  # every mark and footnote symbol (⇑ ʷ √ α −) has its LaTeX spelling
    markdown = render(board, "markdown")
    assert "92.00 ± 2.00 (3)⇑" in markdown and "- power (post-hoc" in markdown


def test_the_power_line_gives_each_comparison_at_the_familys_alpha(dirs: dict[str, Path]) -> None:
    """Per comparison, at α / m (Holm's first step), named post-hoc; not one figure pooled over the column."""
    root = dirs["results"]
    for seed, (ce, kd, at) in enumerate(zip(CE, ABOVE, BELOW, strict=True)):
        write_run(root, make_config("ce", seed=seed), ce)
        write_run(root, make_config("kd", teacher="resnet50", seed=seed), kd)
        write_run(root, make_config("at", teacher="resnet50", seed=seed), at)
    board = build(root)
    sd_kd, sd_at = 1.0, pd.Series([-5.0, -5.0, -4.0]).std()
    power = next(line for line in board.footer if line.startswith("power (post-hoc"))
    each = [f"{m} {detectable_difference(sd / math.sqrt(3), 2, 0.05 / 2):.2f}" for m, sd in (("kd", sd_kd),
                                                                                          ("at", sd_at))]
    assert f"{PAIR} (α = 0.05/2; 3 pairs): " in power and all(e in power for e in each)


def test_the_footer_gives_the_binomial_error_of_a_single_figure(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    _column(root, num_test=360)
    board = build(root)
    line = next(line for line in board.footer if line.startswith("test-set error: "))
    assert "360 test images of digits" in line
    assert f"±{binomial_se(99.0, 360):.2f} at the teacher's 99.00" in line
    students = board.data[board.data["row"] != "teacher"]
    assert f"±{students['binomial_se'].min():.2f} to ±{students['binomial_se'].max():.2f}" in line
    assert board.data.set_index("row").loc["ce", "binomial_se"] == pytest.approx(binomial_se(86.0, 360))
    ladder = build(root, "ladder", distilled=["kd"])
    assert any(line.startswith("test-set error: ") for line in ladder.footer)
    assert ladder.data["binomial_se"].notna().all()
    # Records without the test-set size (older ones) give no such line rather than a wrong one.
    _column(dirs["zoo"])
    assert not any(line.startswith("test-set error") for line in build(dirs["zoo"]).footer)


def test_a_column_without_the_student_alone_has_no_marks(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    _column(root, with_ce=False)
    board = build(root)
    assert board.table.loc["kd", PAIR] == "92.00 ± 2.00 (3)"
    assert board.data["p_vs_ce"].isna().all()
    assert not any("Welch" in line or line.startswith("power") for line in board.footer)


def test_a_cell_whose_seeds_agree_but_for_the_last_bit_is_tested_without_a_scipy_warning() -> None:
    """Three seeds at the same accuracy, one of them a bit off in float (98.33333333333334): scipy printed a
    "precision loss ... catastrophic cancellation" RuntimeWarning line under the table (results version 5's tables);
    the p is still computed, and the line is not something a reader can act on."""
    import warnings

    a = [98.33333333333333, 98.33333333333333, 98.33333333333334]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p = welch_p(a, [97.5, 98.0, 98.2])
    assert 0 < p < 1
