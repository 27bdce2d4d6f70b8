"""The CIFAR-100 recipe is the CRD codebase's (including lr 0.01 for MobileNetV2/ShuffleNet students), sweeps
take explicit teacher:student pairs, and the CRD and CNN2GNN sweep files plan what the papers' tables need."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdbench.core.errors import UserError
from kdbench.data.registry import get_dataset_spec
from kdbench.data.transforms import parse_augment
from kdbench.execute.ladder import LADDER_CNNS
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.models.zoo import is_model, student_lr_scale
from kdbench.report.published import load_published
from kdbench.sweep.grid import Grid, expand
from kdbench.sweep.sweep_file import grid_from_options, parse_pairs, read_sweep_file
from kdbench.train.optim import build_optimizer
from kdbench.train.schedule import lr_factor

REPO = Path(__file__).resolve().parent.parent
CRD_SWEEP = REPO / "slurm" / "sweeps" / "crd-cifar100.yaml"
CNN2GNN_SWEEP = REPO / "slurm" / "sweeps" / "cnn2gnn-cifar100.yaml"
LIGHT = ("cifar_mobilenetv2", "cifar_shufflev1", "cifar_shufflev2")
NOT_LIGHT = ("cifar_resnet8", "cifar_resnet20", "cifar_resnet32", "cifar_resnet8x4", "cifar_resnet32x4",
             "cifar_resnet50", "cifar_wrn_16_2", "cifar_wrn_40_1", "cifar_wrn_40_2", "cifar_vgg8", "cifar_vgg13")
NO_CIFAR_MODELS = "the cifar_ architectures are not registered in this checkout (they come with the CIFAR models)"


def kdbench_cli(*args: object):
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, [str(a) for a in args])


def test_cifar100_recipe_is_the_crd_codebases() -> None:
    import torch

    r = get_dataset_spec("cifar100").recipe
    assert (r.epochs, r.batch_size, r.optimizer, r.momentum, r.nesterov, r.weight_decay) == (240, 64, "sgd", 0.9,
                                                                                              False, 5e-4)
    # lr 0.05, ×0.1 after epochs 150, 180 and 210 (epochs counted from 1, as RepDistiller's adjust_learning_rate).
    # The lr changes per step (here 10 steps an epoch); a multistep epoch runs at one lr from first to last step.
    def lr(epoch: int, step: int) -> float:
        return r.lr * lr_factor(r, (epoch - 1) * 10 + step, 10)

    epochs = (1, 150, 151, 180, 181, 210, 211, 240)
    assert all(lr(e, 0) == lr(e, 9) for e in epochs)
    lrs = {e: lr(e, 0) for e in epochs}
    assert lrs == pytest.approx({1: 0.05, 150: 0.05, 151: 5e-3, 180: 5e-3, 181: 5e-4, 210: 5e-4, 211: 5e-5,
                                 240: 5e-5})
    assert r.warmup_epochs == 0 and r.label_smoothing == 0.0
    spec = parse_augment(r.augment)  # RandomCrop(32, padding=4) + RandomHorizontalFlip
    assert (spec.rrc, spec.pad, spec.flip) == (False, 4, True)
    sgd, _ = build_optimizer(torch.nn.Linear(1, 1), r)
    assert {k: sgd.defaults[k] for k in ("lr", "momentum", "weight_decay", "nesterov")} == {
        "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4, "nesterov": False}


def test_mobilenet_and_shufflenet_students_train_at_lr_001_by_name() -> None:
    base = get_dataset_spec("cifar100").recipe.lr
    for name in LIGHT:
        assert round(base * student_lr_scale(name), 12) == 0.01, name
    for name in NOT_LIGHT:
        assert round(base * student_lr_scale(name), 12) == 0.05, name


@pytest.mark.skipif(not is_model("cifar_mobilenetv2"), reason=NO_CIFAR_MODELS)
def test_resolved_cifar_configs_carry_the_light_student_lr() -> None:
    light = resolve_config(RunOptions(method="kd", teacher="cifar_vgg13", student="cifar_mobilenetv2",
                                      dataset="cifar100"))
    assert light.recipe.lr == 0.01 and light.teacher_recipe.lr == 0.05
    plain = resolve_config(RunOptions(method="kd", teacher="cifar_resnet32x4", student="cifar_resnet8x4",
                                      dataset="cifar100"))
    assert plain.recipe.lr == 0.05


def test_pairs_expand_only_the_listed_pairs_and_students_alone_once() -> None:
    pairs = parse_pairs("resnet34:resnet18, resnet50:resnet18, resnet50:resnet26, resnet10t")
    assert pairs == [("resnet34", "resnet18"), ("resnet50", "resnet18"), ("resnet50", "resnet26"),
                     (None, "resnet10t")]
    grid = Grid(methods=["ce", "kd"], pairs=pairs, seeds=[0, 1], epochs=1, teacher_epochs=1)
    runs = expand(grid)
    kd = {(r.config.teacher, r.config.student, r.config.seed) for r in runs if r.config.method == "kd"}
    assert kd == {(t, s, seed) for t, s in pairs[:3] for seed in (0, 1)}  # not resnet34 → resnet26
    ce = [(r.config.teacher, r.config.student, r.config.seed) for r in runs if r.config.method == "ce"]
    assert sorted(ce) == sorted((None, s, seed) for s in ("resnet18", "resnet26", "resnet10t") for seed in (0, 1))
    assert len({r.teacher.digest for r in runs if r.teacher}) == 2  # zoo teachers resnet34 and resnet50
    # A sweep file stores the grid as JSON; pairs come back as pairs.
    assert Grid.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    assert parse_pairs([["resnet50", "resnet18"], "resnet18"]) == [("resnet50", "resnet18"), (None, "resnet18")]
    with pytest.raises(UserError, match="TEACHER:STUDENT"):
        parse_pairs("resnet50:resnet18:resnet10t")
    with pytest.raises(UserError, match="not both"):
        expand(Grid(methods=["kd"], pairs=pairs, teachers=["resnet50"]))
    with pytest.raises(UserError, match="--pairs"):
        expand(Grid(methods=["kd"], pairs=[(None, "resnet18")]))


def test_crd_sweep_lists_the_pairs_of_crd_tables_1_and_2() -> None:
    grid = grid_from_options(read_sweep_file(CRD_SWEEP))
    published = load_published("crd")
    tables = {t: set(zip(g["teacher"], g["student"], strict=True)) for t, g in published.groupby("table")}
    assert len(tables["Table 1"]) == 7 and len(tables["Table 2"]) == 6
    assert set(grid.pairs) == tables["Table 1"] | tables["Table 2"] and len(grid.pairs) == 13
    assert grid.pairs[:7] == [p for p in grid.pairs if p in tables["Table 1"]]  # Table 1 first
    assert grid.methods == ["ce", "kd", "fitnet", "at", "rkd", "pkt", "crd", "crd+kd", "dkd", "hkd"]
    assert grid.datasets == ["cifar100"] and grid.seeds == [0, 1, 2]
    assert (grid.epochs, grid.teacher_epochs, grid.lr, grid.sets) == (None, None, None, [])  # the recipe's


@pytest.mark.skipif(not is_model("cifar_resnet8x4"), reason=NO_CIFAR_MODELS)
def test_crd_sweep_dry_run_plans_teachers_first_then_378_runs(dirs: dict[str, Path]) -> None:
    result = kdbench_cli("sweep", "--config", CRD_SWEEP, "--dry-run", "--executor", "local", "--results-dir",
                         dirs["results"], "--zoo-dir", dirs["zoo"])
    assert result.exit_code == 0, result.output
    assert result.output.count("│ teacher job ") == 6  # wrn_40_2, resnet56, resnet110, resnet32x4, vgg13, resnet50
    runs = expand(grid_from_options(read_sweep_file(CRD_SWEEP)))
    assert len(runs) == 9 * 13 * 3 + 9 * 3  # 9 distillation methods × 13 pairs + 9 students alone, × 3 seeds
    lrs = {r.config.student: r.config.recipe.lr for r in runs}
    assert {s for s, lr in lrs.items() if lr == 0.01} == set(LIGHT)


def test_cnn2gnn_sweep_plans_the_ladder_and_the_distilled_gnn(dirs: dict[str, Path]) -> None:
    result = kdbench_cli("sweep", "--config", CNN2GNN_SWEEP, "--dry-run", "--executor", "local", "--results-dir",
                         dirs["results"], "--zoo-dir", dirs["zoo"])
    assert result.exit_code == 0, result.output
    assert "resnet152 on cifar100 (crd-cifar100, 240 epochs" in result.output
    assert "dry run: nothing submitted" in result.output and not list(dirs["results"].rglob("*.json"))
    runs = expand(grid_from_options(read_sweep_file(CNN2GNN_SWEEP)))
    points = {(r.config.method, r.config.teacher, r.config.student) for r in runs}
    assert points == {("ce", None, m) for m in (*LADDER_CNNS, "gnn2")} | {("cnn2gnn", "resnet152", "gnn2")}
    assert len(runs) == len(points) * 3 and {r.config.dataset for r in runs} == {"cifar100"}
    gnn_lr = {r.config.recipe.lr for r in runs if r.config.student == "gnn2"}
    assert gnn_lr == {0.01}  # gnn2 declares 0.2 × the recipe's 0.05 (resolve rounds to 12 digits)
