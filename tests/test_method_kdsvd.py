"""KDSVD: the loss against RepDistiller's KDSVD numbers (values and gradients: the SVD's sign alignment included),
its properties, the CLI run and its refusals."""

from __future__ import annotations

import pytest
import torch
from method_cli import one_line_exit_2, reference, run_on_digits, tensor
from pre_stage_methods import build

from kdbench.core.errors import UserError
from kdbench.methods.kdsvd import align_signs, kdsvd_loss, top_singular


@pytest.mark.parametrize("case", reference("kdsvd")["cases"], ids=lambda c: f"k={c['k']}")
def test_kdsvd_loss_reproduces_repdistillers_kdsvd(case) -> None:
    student = [tensor(e).requires_grad_(True) for e in case["student"]]
    teacher = [tensor(e) for e in case["teacher"]]
    total = kdsvd_loss(student, teacher, case["k"])
    assert total.item() == pytest.approx(case["total"], rel=1e-4)
    total.backward()
    for s, expected in zip(student, case["student_grads"], strict=True):
        torch.testing.assert_close(s.grad.flatten(), torch.tensor(expected), rtol=1e-3, atol=1e-6)


def test_kdsvd_is_zero_for_the_teachers_own_maps_whatever_the_singular_vectors_signs() -> None:
    torch.manual_seed(0)
    maps = [torch.randn(2, 4, 4, 4), torch.randn(2, 6, 4, 4), torch.randn(2, 6, 2, 2)]
    assert kdsvd_loss(maps, maps).item() == pytest.approx(0.0, abs=1e-10)
    assert kdsvd_loss([-m for m in maps], maps).item() == pytest.approx(0.0, abs=1e-10)  # alignment flips it back
    assert kdsvd_loss([torch.randn_like(m) for m in maps], maps).item() > 0


def test_alignment_picks_the_most_parallel_student_vector_with_its_sign() -> None:
    _, v = top_singular(torch.randn(1, 5, 4, 4), 4)  # (1, 5, 4) orthonormal columns
    aligned = align_signs(v, -v[:, :, 2:3])
    torch.testing.assert_close(aligned, -v[:, :, 2:3])


def test_kdsvd_on_digits_logs_ce_and_svd(in_process, dirs) -> None:
    record, losses = run_on_digits(in_process, dirs["results"], "kdsvd")
    assert set(losses) == {"ce", "svd", "total"} and losses["svd"] > 0
    assert record["method_info"]["stages"] == [1, 2, 3]


def test_a_pair_of_unequal_widths_is_refused_naming_the_stage() -> None:
    with pytest.raises(UserError, match="kdsvd needs the same channel count .* stage 1 has 16 and 64"):
        build("kdsvd", teacher="cifar_resnet8x4")


@pytest.mark.parametrize(("sets", "message"), [
    (["kdsvd.w_svd=-1"], "kdsvd.w_svd=-1 is out of range"),
    (["kdsvd.w_ce=-1"], "kdsvd.w_ce=-1 is out of range"),
    (["kdsvd.k=0"], "kdsvd.k=0 is out of range"),
])
def test_bad_values_are_one_line_errors(in_process, dirs, sets, message) -> None:
    done = in_process("run", "--method", "kdsvd", "--teacher", "cifar_resnet8", "--student", "cifar_resnet8",
                      "--epochs", "1", "--set", "data.image_size=8", "--device", "cpu",
                      *[a for s in sets for a in ("--set", s)])
    assert message in one_line_exit_2(done)
