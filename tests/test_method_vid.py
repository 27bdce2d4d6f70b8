"""VID (variational information distillation): the loss and its regressor against numbers from RepDistiller's own
VID.py (its initial variance parameters too), the Gaussian NLL's properties, the stage pairing, a CLI run on
digits with the regressors' own parameter group, and the one-line refusals."""

from __future__ import annotations

import math

import pytest
import torch
from method_cli import one_line_exit_2, reference, run_on_digits, tensor

from kdbench.core.errors import UserError
from kdbench.methods.vid import VIDParams, VIDRegressor, vid_loss
from kdbench.models import create_model
from kdbench.train.method import MethodContext, get_method


def test_vid_regressor_and_loss_match_the_reference_code():
    ref = reference("vid")
    inputs = ref["inputs"]
    reg = VIDRegressor(3, 4, init_pred_var=5.0, eps=1e-5)
    assert reg.log_scale.tolist() == ref["init_log_scale"]  # α₀ = log(exp(5 − 1e-5) − 1), bit for bit
    convs = [m for m in reg.mean if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for conv, weight in zip(convs, inputs["regressor_weights"], strict=True):
            conv.weight.copy_(tensor(weight))
        student, teacher = tensor(inputs["input"]), tensor(inputs["target"])  # 4×4 pooled to the teacher's 2×2
        assert reg(student, teacher).item() == pytest.approx(ref["output_at_init_log_scale"], rel=1e-5)
        reg.log_scale.copy_(torch.tensor(inputs["log_scale"]))
        assert reg(student, teacher).item() == pytest.approx(ref["output"], rel=1e-5)


def test_vid_loss_is_the_gaussian_nll_without_its_constant():
    t = torch.randn(2, 3, 2, 2)
    alpha = torch.tensor([0.0, 1.0, -1.0])
    var = torch.log1p(torch.exp(alpha)) + 1e-5
    # A perfect mean leaves ½ log σ² per element; an error e adds ½ e² / σ².
    assert vid_loss(t, t, alpha, 1e-5).item() == pytest.approx(0.5 * var.log().mean().item(), rel=1e-5)
    shifted = vid_loss(t + 2.0, t, alpha, 1e-5).item()
    assert shifted == pytest.approx((0.5 * (4.0 / var + var.log())).mean().item(), rel=1e-5)
    mean = t.clone().requires_grad_(True)
    target = torch.randn(2, 3, 2, 2, requires_grad=True)
    a = alpha.clone().requires_grad_(True)
    vid_loss(mean, target, a, 1e-5).backward()
    assert a.grad is not None and mean.grad is not None and target.grad is None


def _vid(student: str, teacher: str, params: VIDParams = VIDParams(), size: int = 16):
    ctx = MethodContext(10, 3, size, 8, torch.zeros(8, dtype=torch.long), 1, 0)
    return get_method("vid").cls(create_model(student, num_classes=10, image_size=size),
                                 create_model(teacher, num_classes=10, image_size=size), params, ctx)


def test_stages_pair_from_the_first_after_the_stem_and_regressors_form_their_group():
    vid = _vid("cifar_resnet8", "resnet18")  # 4 stages against 5: zip stops at the student's last
    assert vid.pairs == [(1, 1), (2, 2), (3, 3)]
    assert [r.log_scale.numel() for r in vid.regressors] == [64, 128, 256]  # the teacher's channels
    start = torch.nn.functional.softplus(vid.regressors[0].log_scale.detach()) + 1e-5
    assert all(math.isclose(v, 5.0, rel_tol=1e-6) for v in start.tolist())  # σ² starts at init_pred_var
    groups = {g.name: g.params for g in vid.param_groups()}
    assert {id(p) for p in groups["regressor"]} == {id(p) for p in vid.regressors.parameters()}


def test_vid_runs_from_the_cli(dirs, in_process):
    record, losses = run_on_digits(in_process, dirs["results"], "vid", "group.regressor.lr_scale=0.5")
    assert record["method_info"] == {"stage_pairs": [[1, 1], [2, 2], [3, 3]]}
    assert set(losses) == {"ce", "vid", "total"}
    groups = {g["name"]: g for g in record["param_groups"]}
    assert groups["regressor"]["lr"] == 0.5 * groups["main"]["lr"]


@pytest.mark.parametrize(("setting", "message"), [
    ("vid.w_vid=-1", "vid.w_vid=-1 is out of range; allowed: [0, inf)"),
    ("vid.eps=0", "vid.eps=0 is out of range; allowed: (0, 1]"),
    ("vid.init_pred_var=0", "vid.init_pred_var=0 is out of range; allowed: (0, 10000]"),
    ("vid.init_pred_var=1e-6", "vid.init_pred_var=1e-06 is out of range; allowed: values above vid.eps=1e-05"),
])
def test_an_out_of_range_setting_is_one_line(dirs, in_process, setting, message):
    done = in_process("run", "--method", "vid", "--teacher", "cifar_resnet8", "--set", setting)
    assert message in one_line_exit_2(done)


def test_a_student_without_spatial_maps_is_refused_in_one_line():
    with pytest.raises(UserError, match="vid compares spatial feature maps stage by stage") as err:
        _vid("gnn2", "resnet18")
    assert "\n" not in str(err.value) and "sp or cc" in str(err.value)
