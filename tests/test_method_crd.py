"""CRD: the NCE loss against a by-hand computation of Tian et al.'s formula, the momentum memory, exact
other-class negatives from the global RNG, Z fixed after the first batch, and state that checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.methods.crd import CRDLoss

LABELS = torch.tensor([0, 0, 1, 1, 2, 2])
W_S = [[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]]  # embed_s: 3 → 2
W_T = [[0.5, 1.0], [1.0, -1.0]]  # embed_t: 2 → 2


def small_crd(nce_k: int = 3, nce_t: float = 0.5, nce_m: float = 0.5) -> CRDLoss:
    torch.manual_seed(0)
    crd = CRDLoss(s_dim=3, t_dim=2, feat_dim=2, n_data=6, nce_k=nce_k, nce_t=nce_t, nce_m=nce_m, train_labels=LABELS)
    with torch.no_grad():
        crd.embed_s.linear.weight.copy_(torch.tensor(W_S))
        crd.embed_t.linear.weight.copy_(torch.tensor(W_T))
        crd.embed_s.linear.bias.zero_()
        crd.embed_t.linear.bias.zero_()
    return crd


def unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def embed(w: list[list[float]], x: list[float]) -> list[float]:
    return unit([sum(wi * xi for wi, xi in zip(row, x, strict=True)) for row in w])


def nce_by_hand(h: list[list[float]], n_data: int) -> float:
    k = len(h[0]) - 1
    noise = k / n_data
    total = 0.0
    for row in h:
        total += math.log(row[0] / (row[0] + noise + 1e-7))
        total += sum(math.log(noise / (v + noise + 1e-7)) for v in row[1:])
    return -total / len(h)


def test_loss_matches_the_formula_and_z_comes_from_the_first_batch():
    crd = small_crd(nce_t=0.5)
    xs = [[1.0, 2.0, 0.0], [0.5, -1.0, 1.0]]
    xt = [[1.0, 0.0], [-0.5, 2.0]]
    index = torch.tensor([0, 3])
    contrast = torch.tensor([[0, 2, 4, 5], [3, 0, 1, 4]])
    mem_s, mem_t = crd.memory_s.tolist(), crd.memory_t.tolist()
    vs = [embed(W_S, x) for x in xs]
    vt = [embed(W_T, x) for x in xt]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    # Student anchors against the teacher's memory, teacher anchors against the student's.
    e_s = [[math.exp(dot(vs[b], mem_t[j]) / 0.5) for j in contrast[b].tolist()] for b in range(2)]
    e_t = [[math.exp(dot(vt[b], mem_s[j]) / 0.5) for j in contrast[b].tolist()] for b in range(2)]
    z_s = 6 * sum(map(sum, e_s)) / 8
    z_t = 6 * sum(map(sum, e_t)) / 8
    expected = nce_by_hand([[v / z_s for v in r] for r in e_s], 6) + nce_by_hand([[v / z_t for v in r] for r in e_t], 6)

    loss = crd(torch.tensor(xs), torch.tensor(xt), index, contrast)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert crd.z_s.item() == pytest.approx(z_s, rel=1e-5) and crd.z_t.item() == pytest.approx(z_t, rel=1e-5)


def test_z_stays_fixed_after_the_first_batch():
    crd = small_crd()
    index = torch.tensor([0, 2, 4])
    crd(torch.randn(3, 3), torch.randn(3, 2), index)
    z = (crd.z_s.item(), crd.z_t.item())
    assert z[0] > 0 and z[1] > 0
    crd(5 * torch.randn(3, 3), torch.randn(3, 2), index)
    assert (crd.z_s.item(), crd.z_t.item()) == z


def test_memory_follows_the_momentum_rule_and_stays_unit_norm():
    crd = small_crd(nce_m=0.5)
    xs, xt = torch.randn(2, 3), torch.randn(2, 2)
    index = torch.tensor([1, 4])
    before_s, before_t = crd.memory_s.clone(), crd.memory_t.clone()
    crd(xs, xt, index)
    vs = F.normalize(xs @ torch.tensor(W_S).t(), dim=1)
    vt = F.normalize(xt @ torch.tensor(W_T).t(), dim=1)
    for memory, before, v in ((crd.memory_s, before_s, vs), (crd.memory_t, before_t, vt)):
        for row, i in enumerate(index.tolist()):
            moved = [0.5 * a + 0.5 * b for a, b in zip(before[i].tolist(), v[row].tolist(), strict=True)]
            assert memory[i].tolist() == pytest.approx(unit(moved), rel=1e-5)
        assert memory[index].norm(dim=1).tolist() == pytest.approx([1.0, 1.0], rel=1e-6)
        untouched = [0, 2, 3, 5]
        assert torch.equal(memory[untouched], before[untouched])


def test_memory_starts_with_unit_expected_row_norm():
    crd = CRDLoss(4, 4, 128, 2000, 10, 0.07, 0.5, torch.arange(2000) % 10)
    assert crd.memory_s.pow(2).sum(1).mean().item() == pytest.approx(1.0, abs=0.05)
    assert crd.memory_s.abs().max().item() <= math.sqrt(3 / 128)


def test_exact_negatives_come_from_other_classes_without_repeats():
    labels = torch.randint(0, 5, (300,))
    crd = CRDLoss(4, 4, 8, 300, nce_k=16384, nce_t=0.07, nce_m=0.5, train_labels=labels)
    assert crd.nce_k == 300 - int(torch.bincount(labels).max())  # capped at the fewest other-class samples
    index = torch.arange(0, 300, 7)
    idx = crd.sample_contrast_index(index)
    assert idx.shape == (len(index), 1 + crd.nce_k)
    assert torch.equal(idx[:, 0], index)  # the positive is the sample itself
    negatives = idx[:, 1:]
    assert (labels[negatives] != labels[index][:, None]).all()
    assert all(len(set(row.tolist())) == crd.nce_k for row in negatives)


def test_small_nce_k_is_kept_and_negatives_follow_the_global_rng():
    crd = CRDLoss(4, 4, 8, 300, nce_k=16, nce_t=0.07, nce_m=0.5, train_labels=torch.arange(300) % 3)
    assert crd.nce_k == 16
    index = torch.tensor([5, 6, 7])
    torch.manual_seed(11)
    first = crd.sample_contrast_index(index)
    torch.manual_seed(11)
    assert torch.equal(crd.sample_contrast_index(index), first)
    assert not torch.equal(crd.sample_contrast_index(index), first)


def test_banks_and_z_are_checkpointed_so_a_resumed_run_continues_exactly():
    crd = small_crd()
    xs, xt, index = torch.randn(2, 3), torch.randn(2, 2), torch.tensor([0, 3])
    crd(xs, xt, index)
    state = crd.state_dict()
    assert {"memory_s", "memory_t", "z_s", "z_t"} <= set(state) and "train_labels" not in state
    resumed = small_crd()
    resumed.load_state_dict(state)
    torch.manual_seed(5)
    a = crd(xs, xt, index)
    torch.manual_seed(5)
    b = resumed(xs, xt, index)
    assert a.item() == b.item()
    assert torch.equal(crd.memory_s, resumed.memory_s)


def test_gradients_reach_the_student_and_both_heads_but_not_the_teacher_features():
    crd = small_crd()
    s = torch.randn(4, 3, requires_grad=True)
    t = torch.randn(4, 2)  # the teacher's (frozen) features
    crd(s, t, torch.tensor([0, 1, 2, 3])).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    assert crd.embed_s.linear.weight.grad.abs().sum() > 0 and crd.embed_t.linear.weight.grad.abs().sum() > 0
    assert not crd.memory_s.requires_grad and not crd.memory_t.requires_grad


def test_nce_loss_by_hand():
    # B = 2 anchors, K = 2 negatives, N = 8: P_n = 1/8, K·P_n = 0.25.
    from kdbench.methods.crd import nce_loss

    h = [[0.9, 0.2, 0.05], [0.3, 0.6, 0.1]]
    noise = 2 / 8
    expected = -sum(math.log(row[0] / (row[0] + noise)) + sum(math.log(noise / (v + noise)) for v in row[1:])
                    for row in h) / 2
    assert nce_loss(torch.tensor(h), 8).item() == pytest.approx(expected, rel=1e-5)


def test_other_class_capacity_edges():
    from kdbench.methods.crd import CRDLoss, other_class_capacity

    assert other_class_capacity(torch.tensor([0, 1, 2])) == 2  # classes of one sample each
    assert other_class_capacity(torch.tensor([0, 0, 2, 2, 2])) == 2  # an absent class (1) counts for nothing
    assert CRDLoss(4, 4, 2, 3, 16, 0.07, 0.5, torch.tensor([0, 0, 1])).nce_k == 1  # one negative is enough
