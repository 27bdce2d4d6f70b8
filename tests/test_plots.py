"""Figures from real run records (RunStore-written results and metrics.jsonl; no model is trained)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_leaderboard import make_config, write_run
from typer.testing import CliRunner

from kdbench.core.errors import UserError
from kdbench.report.plots import accuracy_vs_time, select_runs, training_curves
from kdbench.report.results import load_runs
from kdbench.store.records import RunStore

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _history(top1: list[float]) -> list[dict]:
    return [{"epoch": e + 1, "lr": 0.1, "losses": {"total": 2.0 / (e + 1)}, "train_top1": t, "top1": t, "top5": 99.0,
             "eval_loss": 1.0, "epoch_s": 1.0, "eval_s": 0.1} for e, t in enumerate(top1)]


@pytest.fixture
def results(dirs: dict[str, Path]) -> tuple[Path, list[str]]:
    root = dirs["results"]
    ids = []
    for seed in range(2):
        rid = write_run(root, make_config("cnn2gnn", teacher="resnet50", student="gnn2", seed=seed),
                        90.0 + seed, layers=2, params=60_000, s_per_image=1e-5)
        RunStore(root).write_metrics(rid, _history([50.0, 80.0, 90.0 + seed]))
        ids.append(rid)
    rid = write_run(root, make_config("ce", student="resnet18"), 85.0, s_per_image=1e-3)
    RunStore(root).write_metrics(rid, _history([40.0, 85.0]))
    ids.append(rid)
    write_run(root, make_config("ce", student="resnet50"), status="failed")
    return root, ids


def _is_figure(path: Path) -> bool:
    head = path.read_bytes()[:8]
    return path.stat().st_size > 1000 and (head == PNG_MAGIC if path.suffix == ".png" else head[:5] == b"%PDF-")


def test_accuracy_vs_time_writes_png_and_pdf_per_dataset(results: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, _ = results
    paths = accuracy_vs_time(load_runs(root), tmp_path / "figs")
    assert [p.name for p in paths] == ["accuracy_vs_time_digits_digits-v1.png", "accuracy_vs_time_digits_digits-v1.pdf"]
    assert all(_is_figure(p) for p in paths)


def test_training_curves_read_each_runs_metrics_jsonl(results: tuple[Path, list[str]], tmp_path: Path) -> None:
    root, ids = results
    runs = load_runs(root)
    paths = training_curves(select_runs(runs, [i[:6] for i in ids[:2]]), root, tmp_path, formats=["png"])
    assert [p.name for p in paths] == ["training_curves.png"] and _is_figure(paths[0])
    failed_only = runs[runs["status"] == "failed"]  # no metrics.jsonl: nothing to draw, no empty figure
    assert training_curves(failed_only, root, tmp_path / "none") == []
    with pytest.raises(UserError, match="no run with id 'zzz'"):
        select_runs(runs, ["zzz"])


def test_plot_cli_writes_both_figures(results: tuple[Path, list[str]], tmp_path: Path) -> None:
    from kdbench.cli.app import _register_commands, app

    root, ids = results
    _register_commands()
    out = tmp_path / "plots"
    result = CliRunner().invoke(app, ["plot", "--results-dir", str(root), "--out-dir", str(out), "--runs",
                                      f"{ids[0]},{ids[2]}", "--formats", "png"])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in out.iterdir())
    assert written == ["accuracy_vs_time_digits_digits-v1.png", "training_curves.png"]
    assert all(_is_figure(p) for p in out.iterdir())


def test_long_labels_give_short_unique_file_names():
    from kdbench.report.plots import _slug

    a, b = _slug("x" * 300 + "a"), _slug("x" * 300 + "b")
    assert len(a) <= 90 and a != b
    assert _slug("digits digits-v1") == "digits-digits-v1"
