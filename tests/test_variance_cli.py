"""Issue #38.4 through the commands a user types: a nested sweep (2 teacher seeds × 2 subset draws × 2 student
seeds of ce and kd on digits at 8 px, 1 epoch, on a tenth of the training split) run in process, then `kdbench
leaderboard --table variance` on its records (pooled: one row per method) and the methods table (kept apart: a
column per teacher seed and per draw). `data.subset_seed` moves the subset, never the test set, and is refused
in one line where there is no subset to draw."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from kdbench.store.records import RunStore

NESTED = ("sweep", "--methods", "ce,kd", "--teachers", "cifar_resnet8", "--students", "cifar_resnet8",
          "--teacher-seeds", "0,1", "--grid", "data.subset_seed=0,1", "--seeds", "0,1", "--epochs", "1",
          "--teacher-epochs", "1", "--batch-size", "256", "--set", "data.image_size=8", "--set",
          "data.train_fraction=0.1", "--set", "teacher_recipe.batch_size=256", "--executor", "debug")


@pytest.fixture(scope="module")
def nested_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The records of the nested sweep (made once for the module's tests)."""
    from typer.testing import CliRunner

    from kdbench.cli.app import _register_commands, app

    root = tmp_path_factory.mktemp("nested")
    _register_commands()
    done = CliRunner().invoke(app, [*NESTED, "--results-dir", str(root / "results"), "--zoo-dir", str(root / "zoo")])
    assert done.exit_code == 0, done.output
    return root / "results"


def _records(results: Path) -> list[dict]:
    store = RunStore(results)
    records = [store.load(d.name) for d in sorted((results / "runs").iterdir())]
    return [r for r in records if r is not None and r["status"] == "completed"]


def test_the_sweep_nests_teacher_seeds_subset_draws_and_seeds(nested_results: Path) -> None:
    records = _records(nested_results)
    kd = [r for r in records if r["method"] == "kd"]
    ce = [r for r in records if r["method"] == "ce"]
    assert len(kd) == 8 and len(ce) == 4  # ce has no teacher: once per draw and seed
    design = {(r["config"]["teacher_seed"], r["config"]["data_params"].get("subset_seed", 0), r["seed"]) for r in kd}
    assert design == {(t, d, s) for t in (0, 1) for d in (0, 1) for s in (0, 1)}
    # Draw 0 is split_seed's draw: recorded without subset_seed, the id a run before the setting had.
    assert {"subset_seed" in r["config"]["data_params"] for r in ce} == {False, True}
    # Both draws train on 142 samples and test on the same 360 images.
    assert {(r["data"]["num_train"], r["data"]["num_test"]) for r in records} == {(142, 360)}


def test_variance_table_pools_the_design_and_names_the_dominant_source(in_process, nested_results: Path) -> None:
    args = ("leaderboard", "--table", "variance", "--results-dir", str(nested_results))
    shown = in_process(*args, "--format", "markdown")
    assert shown.returncode == 0, shown.stderr
    rows = {line.split(" | ")[0].lstrip("| "): line for line in shown.stdout.splitlines() if line.startswith("| ")}
    assert "| 2 × 2, 8 |" in rows["kd"] and "| — × 2, 4 |" in rows["ce"]
    assert "- dominant variance: " in shown.stdout and "two-stage cluster bootstrap" in shown.stdout

    csv = pd.read_csv(io.StringIO(in_process(*args, "--format", "csv").stdout)).set_index("row")
    assert csv.loc["kd", "n_pairs"] == 8 and csv.loc["kd", "diff_lo"] <= csv.loc["kd", "diff"] <= csv.loc["kd",
                                                                                                           "diff_hi"]
    shares = csv.loc["kd", ["share_teacher", "share_draw", "share_seed"]]
    assert shares.sum() == pytest.approx(1.0)
    assert csv.loc["kd", "dominant"] == ["teacher", "draw", "seed"][int(shares.to_numpy().argmax())]
    latex = in_process(*args, "--format", "latex")
    assert latex.returncode == 0 and latex.stdout.isascii(), latex.stdout
    assert r"$\sigma$$^2$ teacher seed" in latex.stdout and r"2 $\times$ 2, 8" in latex.stdout


def test_methods_table_keeps_teacher_seeds_and_draws_apart(in_process, nested_results: Path) -> None:
    shown = in_process("leaderboard", "--results-dir", str(nested_results), "--format", "csv")
    assert shown.returncode == 0, shown.stderr
    csv = pd.read_csv(io.StringIO(shown.stdout))
    kd = csv[csv["row"] == "kd"]
    assert len(kd) == 4 and set(kd["n"]) == {2}  # a column per teacher seed × draw, each of its 2 seeds
    labels = set(kd["column"])
    assert sum("teacher_seed=1" in c for c in labels) == 2 and sum("data.subset_seed=1" in c for c in labels) == 2
    # ce joins each column of its own draw, paired by seed with the kd runs of that draw.
    assert set(csv.loc[csv["row"] == "ce", "n"]) == {2} and set(kd["n_pairs"]) == {2}


def test_subset_seed_without_a_subset_is_refused_in_one_line(in_process, dirs) -> None:
    done = in_process("run", "--method", "ce", "--student", "cifar_resnet8", "--epochs", "1",
                      "--set", "data.subset_seed=1", "--dry-run")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "data.subset_seed chooses which data.train_fraction subset" in done.stderr
    bad = in_process("run", "--method", "ce", "--student", "cifar_resnet8", "--set", "data.train_fraction=0.1",
                     "--set", "data.subset_seed=-1", "--dry-run")
    assert bad.returncode == 2 and "expected an integer ≥ 0" in bad.stderr
    # The information-matched control's teacher trains on split_seed's draw: another draw would not be the
    # student's subset any more.
    control = in_process("run", "--method", "kd", "--teacher", "cifar_resnet8", "--student", "cifar_resnet8",
                         "--set", "data.train_fraction=0.1", "--set", "teacher_data.train_fraction=0.1",
                         "--set", "data.subset_seed=1", "--dry-run")
    assert control.returncode == 2 and len(control.stderr.strip().splitlines()) == 1
    assert "data.subset_seed moves the student's subset away from the one teacher_data.train_fraction" in control.stderr


def test_a_subset_draw_moves_the_training_subset_and_not_the_test_set() -> None:
    import torch

    from kdbench.execute.build import load_data, teacher_key
    from kdbench.execute.resolve import RunOptions, resolve_config

    def config(*sets: str):  # noqa: ANN202 - a RunConfig
        return resolve_config(RunOptions(method="kd", teacher="cifar_resnet8", student="cifar_resnet8",
                                         sets=["data.image_size=8", "data.train_fraction=0.1", *sets]))

    base, same, other = config(), config("data.subset_seed=0"), config("data.subset_seed=1")
    assert same.run_id == base.run_id and other.run_id != base.run_id  # split_seed's own draw: the same run
    assert teacher_key(other) == teacher_key(base)  # one zoo teacher serves every draw
    a, b = load_data(base, None), load_data(other, None)
    assert torch.equal(a.test.images, b.test.images) and torch.equal(a.test.targets, b.test.targets)
    assert len(a.train) == len(b.train) == 142 and torch.equal(a.train_targets.bincount(), b.train_targets.bincount())
    assert a.train.positions != b.train.positions  # another 142 of the same 1,437 training images
