"""kd_loss equals T²·KL(softmax(z_t/T) ‖ softmax(z_s/T)), summed over classes, averaged over the batch."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.methods.kd import kd_loss


def by_hand(zs: list[list[float]], zt: list[list[float]], t: float) -> float:
    total = 0.0
    for s_row, t_row in zip(zs, zt, strict=True):
        es = [math.exp(v / t) for v in s_row]
        et = [math.exp(v / t) for v in t_row]
        ps = [v / sum(es) for v in es]
        pt = [v / sum(et) for v in et]
        total += sum(p * math.log(p / q) for p, q in zip(pt, ps, strict=True))
    return t * t * total / len(zs)


@pytest.mark.parametrize("t", [1.0, 4.0, 0.5])
def test_kd_loss_matches_the_formula(t):
    zs = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    zt = [[2.0, 0.0, 1.0], [1.0, 1.0, -2.0]]
    got = kd_loss(torch.tensor(zs), torch.tensor(zt), t).item()
    assert got == pytest.approx(by_hand(zs, zt, t), rel=1e-5)


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    z = torch.randn(5, 10)
    assert kd_loss(z, z, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(z, torch.randn(5, 10), 4.0).item() > 0


def test_kd_loss_is_invariant_to_a_constant_shift_of_the_logits():
    zs, zt = torch.randn(3, 7), torch.randn(3, 7)
    assert kd_loss(zs + 5.0, zt - 2.0, 2.0).item() == pytest.approx(kd_loss(zs, zt, 2.0).item(), rel=1e-5)


def test_kd_loss_gradient_flows_to_the_student_only():
    zs = torch.randn(4, 5, requires_grad=True)
    zt = torch.randn(4, 5, requires_grad=True)
    kd_loss(zs, zt.detach(), 4.0).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0 and zt.grad is None
