"""AT and PKT: each loss against a by-hand computation of its formula, the properties that follow from it, the
stage pairing of AT across models with different stage counts, and AT's one-line refusal of a map-less student."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.core.errors import UserError
from kdbench.methods.at import ATParams, at_loss, deep_pairs, shallow_pairs
from kdbench.methods.pkt import pkt_loss
from kdbench.models import create_model
from kdbench.train.method import MethodContext, get_method


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def attention_by_hand(f: list[list[list[float]]]) -> list[float]:
    """f: (C, H·W flattened as one list per channel) → normalised mean over channels of f²."""
    return unit([sum(ch[k] ** 2 for ch in f) / len(f) for k in range(len(f[0]))])


def test_at_loss_matches_the_formula():
    # Two samples, student 2 channels, teacher 3 channels, both 2×2 maps.
    s = [[[1.0, 0.0, 2.0, 1.0], [0.5, -1.0, 0.0, 1.0]], [[0.0, 1.0, 1.0, 0.0], [2.0, 0.0, -1.0, 1.0]]]
    t = [[[1.0, 1.0, 0.0, 2.0], [0.0, 1.0, 1.0, 0.0], [3.0, 0.0, 1.0, 1.0]],
         [[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 1.0, 0.0], [0.0, 1.0, -1.0, 0.0]]]
    total = 0.0
    for b in range(2):
        qs, qt = attention_by_hand(s[b]), attention_by_hand(t[b])
        total += sum((a - c) ** 2 for a, c in zip(qs, qt, strict=True))
    got = at_loss(torch.tensor(s).reshape(2, 2, 2, 2), torch.tensor(t).reshape(2, 3, 2, 2))
    assert got.item() == pytest.approx(total / 8, rel=1e-5)  # mean over 2 samples × 4 positions


def test_at_loss_properties():
    f = torch.randn(3, 8, 4, 4)
    assert at_loss(f, f).item() == pytest.approx(0.0, abs=1e-7)
    assert at_loss(5 * f, f).item() == pytest.approx(0.0, abs=1e-7)  # each map is normalised
    assert at_loss(-f, f).item() == pytest.approx(0.0, abs=1e-7)  # |F|²: the sign does not matter


def test_at_loss_matches_maps_of_different_sizes_by_area_interpolation():
    s = torch.rand(2, 4, 8, 8)
    t = torch.rand(2, 6, 4, 4)
    q = s.pow(2).mean(1)
    pooled = q.reshape(2, 4, 2, 4, 2).mean(dim=(2, 4))  # each 2×2 cell averaged: the 4×4 attention map
    qs = torch.nn.functional.normalize(pooled.flatten(1), dim=1)
    qt = torch.nn.functional.normalize(t.pow(2).mean(1).flatten(1), dim=1)
    expected = (qs - qt).pow(2).mean()
    assert at_loss(s, t).item() == pytest.approx(expected.item(), rel=1e-5)
    assert at_loss(t, s).item() == pytest.approx(expected.item(), rel=1e-5)  # whichever side is larger


def test_shallow_pairs_stage_i_with_stage_i_from_the_first_after_the_stem_and_deep_pairs_from_the_last():
    # shallow: what zip(feat_s[1:], feat_t[1:]) gives in RepDistiller / mdistiller; deep: the former default.
    assert shallow_pairs(5, 5) == deep_pairs(5, 5) == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert shallow_pairs(4, 6) == [(1, 1), (2, 2), (3, 3)]
    assert deep_pairs(4, 6) == [(1, 3), (2, 4), (3, 5)]
    assert shallow_pairs(1, 5) == deep_pairs(1, 5) == []


def test_at_loss_is_at_most_two_over_the_map_size():
    # Unit vectors of non-negative entries: Σ_k (q_s − q_t)² ≤ 2, reached by maps on disjoint positions; the mean
    # over positions divides by H·W. So the same w_at weighs a 2×2 map 256 times more than a 32×32 one.
    for side in (2, 4, 32):
        s, t = torch.zeros(1, 1, side, side), torch.zeros(1, 1, side, side)
        s[0, 0, 0, 0], t[0, 0, -1, -1] = 1.0, 1.0
        assert at_loss(s, t).item() == pytest.approx(2 / side**2, rel=1e-6)


def _at(student: str, teacher: str, pairs: str = "shallow", size: int = 16, in_chans: int = 1):
    ctx = MethodContext(10, in_chans, size, 8, torch.zeros(8, dtype=torch.long), 1, 0)
    s = create_model(student, num_classes=10, in_chans=in_chans, image_size=size)
    t = create_model(teacher, num_classes=10, in_chans=in_chans, image_size=size)
    return get_method("at").cls(s, t, ATParams(pairs=pairs), ctx)


def test_embedded_hard_pairs_drop_the_1x1_pair_with_one_recorded_warning(capsys):
    # cifar_resnet8 (16, 16, 8, 4 px) from a timm ResNet-18 (8, 4, 2, 1, 1 px) at 16 px: shallow pairs 1:1 (4×4),
    # 2:2 (2×2) and 3:3 (1×1, identically zero: dropped); deep pairs 1:2, 2:3, 3:4, two of them 1×1.
    at = _at("cifar_resnet8", "resnet18")
    assert at.pairs == [(1, 1), (2, 2)] and at.dropped == [(3, 3)]
    err = capsys.readouterr().err
    assert err.count("warning: at: stage pairs 3:3 compare 1×1 attention maps") == 1 and err.count("\n") == 1
    assert at.describe() == {"stage_pairs": [[1, 1], [2, 2]], "dropped_pairs": [[3, 3]], "warning": at.warning}
    deep = _at("cifar_resnet8", "resnet18", "deep")
    assert deep.pairs == [(1, 2)] and deep.dropped == [(2, 3), (3, 4)]
    assert "stage pairs 2:3, 3:4 compare 1×1" in capsys.readouterr().err
    clean = _at("cifar_resnet8", "cifar_resnet8", size=32, in_chans=3)  # CIFAR maps: nothing to drop, no warning
    assert clean.pairs == [(1, 1), (2, 2), (3, 3)] and clean.describe() == {"stage_pairs": [[1, 1], [2, 2], [3, 3]]}
    assert capsys.readouterr().err == ""
    t = clean._t_tap(torch.randn(4, 3, 32, 32))
    assert sorted(t.stages) == [1, 2, 3]  # the teacher's taps are the paired stages


def test_explicit_pairs_are_used_as_listed_and_a_degenerate_or_unknown_one_is_refused_in_one_line():
    assert _at("cifar_resnet8", "resnet18", "1:0,2:1").pairs == [(1, 0), (2, 1)]
    cases = [("3:3", r"at.pairs=3:3: pair 3:3 compares 1×1 attention maps.*teacher stages: 0 8×8, 1 4×4, 2 2×2, "
                     r"3 1×1, 4 1×1\)"),
             ("1:5", r"stage pair 1:5 is out of range; allowed: student stages 0..3, teacher stages 0..4"),
             ("1-1", r"at.pairs='1-1': expected auto, shallow, deep, depth or student:teacher stage pairs")]
    for pairs, message in cases:
        with pytest.raises(UserError, match=message) as err:
            _at("cifar_resnet8", "resnet18", pairs)
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="at.pairs='1:1,1:1' lists a pair twice"):
        ATParams(pairs="1:1,1:1")


def test_a_pairing_left_with_no_pair_larger_than_1x1_is_refused():
    # At 8 px the ResNet-18's stages are 4, 2, 1, 1, 1 px: deep pairs every student stage with a 1×1 one.
    with pytest.raises(UserError, match=r"at.pairs=deep leaves no stage pair with maps larger than 1×1"):
        _at("cifar_resnet8", "resnet18", "deep", size=8)


def test_at_refuses_a_student_without_spatial_maps_in_one_line():
    ctx = MethodContext(10, 3, 16, 8, torch.zeros(8, dtype=torch.long), 1, 0)
    teacher = create_model("resnet18", num_classes=10, image_size=16)
    student = create_model("gnn2", num_classes=10, image_size=16)
    with pytest.raises(UserError, match="spatial attention maps") as err:
        get_method("at").cls(student, teacher, ATParams(), ctx)
    assert "\n" not in str(err.value)


def pkt_by_hand(s: list[list[float]], t: list[list[float]], eps: float = 1e-7) -> float:
    def probs(e: list[list[float]]) -> list[list[float]]:
        e = [[x / (math.sqrt(sum(v * v for v in row)) + eps) for x in row] for row in e]
        k = [[(sum(a * b for a, b in zip(r1, r2, strict=True)) + 1) / 2 for r2 in e] for r1 in e]
        return [[v / sum(row) for v in row] for row in k]

    ps, pt = probs(s), probs(t)
    n = len(s)
    return sum(pt[i][j] * math.log((pt[i][j] + eps) / (ps[i][j] + eps)) for i in range(n) for j in range(n)) / n**2


def test_pkt_loss_matches_the_formula():
    s = [[1.0, 0.0, 2.0], [0.5, -1.0, 1.0], [0.0, 1.0, -1.0]]
    t = [[1.0, 2.0], [-1.0, 0.5], [2.0, 2.0]]  # different widths: only similarities are compared
    assert pkt_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(pkt_by_hand(s, t), rel=1e-5)


def test_pkt_loss_properties():
    e = torch.randn(6, 10)
    assert pkt_loss(e, e).item() == pytest.approx(0.0, abs=1e-7)
    assert pkt_loss(3 * e, e).item() == pytest.approx(0.0, abs=1e-7)  # cosine kernel: scale-free
    assert pkt_loss(torch.randn(6, 4), e).item() > 0
    s = torch.randn(6, 4, requires_grad=True)
    t = torch.randn(6, 10, requires_grad=True)
    pkt_loss(s, t).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0 and t.grad is None


def test_at_loss_resizes_non_square_maps_of_different_sizes_by_area():
    # Rectangular maps, the student's larger in height and the teacher's in width: each is pooled to (min H, min W).
    g = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(2, 4, 8, 3, generator=g), torch.randn(2, 5, 4, 6, generator=g)

    def q(f: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(f.pow(2).mean(dim=1, keepdim=True), (4, 3))
        return torch.nn.functional.normalize(pooled.flatten(1), dim=1)

    expected = (q(fs) - q(ft)).pow(2).mean()
    assert at_loss(fs, ft).item() == pytest.approx(expected.item(), rel=1e-6)
