"""What a leaderboard is: the table kinds and metrics it knows, and the `Leaderboard` it builds (display cells,
the numbers behind them, the best cells and the footer)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

TABLES = ("methods", "ladder", "runs", "ablation", "pivot", "variance")
METRICS = ("top1_last", "top1_best", "top5_last", "top5_best")

# The teacher's own accuracy, as the run record's teacher_metrics (flattened with a `teacher_` prefix) holds it.
TEACHER_METRIC = {"top1_last": "teacher_top1", "top1_best": "teacher_top1_best", "top5_last": "teacher_top5",
                  "top5_best": "teacher_top5_best"}

METRIC_WORDS = {
    "top1_last": "top-1 (%) at the last epoch (as the CRD tables report)",
    "top1_best": "top-1 (%) at the best epoch (as the DKD tables report)",
    "top5_last": "top-5 (%) at the last epoch",
    "top5_best": "top-5 (%) at the best epoch",
}
TEACHER_ROW = "teacher"
FEWER_SEEDS = "†"
# Rows (or cells) of students that predict a test image from the other test images of its evaluation batch.
TRANSDUCTIVE = "‡"
TRANSDUCTIVE_WORDS = "transductive: predictions depend on the other test images in the evaluation batch"
# Rows (or cells) of students that need their teacher's forward pass to predict (cnn2gnn.graph_features=teacher).
TEACHER_AT_INFERENCE = "§"
TEACHER_AT_INFERENCE_WORDS = ("not a standalone student: its predictions need the teacher's forward pass too (the "
                              "graph is built on the teacher's features); its inference time includes the "
                              "teacher's, its parameter count is the student's alone")
# A method's cell that differs from the student alone (`ce`, same column) beyond seed noise: above / below it. The
# double arrow survives Holm's correction across the column's comparisons; the single one is p < 0.05 alone.
ABOVE_CE, BELOW_CE = "↑", "↓"
ABOVE_CE_HOLM, BELOW_CE_HOLM = "⇑", "⇓"
# A mark from Welch's (unpaired) test, where the two cells did not run the same seeds; unmarked: the paired test.
WELCH_MARK = "ʷ"
SIGNIFICANCE_P = 0.05
POWER = 0.8  # the power at which the footer states the smallest detectable difference
# The comparisons Holm's correction runs across (`kdbench leaderboard --family`): every comparison of the table (the
# default: a sentence about a table claims all of them at once), or each column's own.
FAMILIES = ("table", "column")


def significance_words(family: str, sizes: list[int]) -> str:
    """The footer line of the marks, naming the family Holm corrected across and its size."""
    if family == "table":
        across = f"the table's {sizes[0] if sizes else 0} comparisons with ce (family: table; `--family column` " \
                 "corrects each column apart)"
    else:
        across = f"each column's comparisons with ce (family: column; sizes {', '.join(map(str, sizes))}; " \
                 "`--family table` corrects across the whole table)"
    return (f"{ABOVE_CE_HOLM} / {BELOW_CE_HOLM}: above / below the student alone (ce, same column) beyond seed noise "
            f"after Holm's correction across {across}, family-wise α = {SIGNIFICANCE_P}; {ABOVE_CE} / {BELOW_CE}: "
            f"p < {SIGNIFICANCE_P} before the correction only (one comparison of many, so a chance result is "
            "likelier)")


TEST_WORDS = ("test: paired t-test on the per-seed differences where the two cells ran the same seeds (runs of one "
              "seed share initialisation and data order, so seed i of a method is compared with seed i of ce); "
              f"Welch's t-test (unpaired) where they did not, marked {WELCH_MARK}; no mark where either side has "
              "fewer than 2 seeds; CSV columns test, p_vs_ce (the p the mark uses), p_paired and n_pairs, p_welch, "
              "p_holm, family_m (the family's size), diff with diff_lo and diff_hi (the difference from ce and its "
              "95 % interval: t on the per-seed differences, Welch's interval where the test is Welch's; "
              "uncorrected for the family)")
# Which split chose a run's best epoch (the record's metrics.best_selected_on; older records: test).
SELECTIONS = ("test", "val")
SELECTION_WORDS = {
    "test": "the epoch of highest TEST top-1, as the DKD tables (optimistic: the test set picks the epoch)",
    "val": "the epoch of highest top-1 on the validation split held out of training (data.val_fraction); the "
           "TEST accuracy at that epoch is shown",
}


def is_best_metric(metric: str) -> bool:
    return metric.endswith("_best")


def selection_label(selection: str) -> str:
    """`best (val-selected)` / `best (test-selected)`: how a best-epoch column chose its epoch."""
    return f"best ({selection}-selected)"
# Statuses of runs left out of every average (no final metrics) and counted in the footer instead; `interrupted`
# (a time limit, preemption: resumable) was neither averaged nor counted before issue #29.
EXCLUDED_STATUSES = ("failed", "diverged", "interrupted", "running")
DECIMALS = 2


@dataclass
class Leaderboard:
    """One rendered-to-be table: display cells, the numbers behind them, the marked cells and the footer."""

    kind: str
    title: str
    table: pd.DataFrame  # display strings; the index (when named) is the row label column
    data: pd.DataFrame  # tidy numbers behind the cells (what CSV writes)
    footer: list[str] = field(default_factory=list)
    bold: set[tuple[str, str]] = field(default_factory=set)  # (row label, column label) of the best cells
