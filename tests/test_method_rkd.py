"""RKD: the distance and angle losses against a by-hand computation of Park et al.'s formulas, and their
invariances (scale for distances; scale and translation for angles)."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.methods.rkd import rkd_angle_loss, rkd_distance_loss

S = [[1.0, 0.0, 2.0], [0.0, 1.0, -1.0], [2.0, 2.0, 0.5], [-1.0, 0.5, 1.0]]
T = [[0.5, 1.0], [2.0, -1.0], [0.0, 0.0], [1.5, 2.5]]  # a different width: only relations are compared


def smooth_l1(a: list[float], b: list[float]) -> float:
    terms = [0.5 * (x - y) ** 2 if abs(x - y) < 1 else abs(x - y) - 0.5 for x, y in zip(a, b, strict=True)]
    return sum(terms) / len(terms)


def distances_by_hand(e: list[list[float]]) -> list[float]:
    d = [[math.dist(a, b) for b in e] for a in e]
    nonzero = [v for row in d for v in row if v > 0]
    mean = sum(nonzero) / len(nonzero)
    return [v / mean for row in d for v in row]


def angles_by_hand(e: list[list[float]]) -> list[float]:
    def unit(a: list[float], b: list[float]) -> list[float]:
        diff = [x - y for x, y in zip(a, b, strict=True)]
        n = math.hypot(*diff)
        return [x / n for x in diff] if n > 0 else [0.0] * len(diff)

    out = []
    for j in e:  # vertex
        for i in e:
            for k in e:
                out.append(sum(x * y for x, y in zip(unit(i, j), unit(k, j), strict=True)))
    return out


def test_distance_loss_matches_the_formula():
    expected = smooth_l1(distances_by_hand(S), distances_by_hand(T))
    assert rkd_distance_loss(torch.tensor(S), torch.tensor(T)).item() == pytest.approx(expected, rel=1e-5)


def test_angle_loss_matches_the_formula():
    expected = smooth_l1(angles_by_hand(S), angles_by_hand(T))
    assert expected > 0
    assert rkd_angle_loss(torch.tensor(S), torch.tensor(T)).item() == pytest.approx(expected, rel=1e-5)


def test_smooth_l1_beyond_one_is_linear():
    # Scale a far-apart teacher so that some normalised distance differences exceed 1 (the L1 branch).
    s = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    t = torch.tensor([[0.0], [0.01], [0.02], [10.0]])
    expected = smooth_l1(distances_by_hand(s.tolist()), distances_by_hand(t.tolist()))
    assert rkd_distance_loss(s, t).item() == pytest.approx(expected, rel=1e-5)


def test_both_losses_vanish_for_identical_embeddings():
    e = torch.randn(6, 5)
    assert rkd_distance_loss(e, e.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert rkd_angle_loss(e, e.clone()).item() == pytest.approx(0.0, abs=1e-7)


def test_distance_loss_is_unchanged_when_one_side_is_scaled():
    s, t = torch.randn(6, 5), torch.randn(6, 7)
    base = rkd_distance_loss(s, t).item()
    assert base > 0
    assert rkd_distance_loss(3.7 * s, t).item() == pytest.approx(base, rel=1e-4)
    assert rkd_distance_loss(s, 0.2 * t).item() == pytest.approx(base, rel=1e-4)


def test_angle_loss_is_unchanged_when_one_side_is_scaled_or_translated():
    s, t = torch.randn(6, 5), torch.randn(6, 7)
    base = rkd_angle_loss(s, t).item()
    assert base > 0
    assert rkd_angle_loss(2.5 * s + torch.randn(5), t).item() == pytest.approx(base, rel=1e-4)
    assert rkd_angle_loss(s, 0.3 * t - 4.0).item() == pytest.approx(base, rel=1e-4)


def test_gradients_reach_the_student_side_only():
    s = torch.randn(5, 4, requires_grad=True)
    t = torch.randn(5, 3, requires_grad=True)
    (rkd_distance_loss(s, t) + rkd_angle_loss(s, t)).backward()
    assert s.grad is not None and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0
    assert t.grad is None
