"""FT (factor transfer): the loss and the paraphraser/translator shapes against RepDistiller's numbers, the factor's
properties, the paraphraser pre-stage (only it trains; then it is frozen), the CLI run and its refusals."""

from __future__ import annotations

import pytest
import torch
from method_cli import one_line_exit_2, reference, tensor
from pre_stage_methods import build, run_two_epochs, step_grads

from kdbench.core.errors import UserError
from kdbench.methods.ft import Paraphraser, factor, ft_loss, translator


@pytest.mark.parametrize("case", reference("ft")["cases"],
                         ids=lambda c: f"{c['student']['shape']}-{c['teacher']['shape']}")
def test_ft_loss_reproduces_repdistillers_factor_transfer(case) -> None:
    student = tensor(case["student"]).requires_grad_(True)
    loss = ft_loss(student, tensor(case["teacher"]))
    assert loss.item() == pytest.approx(case["loss"], rel=1e-5)
    loss.backward()
    torch.testing.assert_close(student.grad.flatten(), torch.tensor(case["student_grads"]), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("sizes", reference("ft")["modules"],
                         ids=lambda m: f"{m['student_channels']}-{m['teacher_channels']}")
def test_paraphraser_and_translator_have_repdistillers_layers(sizes) -> None:
    par = Paraphraser(sizes["teacher_channels"], 0.5)
    tr = translator(sizes["student_channels"], sizes["teacher_channels"], 0.5)
    assert [list(p.shape) for p in par.parameters()] == sizes["paraphraser_parameter_shapes"]
    assert [list(p.shape) for p in tr.parameters()] == sizes["translator_parameter_shapes"]


def test_factor_is_a_unit_vector_blind_to_scale_and_sign_and_the_loss_zero_on_equal_maps() -> None:
    f = torch.randn(3, 5, 4, 4)
    assert factor(f).norm(dim=1).tolist() == pytest.approx([1.0] * 3)
    assert ft_loss(f, f).item() == 0.0
    assert ft_loss(-3 * f, f).item() == pytest.approx(0.0, abs=1e-7)
    assert ft_loss(f, torch.randn(3, 7, 4, 4)).item() > 0


def test_the_pre_stage_trains_the_paraphraser_alone_then_it_is_frozen() -> None:
    ft = build("ft", teacher="cifar_resnet8x4")
    assert step_grads(ft, 1) == {"student": False, "paraphraser": True, "translator": False}
    assert step_grads(ft, 2) == {"student": True, "paraphraser": False, "translator": True}
    assert ft.describe()["pre_stage_epochs"] == [1, 1]
    assert ft.describe()["factor_channels"] == 128  # half the teacher's 256


def test_last_stages_compared_at_1x1_are_refused_the_term_would_be_identically_zero() -> None:
    with pytest.raises(UserError, match=r"ft compares the last stages' factors at 1×1 .*a term identically zero"):
        build("ft", teacher="test_resnet", student="test_resnet")  # stage 4 is 1×1 at 8 px


def test_ft_on_digits_the_paraphraser_stage_then_ce_and_factor_transfer(in_process, dirs) -> None:
    # RepDistiller pre-trains the paraphraser at lr 0.01 beside the student's 0.05: its group's lr_scale.
    record, losses = run_two_epochs(in_process, dirs["results"], "ft", "group.paraphraser.lr_scale=0.2")
    assert [set(epoch) for epoch in losses] == [{"rec", "total"}, {"ce", "ft", "total"}]
    assert record["method_info"]["pre_stage_epochs"] == [1, 1]
    groups = {g["name"]: g for g in record["param_groups"]}
    assert groups["paraphraser"]["lr"] == pytest.approx(0.2 * groups["main"]["lr"])


@pytest.mark.parametrize(("sets", "message"), [
    (["ft.w_ft=-1"], "ft.w_ft=-1 is out of range"),
    (["ft.w_ce=-1"], "ft.w_ce=-1 is out of range"),
    (["ft.w_rec=-1"], "ft.w_rec=-1 is out of range"),
    (["ft.factor_rate=1.5"], "ft.factor_rate=1.5 is out of range"),
    (["ft.init_epochs=0"], "ft.init_epochs=0 is out of range"),
])
def test_bad_values_are_one_line_errors(in_process, dirs, sets, message) -> None:
    done = in_process("run", "--method", "ft", "--teacher", "cifar_resnet8", "--student", "cifar_resnet8", "--epochs",
                      "2", "--set", "data.image_size=8", "--device", "cpu", *[a for s in sets for a in ("--set", s)])
    assert message in one_line_exit_2(done)


def test_a_one_epoch_run_is_refused_before_a_teacher_is_trained(in_process, dirs) -> None:
    done = in_process("run", "--method", "ft", "--teacher", "cifar_resnet8", "--student", "cifar_resnet8", "--epochs",
                      "1", "--set", "data.image_size=8", "--device", "cpu")
    assert one_line_exit_2(done).endswith("ft needs a pre-stage and a training stage: at least 2 epochs, got 1")
