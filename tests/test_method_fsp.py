"""FSP (flow of solution procedure): the loss against RepDistiller's FSP numbers, the FSP matrix's formula, the
pre-stage (the student's feature layers, then CE), the CLI run and its refusals (a pair of unequal widths)."""

from __future__ import annotations

import pytest
import torch
from method_cli import one_line_exit_2, reference, tensor
from pre_stage_methods import build, run_two_epochs, step_grads

from kdbench.core.errors import UserError
from kdbench.methods.fsp import fsp_loss, fsp_matrix


@pytest.mark.parametrize("case", reference("fsp")["cases"], ids=lambda c: str(len(c["student"])))
def test_fsp_loss_reproduces_repdistillers_fsp(case) -> None:
    student = [tensor(e).requires_grad_(True) for e in case["student"]]
    teacher = [tensor(e) for e in case["teacher"]]
    total = fsp_loss(student, teacher)
    assert total.item() == pytest.approx(case["total"], rel=1e-5)
    total.backward()
    for s, expected in zip(student, case["student_grads"], strict=True):
        torch.testing.assert_close(s.grad.flatten(), torch.tensor(expected), rtol=1e-4, atol=1e-7)


def test_fsp_matrix_is_the_mean_over_positions_of_the_channel_products() -> None:
    bottom, top = torch.randn(2, 3, 4, 4), torch.randn(2, 5, 4, 4)
    g = fsp_matrix(bottom, top)
    assert g.shape == (2, 5, 3)
    assert g[1, 4, 2].item() == pytest.approx((top[1, 4] * bottom[1, 2]).mean().item(), rel=1e-5)
    pooled = fsp_matrix(bottom, torch.randn(2, 5, 2, 2))  # the larger map is averaged down to 2×2
    assert pooled.shape == (2, 5, 3)
    maps = [bottom, top]
    assert fsp_loss(maps, maps).item() == 0.0


def test_the_pre_stage_trains_the_students_feature_layers_then_ce() -> None:
    fsp = build("fsp", teacher="cifar_resnet20")  # 16/16/32/64 channels as ResNet-8: a pair FSP takes
    assert fsp.describe()["stages"] == [0, 1, 2, 3]
    assert step_grads(fsp, 1) == {"student": True}
    assert fsp.student.fc.weight.grad is None  # the classifier is not in RepDistiller's init either
    assert step_grads(fsp, 2) == {"student": True}
    assert fsp.student.fc.weight.grad is not None


def test_a_pair_of_unequal_widths_is_refused_naming_the_stage() -> None:
    with pytest.raises(UserError, match="fsp needs the same channel count .* stage 0 has 16 and 32"):
        build("fsp", teacher="cifar_resnet8x4")


def test_fsp_on_digits_the_pre_stage_then_ce_and_the_record_says_which_epochs(in_process, dirs) -> None:
    record, losses = run_two_epochs(in_process, dirs["results"], "fsp")
    assert [set(epoch) for epoch in losses] == [{"fsp", "total"}, {"ce", "total"}]
    assert record["method_info"]["pre_stage_epochs"] == [1, 1]


@pytest.mark.parametrize(("sets", "message"), [
    (["fsp.w_fsp=-1"], "fsp.w_fsp=-1 is out of range"),
    (["fsp.w_ce=-1"], "fsp.w_ce=-1 is out of range"),
    (["fsp.init_epochs=0"], "fsp.init_epochs=0 is out of range"),
    (["fsp.init_epochs=5"], "fsp.init_epochs=5 leaves no training stage in 2 epochs; allowed: [1, 1]"),
])
def test_bad_values_are_one_line_errors(in_process, dirs, sets, message) -> None:
    done = in_process("run", "--method", "fsp", "--teacher", "cifar_resnet8", "--student", "cifar_resnet8", "--epochs",
                      "2", "--set", "data.image_size=8", "--device", "cpu", *[a for s in sets for a in ("--set", s)])
    assert message in one_line_exit_2(done)
