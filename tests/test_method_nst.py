"""NST (neuron selectivity transfer): the loss against numbers from RepDistiller's own NST.py, the MMD's
properties, the stage pairing and its dropped 1×1 pairs, a CLI run on digits, and the one-line refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from method_cli import one_line_exit_2, reference, run_on_digits, tensor

from kdbench.core.errors import UserError
from kdbench.methods.nst import NSTParams, nst_loss, poly_kernel_mean
from kdbench.models import create_model
from kdbench.train.method import MethodContext, get_method


def test_nst_loss_matches_the_reference_code():
    for case in reference("nst")["cases"]:  # maps of different sizes (pooled), then of one size
        got = nst_loss(tensor(case["inputs"]["f_s"]), tensor(case["inputs"]["f_t"]))
        assert got.item() == pytest.approx(case["output"], rel=1e-5)


def test_nst_loss_is_the_squared_polynomial_kernel_mmd():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 3, 2, 2, generator=g), torch.randn(2, 4, 2, 2, generator=g)
    # By hand for each sample: channels as samples of the distribution, k(x, y) = (xᵀy)².
    total = 0.0
    for b in range(2):
        xs, xt = F.normalize(s[b].flatten(1), dim=1), F.normalize(t[b].flatten(1), dim=1)
        k = lambda x, y: (x @ y.t()).pow(2).mean()  # noqa: E731
        total += k(xt, xt) + k(xs, xs) - 2 * k(xs, xt)
    assert nst_loss(s, t).item() == pytest.approx(total.item() / 2, rel=1e-5)
    assert nst_loss(s, s.clone()).item() == pytest.approx(0.0, abs=1e-6)
    assert nst_loss(3.0 * s, s).item() == pytest.approx(0.0, abs=1e-6)  # each channel's map is normalised
    student = s.clone().requires_grad_(True)
    teacher = t.clone().requires_grad_(True)
    nst_loss(student, teacher).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0 and teacher.grad is None


def test_the_gram_form_for_maps_with_fewer_positions_than_channels_gives_the_same_kernel_mean():
    g = torch.Generator().manual_seed(0)
    a = F.normalize(torch.randn(3, 40, 4, generator=g), dim=2)  # 40 channels of 2×2 maps: the Gram path
    b = F.normalize(torch.randn(3, 24, 4, generator=g), dim=2)
    direct = torch.bmm(a, b.transpose(1, 2)).pow(2).mean()
    assert poly_kernel_mean(a, b).item() == pytest.approx(direct.item(), rel=1e-6)
    wide = F.normalize(torch.randn(3, 2, 9, generator=g), dim=2)  # more positions than channels: direct
    assert poly_kernel_mean(wide, wide).item() == pytest.approx(
        torch.bmm(wide, wide.transpose(1, 2)).pow(2).mean().item(), rel=1e-6)


def _nst(student: str, teacher: str, size: int = 16):
    ctx = MethodContext(10, 3, size, 8, torch.zeros(8, dtype=torch.long), 1, 0)
    return get_method("nst").cls(create_model(student, num_classes=10, image_size=size),
                                 create_model(teacher, num_classes=10, image_size=size), NSTParams(), ctx)


def test_a_1x1_pair_is_dropped_with_one_recorded_warning_and_none_left_is_refused(capsys):
    # cifar_resnet8 (16, 8, 4 px stages) from a timm ResNet-18 (4, 2, 1, 1 px stages) at 16 px: pair 3:3 is 1×1.
    nst = _nst("cifar_resnet8", "resnet18")
    assert nst.pairs == [(1, 1), (2, 2)] and nst.dropped == [(3, 3)]
    err = capsys.readouterr().err
    assert err.count("warning: nst: stage pairs 3:3 compare 1×1 maps") == 1 and err.count("\n") == 1
    assert nst.describe() == {"stage_pairs": [[1, 1], [2, 2]], "dropped_pairs": [[3, 3]], "warning": nst.warning}
    # At 4 px the ResNet-18's stride-4 stem leaves every stage 1×1: nothing left to transfer.
    with pytest.raises(UserError, match=r"nst: every stage pair \(1:1, 2:2, 3:3, 4:4\) compares 1×1 maps at 4 px"):
        _nst("resnet18", "resnet18", size=4)


def test_nst_runs_from_the_cli(dirs, in_process):
    record, losses = run_on_digits(in_process, dirs["results"], "nst")
    assert record["method_info"] == {"stage_pairs": [[1, 1], [2, 2], [3, 3]]}  # 8, 4, 2 px: none dropped
    assert set(losses) == {"ce", "nst", "total"} and losses["nst"] > 0


def test_a_negative_weight_is_one_line(dirs, in_process):
    done = in_process("run", "--method", "nst", "--teacher", "cifar_resnet8", "--set", "nst.w_nst=-2")
    assert "nst.w_nst=-2 is out of range; allowed: [0, inf)" in one_line_exit_2(done)


def test_a_student_without_spatial_maps_is_refused_in_one_line():
    with pytest.raises(UserError, match="nst compares spatial feature maps stage by stage") as err:
        _nst("gnn2", "resnet18")
    assert "\n" not in str(err.value)
