"""AB (activation boundaries): the loss against RepDistiller's ABLoss numbers, the alternative-L2 properties, the
pre-stage (which modules it trains, its length rescaled with --epochs, the record), the CLI run and its refusals."""

from __future__ import annotations

import pytest
import torch
from method_cli import one_line_exit_2, reference, tensor
from pre_stage_methods import build, run_two_epochs, step_grads

from kdbench.core.errors import UserError
from kdbench.methods.ab import ABParams, ab_loss, ab_stage_weights, ab_total_loss


@pytest.mark.parametrize("case", reference("ab")["cases"], ids=lambda c: f"margin={c['margin']}")
def test_ab_loss_reproduces_repdistillers_abloss(case) -> None:
    student = [tensor(e).requires_grad_(True) for e in case["student"]]
    teacher = [tensor(e) for e in case["teacher"]]
    total = ab_total_loss(student, teacher, case["margin"])
    assert total.item() == pytest.approx(case["total"], rel=1e-5)
    weights = ab_stage_weights(len(student))
    for w, s, t, expected in zip(weights, student, teacher, case["per_stage"], strict=True):
        assert (3 / 1000 * w * ab_loss(s, t, case["margin"])).item() == pytest.approx(expected, rel=1e-5)
    total.backward()
    for s, expected in zip(student, case["student_grads"], strict=True):
        torch.testing.assert_close(s.grad.flatten(), torch.tensor(expected), rtol=1e-5, atol=1e-7)


def test_ab_loss_is_zero_beyond_the_margin_on_the_teachers_side_and_quadratic_inside() -> None:
    t = torch.tensor([[-1.0, 2.0, 0.0, 3.0]]).reshape(1, 4, 1, 1)
    right = torch.tensor([[-1.5, 1.0, -1.0, 4.0]]).reshape(1, 4, 1, 1)  # s ≤ −m where t ≤ 0, s ≥ m where t > 0
    assert ab_loss(right, t).item() == 0.0
    wrong = torch.tensor([[0.5, -0.5, 0.0, 0.0]]).reshape(1, 4, 1, 1)
    # (0.5 + 1)² + (−0.5 − 1)² + (0 + 1)² + (0 − 1)², over a batch of one
    assert ab_loss(wrong, t).item() == pytest.approx(1.5**2 + 1.5**2 + 1 + 1)
    assert ab_stage_weights(3) == [0.25, 0.5, 1.0]


def test_the_pre_stage_trains_connectors_and_student_features_then_ce_trains_the_student() -> None:
    ab = build("ab", teacher="cifar_resnet8x4")  # 16 vs 64 channels: every stage needs a connector
    assert ab.describe()["connectors"] == ["HintRegressor"] * 3
    assert step_grads(ab, 1) == {"student": True, "connectors": True}
    assert ab.student.fc.weight.grad is None  # the classifier is not in RepDistiller's init either
    assert step_grads(ab, 2) == {"student": True, "connectors": False}


def test_init_epochs_follow_the_runs_epochs_and_an_explicit_value_is_kept() -> None:
    assert build("ab", epochs=240).init_epochs == 30
    assert build("ab", epochs=40).init_epochs == 5
    assert build("ab", epochs=40, init_epochs=3).init_epochs == 3


def test_ab_on_digits_the_pre_stage_then_ce_and_the_record_says_which_epochs(in_process, dirs) -> None:
    record, losses = run_two_epochs(in_process, dirs["results"], "ab")
    assert [set(epoch) for epoch in losses] == [{"ab", "total"}, {"ce", "total"}]
    assert record["method_info"]["pre_stage_epochs"] == [1, 1]
    assert record["config"]["method_params"]["init_epochs"] == 1


@pytest.mark.parametrize(("sets", "message"), [
    (["ab.w_ab=-1"], "ab.w_ab=-1 is out of range"),
    (["ab.w_ce=-1"], "ab.w_ce=-1 is out of range"),
    (["ab.margin=0"], "ab.margin=0 is out of range"),
    (["ab.init_epochs=0"], "ab.init_epochs=0 is out of range"),
    (["ab.init_epochs=2"], "ab.init_epochs=2 leaves no training stage in 2 epochs; allowed: [1, 1]"),
])
def test_bad_values_are_one_line_errors(in_process, dirs, sets, message) -> None:
    done = in_process("run", "--method", "ab", "--teacher", "cifar_resnet8", "--student", "cifar_resnet8", "--epochs",
                      "2", "--teacher-epochs", "1", "--set", "data.image_size=8", "--device", "cpu",
                      *[a for s in sets for a in ("--set", s)])
    assert message in one_line_exit_2(done)


def test_a_one_epoch_run_has_no_room_for_the_pre_stage() -> None:
    with pytest.raises(UserError, match="ab needs a pre-stage and a training stage: at least 2 epochs, got 1"):
        build("ab", epochs=1)
    with pytest.raises(UserError, match="ab.margin"):
        ABParams(margin=-1.0)
