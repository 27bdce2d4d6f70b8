"""The next regeneration's sweep files (issues #35.5, #36, #38.4–5): every registered method has its runs in the
embedded-hard records (on the benchmark's pair, or on a pair of its own that a sweep file names and explains), the
weight sweeps and the nested teacher × subset design plan what docs/benchmark.md says, and results/regenerate.sh
runs every one of those files."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from kdbench.sweep.grid import expand
from kdbench.sweep.sweep_file import grid_from_options, read_sweep_file
from kdbench.train.method import list_methods

REPO = Path(__file__).resolve().parent.parent
SWEEPS = REPO / "slurm" / "sweeps"
REGENERATE = REPO / "results" / "regenerate.sh"
# The embedded-hard files whose runs make up the CNN student's table, each on its own pair.
HARD_FILES = ("embedded-hard.yaml", "embedded-hard-cifar-pair.yaml")
# CNN2GNN distils into its GNN student: its embedded-hard runs are the graph study's.
GNN_FILES = ("cnn2gnn-graph-ablation.yaml",)


def _methods(name: str) -> set[str]:
    return set(grid_from_options(read_sweep_file(SWEEPS / name)).methods)


def _plan(in_process, *args: str) -> list[dict]:
    done = in_process("sweep", *args, "--dry-run", "--executor", "local", "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_every_registered_method_has_embedded_hard_runs() -> None:
    planned = set().union(*(_methods(f) for f in (*HARD_FILES, *GNN_FILES)))
    assert planned == set(list_methods())


def test_every_method_is_in_the_digits_sweep_but_those_a_file_says_cannot_take_its_pair() -> None:
    # ft compares the last stages' factors, 1×1 for ResNet-18 at 16 px (a term identically zero: ft refuses the
    # pair); its digits-free row is on the CIFAR pair of embedded-hard-cifar-pair.yaml, whose header says so.
    missing = set(list_methods()) - _methods("embedded.yaml")
    assert missing == {"ft"}
    assert "ft" in _methods("embedded-hard-cifar-pair.yaml")
    assert "ft" in (SWEEPS / "embedded.yaml").read_text().split("# Not here:")[1]


def test_the_cifar_pair_runs_the_methods_the_resnet18_pair_refuses_beside_kd_and_its_own_teacher() -> None:
    runs = expand(grid_from_options(read_sweep_file(SWEEPS / "embedded-hard-cifar-pair.yaml")))
    assert {(r.config.teacher, r.config.student) for r in runs if r.config.teacher} == {
        ("cifar_resnet56", "cifar_resnet8")}
    assert {r.config.method for r in runs} == {"ce", "kd", "ft", "fsp", "kdsvd"}
    # 5 methods × 5 seeds, and ft's and fsp's weight sweeps: 3 values below each published weight × 5 seeds.
    assert {r.config.recipe.name for r in runs} == {"embedded-hard-v2"} and len(runs) == 5 * 5 + 2 * 3 * 5


def test_the_weight_sweeps_plan_each_weight_five_times_through_the_cli(dirs, in_process) -> None:
    plan = _plan(in_process, "--config", str(SWEEPS / "embedded-hard-weights.yaml"))
    weights = {"at": "w_at", "fitnet": "w_feat", "crd": "w_crd", "ab": "w_ab", "nst": "w_nst", "ofd": "w_feat"}
    seen: dict[str, set[float]] = {m: set() for m in weights}
    for run in plan:
        seen[run["method"]].add(run["method_params"][weights[run["method"]]])
    # each method's published weight (the embedded-hard row) and the values below it
    assert seen == {"at": {1000, 250, 62.5, 15.625, 3.90625}, "fitnet": {100, 30, 10, 3, 1},
                    "crd": {0.8, 0.4, 0.2, 0.1}, "ab": {1, 0.25, 0.0625, 0.015625}, "nst": {50, 12.5, 3.125, 0.78125},
                    "ofd": {0.001, 0.00025, 6.25e-5, 1.5625e-5}}
    assert len(plan) == 26 * 5 and {r["seed"] for r in plan} == set(range(5))


def test_the_heterogeneous_column_is_every_method_the_vit_teacher_can_give(dirs, in_process) -> None:
    plan = _plan(in_process, "--config", str(SWEEPS / "embedded-hard-vit.yaml"))
    assert {r["teacher"] for r in plan if r["teacher"]} == {"deit_tiny_patch16_224"}
    assert {r["student"] for r in plan} == {"cifar_resnet8"} and {r["seed"] for r in plan} == set(range(5))
    # every method of the CNN pair's table, but those the file's header says a ViT teacher cannot give
    text = (SWEEPS / "embedded-hard-vit.yaml").read_text()
    refused = set(re.findall(r"^#   (\S+) +refuses", text, flags=re.M))
    assert {r["method"] for r in plan} | refused == set().union(*(_methods(f) for f in HARD_FILES))


def test_the_nested_design_is_three_teachers_by_three_draws_by_three_seeds(dirs, in_process) -> None:
    from kdbench.data import subset

    if not hasattr(subset, "subset_seed_of"):
        pytest.skip("data.subset_seed comes with issue #38.4's variance branch (merged before this one)")
    runs = {}
    for teacher_seed in (0, 1, 2):
        for run in _plan(in_process, "--config", str(SWEEPS / "embedded-hard-nested.yaml"), "--teacher-seed",
                         str(teacher_seed), "--grid", "data.subset_seed=0,1,2"):
            runs[run["run_id"]] = run
    distilled = [r for r in runs.values() if r["teacher"]]
    assert len(distilled) == 4 * 3 * 3 * 3 and len(runs) - len(distilled) == 3 * 3  # ce: no teacher seed


def test_regenerate_runs_every_embedded_sweep_file_and_parses() -> None:
    script = REGENERATE.read_text()
    for sweep in sorted(SWEEPS.glob("embedded*.yaml")):
        assert sweep.stem in script, f"results/regenerate.sh does not run {sweep.name}"
    assert subprocess.run(["bash", "-n", str(REGENERATE)], capture_output=True).returncode == 0
