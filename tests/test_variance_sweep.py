"""Issue #38.4's nested sweep as a user writes it: `teacher_seeds` (`--teacher-seeds`) × `--grid
data.subset_seed=…` × seeds, from a sweep file through `kdbench sweep --dry-run --json`, counted before it is
expanded as it expands, chains included; `--teacher-seed` with `--teacher-seeds` is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdbench.core.errors import UserError
from kdbench.sweep.grid import Grid, count_runs, expand

NESTED_FILE = """\
methods: [ce, kd]
teachers: [cifar_resnet8]
students: [cifar_resnet8]
teacher_seeds: 0-2
seeds: [0, 1]
sets: {data.train_fraction: 0.1}
grid: {data.subset_seed: [0, 1, 2]}
"""


def test_a_sweep_file_nests_teacher_seeds_draws_and_seeds(in_process, dirs, tmp_path: Path) -> None:
    path = tmp_path / "nested.yaml"
    path.write_text(NESTED_FILE)
    done = in_process("sweep", "--config", str(path), "--dry-run", "--json", "--executor", "debug")
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    kd = [r for r in plan if r["method"] == "kd"]
    ce = [r for r in plan if r["method"] == "ce"]
    assert len(kd) == 18 and len(ce) == 6  # 3 teachers × 3 draws × 2 seeds; ce: 3 draws × 2 seeds
    assert sorted(r["teacher_seed"] for r in kd) == [0] * 6 + [1] * 6 + [2] * 6
    assert len({r["run_id"] for r in plan}) == 24


def test_the_count_is_the_expansion_with_teacher_seeds_and_chains() -> None:
    grid = Grid(methods=["ce", "kd"], teachers=["resnet18"], students=["resnet10t"], teacher_seeds=[0, 1],
                chains=[["resnet34", "resnet18", "resnet10t"]], seeds=[0, 1],
                sets=["data.train_fraction=0.1"], grid={"data.subset_seed": ["0", "1"]})
    runs = expand(grid)
    assert count_runs(grid) == len(runs) == 2 * 2 + 2 * 2 * 2 * (1 + 2)
    assert {r.teacher.seed for r in runs if r.teacher is not None} == {0, 1}


def test_one_teacher_seed_and_a_list_of_them_are_refused_together(in_process, dirs) -> None:
    with pytest.raises(UserError, match="--teacher-seed or --teacher-seeds"):
        expand(Grid(methods=["kd"], teachers=["resnet18"], teacher_seed=1, teacher_seeds=[0, 1]))
    done = in_process("sweep", "--methods", "kd", "--teachers", "cifar_resnet8", "--teacher-seed", "1",
                      "--teacher-seeds", "0,1", "--dry-run", "--executor", "debug")
    assert done.returncode == 2 and "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
