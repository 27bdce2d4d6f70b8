"""CTKD: the learned temperature, its gradient through the reversal layer and the cosine curriculum against the
authors' code (fixture); the curriculum as a function of the epoch (exact resume), its length rescaled with
--epochs, the temperature module's own parameter group, the instance-wise mode, and one CLI run on digits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.methods.ctkd import (
    CTKDParams,
    GlobalTemperature,
    InstanceTemperature,
    ctkd_kd_loss,
    curriculum_lambda,
    reverse_gradient,
)
from kdbench.methods.kd import kd_loss
from kdbench.models import create_model
from kdbench.train.method import Batch, MethodContext, get_method

FIXTURE = json.loads((Path(__file__).parent / "fixtures/reference_losses/ctkd.json").read_text())


def _inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    i = FIXTURE["inputs"]
    return torch.tensor(i["student_logits"]), torch.tensor(i["teacher_logits"]), torch.tensor(i["labels"])


@pytest.mark.parametrize("case", FIXTURE["cases"], ids=lambda c: f"epoch{c['epoch']}")
def test_global_temperature_loss_and_gradients_reproduce_the_reference_code(case):
    zs, zt, y = _inputs()
    p = CTKDParams()
    lam = curriculum_lambda(case["epoch"], p.lambda_max, 10)
    assert lam == pytest.approx(-case["cos_value"], abs=1e-12)
    module = GlobalTemperature(p.temperature_min, p.temperature_span)
    s = zs.clone().requires_grad_(True)
    temperature = module(s, zt, lam)
    kd = ctkd_kd_loss(s, zt, temperature)
    total = p.w_ce * F.cross_entropy(s, y) + p.w_kd * kd
    total.backward()
    assert temperature.item() == pytest.approx(case["temperature"], rel=1e-6)
    assert kd.item() == pytest.approx(case["kd_loss"], rel=1e-5)
    assert total.item() == pytest.approx(case["total_loss"], rel=1e-5)
    assert module.theta.grad.item() == pytest.approx(case["grad_global_T"], rel=1e-3)
    assert torch.allclose(s.grad, torch.tensor(case["grad_student_logits"]), atol=1e-6)


def test_the_curriculum_is_the_references_cosine_decay():
    for epoch, cos_value in FIXTURE["curriculum_cos_value"].items():
        assert curriculum_lambda(int(epoch), 1.0, 10) == pytest.approx(-cos_value, abs=1e-12)
    assert curriculum_lambda(1, 0.5, 0) == 0.5  # no ramp: full strength from the first epoch


def test_the_reversal_layer_is_the_identity_forward_and_flips_the_gradient_by_lambda():
    x = torch.tensor([1.5, -2.0], requires_grad=True)
    out = reverse_gradient(x, 0.3)
    assert torch.equal(out, x.detach())
    (out * torch.tensor([2.0, 5.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.6, -1.5]))


def test_a_step_on_the_temperature_raises_the_kd_loss_it_is_adversarial():
    zs, zt, _ = _inputs()
    module = GlobalTemperature(1.0, 20.0)
    before = ctkd_kd_loss(zs, zt, module(zs, zt, 1.0))
    before.backward()
    with torch.no_grad():
        module.theta -= 10.0 * module.theta.grad  # one descent step, as the engine's optimizer takes it
    assert ctkd_kd_loss(zs, zt, module(zs, zt, 1.0)).item() > before.item()
    assert 1.0 < module(zs, zt, 1.0).item() < 21.0


def test_the_kd_term_with_one_temperature_per_sample_is_the_mean_of_per_sample_kd():
    zs, zt, _ = _inputs()
    temps = torch.tensor([1.0, 2.0, 4.0, 8.0, 3.0, 15.0])
    want = sum(kd_loss(zs[i:i + 1], zt[i:i + 1], temps[i].item()) for i in range(6)) / 6
    assert ctkd_kd_loss(zs, zt, temps).item() == pytest.approx(want.item(), rel=1e-5)
    assert ctkd_kd_loss(zs, zt, torch.tensor([4.0])).item() == pytest.approx(kd_loss(zs, zt, 4.0).item(), rel=1e-6)
    instance = InstanceTemperature(5, 1.0, 20.0)
    per_sample = instance(zs.requires_grad_(True), zt, 1.0)
    assert per_sample.shape == (6,) and bool(((per_sample > 1.0) & (per_sample < 21.0)).all())
    per_sample.sum().backward()
    assert zs.grad is None  # the MLP sees detached logits: the student is not an adversary through it


def _distiller(params: CTKDParams, epochs: int = 30):
    torch.manual_seed(0)
    ctx = MethodContext(10, 3, 16, 20, torch.arange(20) % 10, epochs=epochs, seed=0)
    student, teacher = (create_model("test_resnet", num_classes=10, image_size=16) for _ in range(2))
    return get_method("ctkd").cls(student, teacher, params, ctx).train()


def test_lambda_is_a_function_of_the_epoch_so_a_resumed_run_takes_the_same_path():
    d = _distiller(CTKDParams(lambda_epochs=10))
    batch = Batch(torch.randn(4, 3, 16, 16), torch.tensor([0, 1, 2, 3]), torch.arange(4))
    grads = {}
    for epoch in (1, 4, 12):
        d.on_epoch_start(epoch)
        d.zero_grad()
        d.forward_train(batch)[1]["kd"].backward()
        grads[epoch] = d.temperature.theta.grad.item()
    ratio = grads[4] / grads[12]
    assert ratio == pytest.approx(curriculum_lambda(4, 1.0, 10), rel=1e-4)  # the same loss, λ times the gradient
    resumed = _distiller(CTKDParams(lambda_epochs=10))
    resumed.load_state_dict(d.state_dict())  # θ is a parameter: in the checkpoint
    resumed.on_epoch_start(4)
    resumed.forward_train(batch)[1]["kd"].backward()
    assert resumed.temperature.theta.grad.item() == pytest.approx(grads[4], rel=1e-6)


def test_the_temperature_module_is_its_own_parameter_group():
    d = _distiller(CTKDParams())
    groups = {g.name: g.params for g in d.param_groups()}
    assert [id(p) for p in groups["temperature"]] == [id(d.temperature.theta)]
    assert all(id(p) != id(d.temperature.theta) for p in groups["main"])


def test_the_curriculum_length_follows_the_runs_epochs_into_the_config():
    def resolved(epochs: int, *sets: str):
        return resolve_config(RunOptions(method="ctkd", teacher="resnet34", student="resnet18", epochs=epochs,
                                         sets=list(sets)))

    assert {e: resolved(e).method_params["lambda_epochs"] for e in (240, 24, 40, 1)} == {240: 10, 24: 1, 40: 2, 1: 0}
    stated = resolved(40, "ctkd.lambda_epochs=10")
    assert stated.method_params["lambda_epochs"] == 10 and stated.run_id != resolved(40).run_id
    assert _distiller(CTKDParams(), epochs=40).lambda_epochs == 2  # unresolved defaults rescale the same way


def test_ctkd_runs_from_the_cli_on_digits(dirs, in_process):
    result = in_process("run", "--method", "ctkd", "--teacher", "test_resnet", "--student", "test_resnet",
                        "--epochs", "1", "--teacher-epochs", "1", "--set", "data.image_size=8", "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "completed"
    info = record["method_info"]
    assert (info["lambda_epochs"], info["temperature_mode"]) == (0, "global")
    # The learned temperature left its start, 1 + 20 · sigmoid(1) = 15.62, and stayed in (1, 21).
    assert 1.0 < info["temperature_learned"] < 21.0 and info["temperature_learned"] != pytest.approx(15.6212, abs=1e-4)
    epoch = json.loads((dirs["results"] / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()[0])
    assert set(epoch["losses"]) == {"ce", "kd", "total"}


def test_a_bad_temperature_mode_names_the_valid_ones_from_the_cli(dirs, in_process):
    result = in_process("run", "--method", "ctkd", "--teacher", "test_resnet", "--set", "ctkd.temperature_mode=mlp")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["error: unknown ctkd.temperature_mode 'mlp'. Valid: global, instance"]
