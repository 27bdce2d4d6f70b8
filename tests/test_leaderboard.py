"""Leaderboards from real run records (written with RunStore from resolved configs; no model is trained)."""

from __future__ import annotations

import dataclasses
import io
import json
import statistics
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from kdbench.core.errors import UserError
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.report.leaderboard import build, leaderboard, render
from kdbench.spec.config import RunConfig
from kdbench.store.record_builder import new_record
from kdbench.store.records import RunStore


def make_config(method: str, *, teacher: str | None = None, student: str = "resnet18", seed: int = 0,
                epochs: int = 1, sets: tuple[str, ...] = ("data.image_size=8",), **replace: Any) -> RunConfig:
    """A real config from the resolver; methods and students not registered in this checkout (cnn2gnn, crd,
    gnn2) are substituted afterwards, as the record schema is the same for every method."""
    base = "kd" if teacher is not None else "ce"
    config = resolve_config(RunOptions(method=base, teacher=teacher, student="resnet18", seed=seed, epochs=epochs,
                                       teacher_epochs=1, sets=list(sets)))
    changes = {"method": method, "student": student, **replace}
    if method not in ("ce", "kd"):
        changes.setdefault("method_params", {})
    return dataclasses.replace(config, **changes)


def write_run(root: Path, config: RunConfig, top1: float | None = None, *, status: str = "completed",
              teacher_top1: float = 99.0, layers: int = 18, params: int = 11_000_000, s_per_image: float = 1e-3,
              train_s: float = 10.0) -> str:
    record = new_record(config)
    record["status"] = status
    if config.teacher is not None:
        record["teacher_metrics"] = {"top1": teacher_top1, "top5": 100.0, "top1_best": teacher_top1 + 0.5,
                                     "sha256": f"sha-{config.teacher}-{config.teacher_seed}", "params": 5, "layers": 3}
    if status == "completed":
        assert top1 is not None
        record.update(
            metrics={"top1_last": top1, "top1_best": top1 + 1.0, "top5_last": 99.5, "top5_best": 99.9,
                     "best_epoch": 1, "epochs": config.recipe.epochs},
            student_info={"params": params, "layers": layers, "method_extra_params": 0},
            inference={"batch_size": 256, "s_per_image": s_per_image, "device": "cpu"},
            timing={"teacher_s": 0.0, "train_s": train_s, "total_s": train_s, "epoch_s_mean": train_s},
            finished_at="2025-01-01T00:00:00+0000",
        )
    RunStore(root).write(record)
    return config.run_id


KD_TOP1 = [90.0, 92.0, 94.0]
CE_TOP1 = [85.0, 86.0, 87.0]


@pytest.fixture
def results(dirs: dict[str, Path]) -> Path:
    """A small results folder: resnet50 → resnet18 with ce/kd (3 seeds) and crd (2 seeds), a failed and a
    diverged kd run, a running crd run, and the CNN2GNN pair resnet50 → gnn2 plus gnn2 alone."""
    root = dirs["results"]
    for seed, (kd, ce) in enumerate(zip(KD_TOP1, CE_TOP1, strict=True)):
        write_run(root, make_config("kd", teacher="resnet50", seed=seed), kd)
        write_run(root, make_config("ce", seed=seed), ce)
    for seed, v in enumerate([95.0, 96.0]):
        write_run(root, make_config("crd", teacher="resnet50", seed=seed), v)
    write_run(root, make_config("kd", teacher="resnet50", seed=7), status="failed")
    write_run(root, make_config("kd", teacher="resnet50", seed=8), status="diverged")
    write_run(root, make_config("crd", teacher="resnet50", seed=9), status="running")
    for seed, v in enumerate([97.0, 99.0, 98.0]):
        write_run(root, make_config("cnn2gnn", teacher="resnet50", student="gnn2", seed=seed,
                                    method_params={"k": 10, "graph": "batch"}), v, layers=2, params=60_000,
                  s_per_image=1e-5, train_s=3.0)
        write_run(root, make_config("ce", student="gnn2", seed=seed), 80.0 + seed, layers=2, params=60_000,
                  s_per_image=1e-5)
    write_run(root, make_config("ce", student="resnet50", seed=0), 88.0, layers=50, params=23_000_000,
              s_per_image=5e-3, train_s=100.0)
    return root


PAIR = "digits · resnet50 → resnet18 · digits-v1"
GNN_PAIR = "digits · resnet50 → gnn2 · digits-v1"


def test_methods_table_shows_mean_std_and_seed_count_per_pair(results: Path) -> None:
    table = leaderboard(results)
    assert list(table.index[:3]) == ["teacher", "ce", "kd"]  # paper order, then the rest
    # ⇑: above the student alone beyond seed noise after Holm (paired p ≈ 0.009 for KD_TOP1 against CE_TOP1,
    # seeds 0-2 on both sides; crd's 2 seeds make the column's second comparison).
    assert table.loc["kd", PAIR] == f"{92.0:.2f} ± {statistics.stdev(KD_TOP1):.2f} (3)⇑"
    assert table.loc["ce", PAIR] == f"{86.0:.2f} ± {1.0:.2f} (3)"
    # gnn2 trained alone lands in the gnn2 column (matched by dataset + student), not in the resnet18 one.
    # gnn2 on its default batch graph judges a test image by its batch: the cell (ce, a mixed row) or the row
    # label (cnn2gnn, transductive in every cell) carries the mark.
    assert table.loc["ce", GNN_PAIR] == "81.00 ± 1.00 (3)‡"
    assert table.loc["cnn2gnn ‡", GNN_PAIR] == "98.00 ± 1.00 (3)⇑"
    assert table.loc["cnn2gnn ‡", PAIR] == "—"
    assert table.loc["teacher", PAIR] == "99.00 (1)"  # one teacher checkpoint, counted once
    assert any("last epoch" in line for line in table.attrs["footer"])


def test_best_epoch_metric_reads_the_best_epoch_numbers(results: Path) -> None:
    table = leaderboard(results, metric="top1_best")
    assert table.loc["kd", f"{PAIR} · best (test-selected)"].startswith("93.00 ± ")
    assert table.loc["teacher", f"{PAIR} · best (test-selected)"] == "99.50 (1)"
    assert any("best epoch" in line for line in table.attrs["footer"])


def test_failed_diverged_and_running_runs_are_counted_not_averaged(results: Path) -> None:
    board = build(results)
    kd = board.data[(board.data["row"] == "kd") & (board.data["column"] == PAIR)].iloc[0]
    assert kd["n"] == 3 and kd["mean"] == pytest.approx(92.0)
    assert any("1 failed, 1 diverged, 1 running" in line for line in board.footer)


def test_best_student_is_marked_and_fewer_seeds_flagged(results: Path) -> None:
    board = build(results)
    assert (("crd", PAIR) in board.bold) and (("kd", PAIR) not in board.bold)
    assert ("teacher", PAIR) not in board.bold  # the teacher is a reference, not a contender
    # crd ran seeds 0-1, ce 0-2: not the same seeds, so its mark comes from Welch's test (ʷ).
    assert board.table.loc["crd", PAIR] == "95.50 ± 0.71 (2)†⇑ʷ"
    assert not board.table.loc["kd", PAIR].endswith("†")
    assert any(line.startswith("† fewer seeds") for line in board.footer)
    assert "**95.50 ± 0.71 (2)†⇑ʷ**" in render(board, "markdown")


def test_recipes_that_share_a_name_never_share_a_column(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    write_run(root, make_config("kd", teacher="resnet50", epochs=1), 50.0)
    write_run(root, make_config("kd", teacher="resnet50", epochs=2), 70.0)
    table = leaderboard(root)
    # the warm-up follows the epochs (1 epoch: none), so both fields tell the columns apart
    one, two = f"{PAIR} [recipe.epochs=1, recipe.warmup_epochs=0]", f"{PAIR} [recipe.epochs=2, recipe.warmup_epochs=1]"
    assert sorted(table.columns) == [one, two]
    assert table.loc["kd", two] == "70.00 (1)"


def test_method_hyperparameter_variants_are_separate_rows(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    for k, v in ((0, 60.0), (10, 70.0)):
        write_run(root, make_config("cnn2gnn", teacher="resnet50", student="gnn2",
                                    method_params={"k": k, "graph": "batch"}), v)
    table = leaderboard(root)
    assert table.loc["cnn2gnn [k=0]", GNN_PAIR] == "60.00 (1)"
    assert table.loc["cnn2gnn [k=10] ‡", GNN_PAIR] == "70.00 (1)"
    # The batch graph depends on the evaluation batch: in the ablation it is a row, never a silent merge.
    write_run(root, make_config("cnn2gnn", teacher="resnet50", student="gnn2", sets=("recipe.eval_batch_size=1",
                                "data.image_size=8"), method_params={"k": 10, "graph": "batch"}), 20.0)
    ablation = leaderboard(root, table="ablation", method="cnn2gnn")
    assert ablation.loc["cnn2gnn [k=0, recipe.eval_batch_size=256]", GNN_PAIR] == "60.00 (1)"
    assert ablation.loc["cnn2gnn [k=10, recipe.eval_batch_size=1] ‡", GNN_PAIR] == "20.00 (1)"
    assert list(ablation.columns) == [GNN_PAIR]


def test_where_reaches_settings_by_their_set_names_and_setting_keeps_the_defaults(dirs: dict[str, Path]) -> None:
    """`recipe.dot_delta=0|none` and `data.subset_seed=none` read the settings dicts (a key left out at its default
    is `none`); `setting=none` keeps the runs at their method's registered defaults, `setting!=none` the variants,
    whose text is the row label's bracket."""
    root = dirs["results"]
    for seed in range(2):
        write_run(root, make_config("kd", teacher="resnet50", seed=seed), 90.0 + seed)
        write_run(root, make_config("kd", teacher="resnet50", seed=seed, sets=("data.image_size=8",
                                                                                "kd.temperature=2")), 91.0)
        write_run(root, make_config("kd", teacher="resnet50", seed=seed, sets=("data.image_size=8",
                                                                                "recipe.dot_delta=0.075")), 92.0)
        write_run(root, make_config("ce", seed=seed, sets=("data.image_size=8", "data.subset_seed=1",
                                                            "data.train_fraction=0.5")), 80.0)
    runs = build(root, "runs", where="setting=none,recipe.dot_delta=0|none,data.subset_seed=none").data
    assert len(runs) == 2 and set(runs["method"]) == {"kd"}
    variants = build(root, "runs", where="setting!=none").data
    assert len(variants) == 2 and set(variants["variant"]) == {"temperature=2"}
    assert len(build(root, "runs", where="recipe.dot_delta=0.075").data) == 2
    assert len(build(root, "runs", where="data.subset_seed=1").data) == 2
    for wrong in ("recipe.", "optim.lr"):  # a scope without its key; a scope that is not a settings dict
        with pytest.raises(UserError, match=f"unknown --where column '{wrong}'.*recipe.KEY"):
            build(root, "runs", where=f"{wrong}=1")


def test_where_filters_runs_before_the_table_is_built(results: Path) -> None:
    runs = build(results, "runs", where="method=kd,seed=1").data
    assert list(runs["method"]) == ["kd"] and list(runs["seed"]) == [1]
    only_gnn = leaderboard(results, where="student=gnn2")
    assert list(only_gnn.columns) == [GNN_PAIR]
    not_failed = build(results, "runs", where="status!=failed|diverged|running").data
    assert set(not_failed["status"]) == {"completed"}
    with pytest.raises(UserError, match="unknown --where column 'metod'"):
        build(results, "runs", where="metod=kd")


def test_runs_table_lists_every_run_with_its_status(results: Path) -> None:
    board = build(results, "runs")
    assert len(board.data) == 18
    assert board.data["status"].value_counts().to_dict() == {"completed": 15, "failed": 1, "diverged": 1,
                                                             "running": 1}
    assert {"run_id", "pair", "seed", "top1_last", "timing.train_s"} <= set(board.table.columns)


def test_ladder_puts_the_gnn_beside_the_cnns_trained_alone(results: Path) -> None:
    board = build(results, "ladder")
    data = board.data
    assert list(data["model"]) == ["gnn2 ‡", "gnn2 ‡", "resnet18", "resnet50"]  # ordered by depth
    assert list(data["trained"]) == ["alone (ce)", "cnn2gnn ← resnet50", "alone (ce)", "alone (ce)"]
    assert list(data["layers"]) == [2, 2, 18, 50]
    assert data.loc[1, "infer_ms_per_image"] == pytest.approx(0.01)
    assert data.loc[1, "infer_batch_size"] == 256 and data.loc[1, "train_s"] == pytest.approx(3.0)
    cols = list(board.table.columns)
    assert cols[:6] == ["dataset", "recipe", "model", "trained", "layers", "params"]
    assert cols[6:] == ["top1_last", "ms/image", "train time"]
    assert board.table.loc["1", "ms/image"] == "0.01 (b=256, cpu)"
    assert board.table.loc["3", cols[6]] == "88.00 (1)†"  # one seed where the others have three
    assert ("1", cols[6]) in board.bold  # the distilled GNN is the best of its dataset · recipe


def test_every_format_parses(results: Path) -> None:
    board = build(results)
    csv = pd.read_csv(io.StringIO(render(board, "csv")))
    kd = csv[(csv["row"] == "kd") & (csv["column"] == PAIR)].iloc[0]
    assert kd["mean"] == pytest.approx(92.0) and kd["n"] == 3 and kd["metric"] == "top1_last"
    assert sorted(csv.loc[csv["best"], "row"]) == ["cnn2gnn ‡", "crd"]  # CSV rows follow run ids (content hashes)

    latex = render(board, "latex")
    assert r"\begin{tabular}" in latex and r"\end{tabular}" in latex
    assert r"\textbf{95.50 $\pm$ 0.71 (2)$^\dagger$$\Uparrow$$^{w}$}" in latex
    assert r"92.00 $\pm$ 2.00 (3)" in latex and r"resnet50 $\rightarrow$ resnet18" in latex

    md_rows = [line for line in render(board, "markdown").splitlines() if line.startswith("|")]
    assert len(md_rows) == 2 + len(board.table)
    assert len({line.count(" | ") for line in md_rows if not line.startswith("|--")}) == 1

    root = ET.fromstring(render(board, "html"))  # well-formed (X)HTML
    header = [th.text for th in root.iter("th")]
    assert header == ["method", *board.table.columns]
    assert [s.text for s in root.iter("strong")] == ["95.50 ± 0.71 (2)†⇑ʷ", "98.00 ± 1.00 (3)⇑"]

    rich = render(board, "text")
    assert "95.50 ± 0.71 (2)†⇑ʷ *" in rich and "last epoch" in rich


def test_cli_writes_each_format_inferred_from_the_suffix(results: Path, tmp_path: Path) -> None:
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    runner = CliRunner()
    for name in ("board.md", "board.csv", "board.tex", "board.html", "ladder.csv"):
        table = "ladder" if name.startswith("ladder") else "methods"
        out = tmp_path / name
        result = runner.invoke(app, ["leaderboard", "--results-dir", str(results), "--table", table,
                                     "--out", str(out)])
        assert result.exit_code == 0, result.output
        assert out.stat().st_size > 0
    assert pd.read_csv(tmp_path / "ladder.csv")["model"].tolist()[0] == "gnn2 ‡"
    shown = runner.invoke(app, ["leaderboard", "--results-dir", str(results), "--table", "runs", "--where",
                                "method=crd", "--format", "csv"])
    assert shown.exit_code == 0, shown.output
    lines = [ln for ln in shown.stdout.splitlines() if ln]
    assert len(lines) == 1 + 3 and all(",crd," in ln for ln in lines[1:])
    # Several --where must all hold (not the last one alone): crd runs of seed 1 only.
    both = runner.invoke(app, ["leaderboard", "--results-dir", str(results), "--table", "runs", "--where",
                               "method=crd", "-w", "seed=1", "--format", "csv"])
    assert both.exit_code == 0, both.output
    rows = pd.read_csv(io.StringIO(both.stdout))
    assert list(rows["method"]) == ["crd"] and list(rows["seed"]) == [1]
    bad = runner.invoke(app, ["leaderboard", "--results-dir", str(results), "--metric", "top1"])
    assert bad.exit_code != 0


def test_leaderboard_is_a_pure_function_of_the_runs_dataframe(results: Path) -> None:
    from kdbench.report.results import load_runs

    runs = load_runs(results)
    before = runs.to_json()  # deep: the dict-valued columns (params, recipe) count too
    assert leaderboard(runs).equals(leaderboard(results))
    leaderboard(runs, table="ablation")
    assert runs.to_json() == before
    assert json.dumps(leaderboard(runs).attrs)  # plain data only


def test_teacher_row_counts_each_teacher_checkpoint_once_and_tells_checkpoints_apart_by_sha() -> None:
    from kdbench.report.leaderboard.stats import teacher_stats

    runs = pd.DataFrame({
        # two students of teacher A (counted once), one of teacher B with the same seed (its own checkpoint),
        # one of a user teacher without a sha (identified by its seed)
        "teacher_top1": [90.0, 90.0, 80.0, 70.0],
        "teacher_sha256": ["aaa", "aaa", "bbb", None],
        "teacher_seed": [0, 0, 0, 3],
    })
    got = teacher_stats(runs, "top1_last")
    assert got["n"] == 3
    assert got["mean"] == pytest.approx(80.0)


def test_best_and_fewer_seed_marks_skip_the_teacher_and_empty_cells() -> None:
    from kdbench.report.leaderboard.stats import TEACHER_ROW, mark_best_and_flags

    data = pd.DataFrame({
        "row": [TEACHER_ROW, "ce", "kd", "crd", "rkd", "pkt", "at"],
        "column": ["c"] * 5 + ["d"] * 2,
        "mean": [99.0, 90.0, 91.0, 91.0, float("nan"), 95.0, 94.0],
        "n": [1, 3, 3, 2, 0, 1, 3],  # rkd: only failed runs, nothing averaged; pkt: one seed
    })
    marked = mark_best_and_flags(data)
    assert marked["fewer_seeds"].tolist() == [False, False, False, True, False, True, False]
    # ties all marked; never the teacher; a one-seed cell competes (and is flagged)
    assert marked["best"].tolist() == [False, False, True, True, False, True, False]
    assert marked.attrs["max_n"] == 3
    assert mark_best_and_flags(data[data["row"] == TEACHER_ROW]).attrs["max_n"] == 0  # no student: no seeds


def test_variant_rows_sort_by_their_numbers_not_as_text(dirs: dict[str, Path]) -> None:
    """A weight sweep's rows read in the order of the weight (2 < 4 < 10), not as strings ("10" < "2")."""
    root = dirs["results"]
    for temperature in ("10", "2", "4"):
        sets = ("data.image_size=8", f"kd.temperature={temperature}")
        write_run(root, make_config("kd", teacher="resnet50", sets=sets), 90.0)
    write_run(root, make_config("ce"), 85.0)
    shown = render(build(root, "ablation", method="kd"), "markdown")
    rows = [line.split(" | ")[0].lstrip("| ") for line in shown.splitlines() if line.startswith("| kd [")]
    assert rows == ["kd [temperature=2]", "kd [temperature=4]", "kd [temperature=10]"]
