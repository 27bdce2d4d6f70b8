"""DIST: the loss against the authors' code (fixture), the Pearson relations' properties, the logit-standardization
switch, and one CLI run on the digits default."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.methods._logit_standardization import standardize_logits
from kdbench.methods.dist import DISTParams, dist_relations, pearson_rows
from kdbench.models import create_model
from kdbench.train.method import Batch, MethodContext, get_method

FIXTURE = json.loads((Path(__file__).parent / "fixtures/reference_losses/dist.json").read_text())


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"tau{c['tau']}-b{c['beta']}-g{c['gamma']}")
def test_dist_reproduces_the_reference_code(case):
    zs, zt = (torch.tensor(FIXTURE["inputs"][k]) for k in ("student_logits", "teacher_logits"))
    inter, intra = dist_relations(zs, zt, case["tau"])
    t2 = case["tau"] ** 2
    assert inter.item() == pytest.approx(t2 * case["inter_class_relation"], rel=1e-5)
    assert intra.item() == pytest.approx(t2 * case["intra_class_relation"], rel=1e-5)
    assert (case["beta"] * inter + case["gamma"] * intra).item() == pytest.approx(case["loss"], rel=1e-5)


def test_relations_are_zero_for_identical_logits_and_pearson_ignores_affine_maps():
    torch.manual_seed(0)
    z = 3 * torch.randn(8, 10)
    inter, intra = dist_relations(z, z, 4.0)
    assert (inter.item(), intra.item()) == (pytest.approx(0.0, abs=1e-4), pytest.approx(0.0, abs=1e-4))  # τ² × float32
    a, b = torch.rand(4, 6), torch.rand(4, 6)
    assert torch.allclose(pearson_rows(2.5 * a + 0.3, b), pearson_rows(a, b), atol=1e-5)  # relations, not values
    assert torch.allclose(pearson_rows(a, -a), -torch.ones(4), atol=1e-5)
    # A batch of one: the intra-class columns are constant (no relation to match), finite, not NaN.
    assert torch.isfinite(torch.stack(dist_relations(torch.randn(1, 5), torch.randn(1, 5), 4.0))).all()


def test_forward_weights_each_relation_and_the_switch_standardizes_both_models():
    torch.manual_seed(0)
    ctx = MethodContext(10, 3, 16, 20, torch.arange(20) % 10, epochs=1, seed=0)
    student, teacher = (create_model("test_resnet", num_classes=10, image_size=16) for _ in range(2))
    batch = Batch(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]), torch.arange(4))
    for std in (False, True):
        params = DISTParams(w_inter=3.0, w_intra=0.5, temperature=2.0, logit_std=std)
        d = get_method("dist").cls(student, teacher, params, ctx).train()
        logits, losses = d.forward_train(batch)
        zs, zt = logits.detach(), d.teacher_logits(batch.images)
        if std:
            zs, zt = standardize_logits(zs), standardize_logits(zt)
        inter, intra = dist_relations(zs, zt, 2.0)
        assert losses["inter"].item() == pytest.approx(3.0 * inter.item(), rel=1e-5)
        assert losses["intra"].item() == pytest.approx(0.5 * intra.item(), rel=1e-5)


def test_logit_std_is_in_the_run_id_when_on():
    ids = {s: resolve_config(RunOptions(method="dist", teacher="resnet34", student="resnet18",
                                        sets=[f"dist.logit_std={s}"] if s else [])).run_id for s in ("", "true")}
    assert ids[""] != ids["true"]
    assert resolve_config(RunOptions(method="dist", teacher="resnet34", student="resnet18",
                                     sets=["dist.logit_std=false"])).run_id == ids[""]


def test_dist_runs_from_the_cli_on_digits(dirs, in_process):
    result = in_process("run", "--method", "dist", "--teacher", "test_resnet", "--student", "test_resnet",
                        "--epochs", "1", "--teacher-epochs", "1", "--set", "data.image_size=8", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "completed"
    epoch = json.loads((dirs["results"] / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()[0])
    assert set(epoch["losses"]) == {"ce", "inter", "intra", "total"}


def test_a_bad_weight_is_one_line_from_the_cli(dirs, in_process):
    result = in_process("run", "--method", "dist", "--teacher", "test_resnet", "--set", "dist.w_intra=-1")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: dist.w_intra=-1 is out of range; allowed: [0, inf)"]
