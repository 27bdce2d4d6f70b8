"""Per-module parameter groups: a method names groups of its own modules (FitNet's regressor, CRD's embedding
heads); `--set group.NAME.lr_scale=` / `.weight_decay=` give them their own lr and weight decay, which the run id
holds and the record lists; without such a setting the optimizer is the single group it always was."""

from __future__ import annotations

import json
from dataclasses import replace as dataclass_replace

import pytest
import torch

from kdbench.core.errors import UserError
from kdbench.execute.api import run
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.models import create_model
from kdbench.spec.recipe import Recipe
from kdbench.train.method import MethodContext, get_method
from kdbench.train.optim import build_optimizer
from kdbench.train.schedule import build_scheduler

RECIPE = Recipe(name="t", epochs=2, batch_size=8, lr=0.1, weight_decay=5e-4, schedule="cosine", warmup_epochs=1)
SETS = ["data.image_size=8", "recipe.batch_size=256", "recipe.eval_batch_size=512", "teacher_recipe.batch_size=256"]


def _fitnet():
    ctx = MethodContext(num_classes=10, in_chans=3, image_size=8, num_train=10, train_targets=torch.zeros(10),
                        epochs=2, seed=0)
    torch.manual_seed(0)
    student, teacher = (create_model("test_resnet", num_classes=10, in_chans=3, image_size=8) for _ in range(2))
    spec = get_method("fitnet")
    return spec.cls(student, teacher, spec.params, ctx)


def test_without_group_settings_the_optimizer_is_one_group_in_model_order():
    model = _fitnet()
    optimizer, described = build_optimizer(model, RECIPE)
    (group,) = optimizer.param_groups
    assert group["params"] == list(model.trainable_parameters())
    assert (group["lr"], group["weight_decay"]) == (0.1, 5e-4)
    assert described == [{"name": "main", "params": sum(p.numel() for p in model.trainable_parameters()),
                          "lr": 0.1, "weight_decay": 5e-4}]


def test_a_groups_lr_scale_and_weight_decay_follow_the_schedule():
    model = _fitnet()
    optimizer, described = build_optimizer(model, RECIPE, {"regressor": {"lr_scale": 10.0, "weight_decay": 0.0}})
    names = [g["name"] for g in optimizer.param_groups]
    assert names == ["main", "regressor"]
    regressor = optimizer.param_groups[1]
    assert {id(p) for p in regressor["params"]} == {id(p) for p in model.regressor.parameters()}
    assert described[1] == {"name": "regressor", "params": sum(p.numel() for p in model.regressor.parameters()),
                            "lr": pytest.approx(1.0), "weight_decay": 0.0}
    scheduler = build_scheduler(optimizer, RECIPE, steps_per_epoch=4)
    for _ in range(6):  # through the warm-up and into the cosine: the ratio holds at every step
        main, reg = (g["lr"] for g in optimizer.param_groups)
        assert reg == pytest.approx(10 * main) and main > 0
        optimizer.step()
        scheduler.step()


def test_group_settings_are_checked_and_hashed():
    plain = resolve_config(RunOptions("fitnet", teacher="resnet18", sets=["data.image_size=8"]))
    scaled = resolve_config(RunOptions("fitnet", teacher="resnet18",
                                       sets=["data.image_size=8", "group.regressor.lr_scale=0.1"]))
    assert "param_groups" not in plain.to_dict()  # run ids of runs without group settings are unchanged
    assert scaled.param_groups == {"regressor": {"lr_scale": 0.1}} and scaled.run_id != plain.run_id
    for sets, message in ((["group.embed.lr_scale=2"], "has no parameter group 'embed'. Valid: regressor"),
                          (["group.regressor.momentum=0"], "unknown key 'momentum'"),
                          (["group.regressor.lr_scale=0"], "out of range"),
                          (["group.regressor.weight_decay=nan"], "out of range")):
        with pytest.raises(UserError, match=message):
            resolve_config(RunOptions("fitnet", teacher="resnet18", sets=sets))
    with pytest.raises(UserError, match="unknown --set scope 'group'"):  # kd has no module of its own
        resolve_config(RunOptions("kd", teacher="resnet18", sets=["group.regressor.lr_scale=2"]))


def test_a_run_records_its_groups_and_a_group_setting_changes_its_numbers(tmp_path):
    kw = {"student": "test_resnet", "epochs": 1, "teacher_epochs": 1, "device": "cpu", "infer_batch_size": 8,
          "results_dir": tmp_path / "results", "zoo_dir": tmp_path / "zoo"}
    plain = run("fitnet", "test_resnet", sets=SETS, **kw)
    scaled = run("fitnet", "test_resnet", sets=[*SETS, "group.regressor.lr_scale=10",
                                                "group.regressor.weight_decay=0"], **kw)
    assert [g["name"] for g in plain["param_groups"]] == ["main"]
    main, regressor = scaled["param_groups"]
    assert (main["name"], regressor["name"]) == ("main", "regressor")
    assert regressor["lr"] == pytest.approx(10 * main["lr"]) and regressor["weight_decay"] == 0.0
    assert main["params"] + regressor["params"] == plain["param_groups"][0]["params"]
    lines = [json.loads((tmp_path / "results" / "runs" / r["run_id"] / "metrics.jsonl").read_text())
             for r in (plain, scaled)]
    assert lines[0]["lr"] == lines[1]["lr"]  # the main group (the student) keeps the recipe's lr
    assert lines[0]["losses"] != lines[1]["losses"]


@pytest.mark.parametrize("method", sorted(m for m in ("fitnet", "crd", "crd+kd", "hkd", "hkd+kd", "cnn2gnn", "ofa")))
def test_each_declared_group_holds_its_modules_parameters(method):
    spec = get_method(method)
    assert spec.cls.param_group_modules, f"{method} declares no parameter group"
    ctx = MethodContext(num_classes=10, in_chans=3, image_size=8, num_train=64,
                        train_targets=torch.arange(64) % 10, epochs=2, seed=0)
    student = "gnn2" if method == "cnn2gnn" else "test_resnet"
    model = spec.cls(create_model(student, num_classes=10, in_chans=3, image_size=8),
                     create_model("test_resnet", num_classes=10, in_chans=3, image_size=8),
                     dataclass_replace(spec.params, nce_k=16) if hasattr(spec.params, "nce_k") else spec.params, ctx)
    for name, path in spec.cls.param_group_modules.items():
        optimizer, _ = build_optimizer(model, RECIPE, {name: {"lr_scale": 2.0}})
        group = next(g for g in optimizer.param_groups if g["name"] == name)
        own = [p for p in model.get_submodule(path).parameters() if p.requires_grad]
        assert own and [id(p) for p in group["params"]] == [id(p) for p in own]
        assert group["lr"] == pytest.approx(2 * RECIPE.lr)


def test_a_plain_module_trains_its_trainable_parameters_as_one_group():
    # The one builder serves a module that is not a Distiller too (a bare loop: benchmarks/engine_overhead.py).
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    module[0].bias.requires_grad_(False)
    optimizer, described = build_optimizer(module, RECIPE)
    (group,) = optimizer.param_groups
    assert group["params"] == [module[0].weight, module[1].weight, module[1].bias]
    assert described == [{"name": "main", "params": 12 + 8 + 2, "lr": 0.1, "weight_decay": 5e-4}]
