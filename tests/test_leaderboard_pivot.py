"""The pivot table from run records (written with RunStore from resolved configs; no model is trained): a
temperature × w_kd grid as rows × columns, mean ± std over seeds, and refusal when the runs differ in more."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdbench.core.errors import UserError
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.report.leaderboard import build, render
from kdbench.store.record_builder import new_record
from kdbench.store.records import RunStore

TEMPERATURES = (1, 2, 4, 8)
WEIGHTS = (0.5, 0.9)


def top1(t: float, w: float, seed: int) -> float:
    return 80.0 + t + 10 * w + 0.5 * seed


def write_run(root: Path, top: float | None, *, seed: int = 0, status: str = "completed", method: str = "kd",
              sets: tuple[str, ...] = (), epochs: int | None = None) -> str:
    config = resolve_config(RunOptions(method=method, teacher="resnet18" if method != "ce" else None, seed=seed,
                                       epochs=epochs, sets=list(sets)))
    record = new_record(config)
    record["status"] = status
    if status == "completed":
        record["metrics"] = {"top1_last": top, "top1_best": top + 1.0, "top5_last": 99.0, "top5_best": 99.5,
                             "best_epoch": 1, "epochs": config.recipe.epochs}
    RunStore(root).write(record)
    return config.run_id


@pytest.fixture
def temperature_sweep(dirs: dict[str, Path]) -> Path:
    """The kd-temperature sweep's 24 records (T=8, w_kd=0.9 with 2 seeds only), a ce run and a failed kd run."""
    root = dirs["results"]
    for t in TEMPERATURES:
        for w in WEIGHTS:
            for seed in range(2 if (t, w) == (8, 0.9) else 3):
                write_run(root, top1(t, w, seed), seed=seed, sets=(f"kd.temperature={t}", f"kd.w_kd={w}"))
    write_run(root, 70.0, method="ce")
    write_run(root, None, seed=9, status="failed", sets=("kd.temperature=2",))
    return root


def test_pivot_lays_the_grid_out_as_rows_and_columns_with_mean_std_over_seeds(temperature_sweep):
    board = build(temperature_sweep, "pivot", rows=["kd.temperature"], cols=["kd.w_kd"])
    table = board.table
    assert table.index.name == "kd.temperature"
    assert list(table.index) == ["1", "2", "4", "8"]  # numeric order
    assert list(table.columns) == ["kd.w_kd=0.5", "kd.w_kd=0.9"]
    for t in TEMPERATURES:
        for w in WEIGHTS:
            seeds = range(2 if (t, w) == (8, 0.9) else 3)
            values = [top1(t, w, s) for s in seeds]
            cell = f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f} ({len(values)})"
            assert table.loc[str(t), f"kd.w_kd={w}"].startswith(cell)
    assert table.loc["8", "kd.w_kd=0.9"].endswith("†")  # fewer seeds than the other cells
    assert board.bold == {("8", "kd.w_kd=0.9")}
    assert any("1 failed" in line for line in board.footer)  # counted, not averaged
    assert len(board.data) == 8 and set(board.data["n"]) == {2, 3}
    markdown = render(board, "markdown")
    assert "| kd.temperature | kd.w_kd=0.5 | kd.w_kd=0.9 |" in markdown
    assert "| 4 | 89.50 ± 0.50 (3) | 93.50 ± 0.50 (3) |" in markdown


def test_pivot_on_one_axis_has_one_column_per_metric(temperature_sweep):
    board = build(temperature_sweep, "pivot", metric="top1_best", rows=["kd.temperature", "kd.w_kd"])
    assert list(board.table.columns) == ["top1_best"]
    assert board.table.loc["2, 0.5", "top1_best"] == "88.50 ± 0.50 (3)"  # best epoch = last + 1 here


def test_pivot_refuses_runs_that_differ_in_more_than_its_keys(temperature_sweep):
    write_run(temperature_sweep, 99.0, sets=("kd.temperature=2", "kd.w_kd=0.5"), epochs=3)
    with pytest.raises(UserError, match=r"differ in more than those and the seed \(recipe\.epochs\)"):
        build(temperature_sweep, "pivot", rows=["kd.temperature"], cols=["kd.w_kd"])
    narrowed = build(temperature_sweep, "pivot", rows=["kd.temperature"], cols=["kd.w_kd"], where="epochs!=3")
    assert narrowed.table.loc["2", "kd.w_kd=0.5"].endswith("(3)")


def test_pivot_key_no_run_has_is_a_user_error(temperature_sweep):
    with pytest.raises(UserError, match="no run has crd.w_crd"):
        build(temperature_sweep, "pivot", rows=["crd.w_crd"])
    with pytest.raises(UserError, match="needs --rows"):
        build(temperature_sweep, "pivot")


def test_cli_pivot(temperature_sweep):
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    res = CliRunner().invoke(app, ["leaderboard", "--table", "pivot", "--rows", "kd.temperature", "--cols",
                                   "kd.w_kd", "--format", "csv"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0] == "kd.temperature,kd.w_kd,metric,mean,std,n,teacher_at_inference,run_ids,best"
    assert len(res.stdout.splitlines()) == 9
    wrong = CliRunner().invoke(app, ["leaderboard", "--rows", "kd.temperature"])
    assert isinstance(wrong.exception, UserError) and "add --table pivot" in str(wrong.exception)
