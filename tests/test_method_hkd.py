"""HKD: the kNN instance graph on a hand-made batch, the one-hop graph convolution against a hand computation,
InfoNCE against its direct formula, the momentum memory, the whole loss against its formula, and banks that
checkpoint so a resumed run continues exactly."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from kdbench.core.errors import UserError
from kdbench.methods.hkd import (
    HKDLoss,
    HKDParams,
    OneHopGraphConv,
    info_nce,
    knn_graph,
    normalised_adjacency,
    smoothed_positive,
)


def test_knn_graph_links_each_sample_to_itself_and_its_nearest_by_softmax_cosine():
    # Logits whose softmax outputs point in known directions: 0 and 1 nearly alike, 2 and 3 alike, 4 between.
    logits = torch.tensor([[5.0, 0.0, 0.0], [4.5, 0.5, 0.0], [0.0, 5.0, 0.0], [0.0, 4.5, 0.3], [2.0, 2.0, 0.0]])
    p = F.softmax(logits, dim=1)
    cos = (p @ p.t()) / (p.norm(dim=1)[:, None] * p.norm(dim=1)[None, :])
    adj = knn_graph(logits, k=2)
    assert adj.sum(dim=1).tolist() == [2.0] * 5  # k per row, the node itself included
    assert adj.diagonal().tolist() == [1.0] * 5
    for i in range(5):  # the one other neighbour is the most cosine-similar other sample
        others = [j for j in range(5) if j != i]
        best = max(others, key=lambda j: cos[i, j].item())
        assert adj[i, best] == 1.0
    assert adj[0, 1] == 1 and adj[1, 0] == 1 and adj[2, 3] == 1 and adj[3, 2] == 1
    # k is capped at the batch size: a batch smaller than k is fully connected.
    assert torch.equal(knn_graph(logits[:3], k=8), torch.ones(3, 3))


def test_knn_graph_follows_softmax_not_raw_logits_and_carries_no_gradient():
    # Shifted logits have the same softmax: the graph must not change.
    logits = torch.randn(10, 4, requires_grad=True)
    a = knn_graph(logits, k=3)
    assert torch.equal(a, knn_graph(logits.detach() + 7.0, k=3))
    assert not a.requires_grad


def test_one_hop_conv_matches_a_hand_computation():
    conv = OneHopGraphConv(2, 2)
    w = [[1.0, 0.0, 0.5, -1.0], [0.0, 2.0, 1.0, 0.0]]  # Linear(4 → 2) over [x, Âx]
    b = [0.1, -0.2]
    with torch.no_grad():
        conv.linear.weight.copy_(torch.tensor(w))
        conv.linear.bias.copy_(torch.tensor(b))
    x = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
    adj = [[1, 1, 0], [0, 1, 1], [1, 1, 1]]  # node 2 has in-degree 3, nodes 0 and 1 in-degree 2
    deg = [sum(r) for r in adj]
    hop = [[sum(adj[i][j] / math.sqrt(deg[i] * deg[j]) * x[j][c] for j in range(3)) for c in range(2)]
           for i in range(3)]
    expected = []
    for i in range(3):
        h = [sum(wr * v for wr, v in zip(row, x[i] + hop[i], strict=True)) + bias
             for row, bias in zip(w, b, strict=True)]
        n = math.sqrt(sum(v * v for v in h))
        expected.append([v / n for v in h])
    got = conv(torch.tensor(x), torch.tensor(adj, dtype=torch.float))
    assert got.tolist() == [pytest.approx(r, rel=1e-5) for r in expected]
    # With every in-degree k (the kNN graph), Â is A / k: the mean over the neighbours.
    a = knn_graph(torch.randn(6, 5), k=3)
    assert torch.allclose(normalised_adjacency(a), a / 3)


def test_info_nce_matches_the_direct_formula():
    anchor = F.normalize(torch.tensor([[1.0, 2.0], [0.5, -1.0]]), dim=1)
    positive = F.normalize(torch.tensor([[1.0, 1.5], [0.0, -1.0]]), dim=1)
    negatives = F.normalize(torch.tensor([[[1.0, 0.0], [-1.0, 1.0], [0.0, 1.0]],
                                          [[1.0, 1.0], [2.0, -1.0], [-1.0, 0.0]]]), dim=2)
    tau = 0.3
    total = 0.0
    for b in range(2):
        pos = math.exp(float(anchor[b] @ positive[b]) / tau)
        neg = sum(math.exp(float(anchor[b] @ n) / tau) for n in negatives[b])
        total += -math.log(pos / (pos + neg))
    assert info_nce(anchor, positive, negatives, tau).item() == pytest.approx(total / 2, rel=1e-5)


def small_hkd(negatives: str = "opposite", nce_m: float = 0.9, smooth_m: float = 0.75, k: int = 3) -> HKDLoss:
    torch.manual_seed(0)
    return HKDLoss(s_dim=5, t_dim=3, feat_dim=4, n_data=12, k=k, nce_k=4, nce_t=0.5, nce_m=nce_m, smooth_m=smooth_m,
                   negatives=negatives, train_labels=torch.arange(12) % 3)


def test_memory_moves_by_momentum_and_only_at_the_batch_rows():
    hkd = small_hkd(nce_m=0.9)
    xs, xt, index = torch.randn(4, 5), torch.randn(4, 3), torch.tensor([1, 4, 7, 10])
    before_s, before_t = hkd.memory_s.clone(), hkd.memory_t.clone()
    hkd(xs, xt, torch.randn(4, 6), torch.randn(4, 6), index)
    v_s, v_t = hkd.embed_s(xs), hkd.embed_t(xt)  # heads unchanged by a forward
    for memory, before, v in ((hkd.memory_s, before_s, v_s), (hkd.memory_t, before_t, v_t)):
        expected = F.normalize(0.9 * before[index] + 0.1 * v.detach(), dim=1)
        assert torch.allclose(memory[index], expected, atol=1e-6)
        rest = [i for i in range(12) if i not in index.tolist()]
        assert torch.equal(memory[rest], before[rest])


@pytest.mark.parametrize("negatives", ["opposite", "own"])
def test_loss_matches_its_formula_from_the_public_pieces(negatives):
    hkd = small_hkd(negatives=negatives, smooth_m=0.6)
    xs, xt = torch.randn(5, 5), torch.randn(5, 3)
    zs, zt = torch.randn(5, 6), torch.randn(5, 6)
    index = torch.tensor([0, 2, 5, 7, 9])
    neg = torch.tensor([[1, 2, 4, 5], [0, 1, 3, 4], [0, 1, 3, 4], [0, 2, 3, 5], [1, 2, 4, 5]])  # other classes
    m_s, m_t = hkd.memory_s.clone(), hkd.memory_t.clone()
    v_s, v_t = hkd.embed_s(xs), hkd.embed_t(xt)
    g_s, g_t = hkd.gnn_s(v_s, knn_graph(zs, 3)), hkd.gnn_t(v_t, knn_graph(zt, 3))
    neg_s, neg_t = (m_t[neg], m_s[neg]) if negatives == "opposite" else (m_s[neg], m_t[neg])
    individual = info_nce(v_s, m_t[index], neg_s, 0.5) + info_nce(v_t, m_s[index], neg_t, 0.5)
    holistic = (info_nce(g_s, F.normalize(0.6 * m_t[index] + 0.4 * g_t, dim=1), neg_s, 0.5)
                + info_nce(g_t, F.normalize(0.6 * m_s[index] + 0.4 * g_s, dim=1), neg_t, 0.5))
    got_i, got_h = hkd(xs, xt, zs, zt, index, neg)
    assert got_i.item() == pytest.approx(individual.item(), rel=1e-5)
    assert got_h.item() == pytest.approx(holistic.item(), rel=1e-5)


def test_smoothed_positive_is_a_detached_unit_blend():
    m, g = F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4, requires_grad=True), dim=1)
    pos = smoothed_positive(m, g, 0.75)
    assert not pos.requires_grad
    assert torch.allclose(pos, F.normalize(0.75 * m + 0.25 * g.detach(), dim=1))


def test_negatives_are_other_class_and_capped_like_crd():
    hkd = HKDLoss(4, 4, 8, 300, 8, nce_k=16384, nce_t=0.07, nce_m=0.9, smooth_m=0.75, negatives="opposite",
                  train_labels=torch.arange(300) % 5)
    assert hkd.nce_k == 240  # N minus the largest class
    assert hkd.bank_bytes == 2 * 300 * 8 * 4


def test_banks_are_checkpointed_so_a_resumed_run_continues_exactly():
    hkd = small_hkd()
    xs, xt, zs, zt, index = torch.randn(4, 5), torch.randn(4, 3), torch.randn(4, 6), torch.randn(4, 6), \
        torch.tensor([0, 3, 5, 8])
    hkd(xs, xt, zs, zt, index)
    state = hkd.state_dict()
    assert {"memory_s", "memory_t"} <= set(state) and "train_labels" not in state
    torch.manual_seed(123)  # a fresh process would start its banks elsewhere
    resumed = HKDLoss(5, 3, 4, 12, 3, 4, 0.5, 0.9, 0.75, "opposite", torch.arange(12) % 3)
    resumed.load_state_dict(state)
    torch.manual_seed(5)
    a = hkd(xs, xt, zs, zt, index)
    torch.manual_seed(5)
    b = resumed(xs, xt, zs, zt, index)
    assert (a[0].item(), a[1].item()) == (b[0].item(), b[1].item())
    assert torch.equal(hkd.memory_s, resumed.memory_s) and torch.equal(hkd.memory_t, resumed.memory_t)


def test_gradients_reach_student_heads_and_graph_convs_but_not_the_banks():
    hkd = small_hkd()
    s = torch.randn(6, 5, requires_grad=True)
    individual, holistic = hkd(s, torch.randn(6, 3), torch.randn(6, 6), torch.randn(6, 6), torch.arange(6))
    (individual + holistic).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    for module in (hkd.embed_s, hkd.embed_t, hkd.gnn_s, hkd.gnn_t):
        assert module.linear.weight.grad.abs().sum() > 0
    assert not hkd.memory_s.requires_grad


def test_params_validate_the_negative_bank_choice():
    with pytest.raises(UserError, match="unknown hkd.negatives 'both'"):
        HKDParams(negatives="both")


def test_a_graph_of_self_loops_only_normalises_to_the_identity():
    # k = 1: every node is only its own neighbour (degree 1), so Â = D^-1/2 A D^-1/2 = I and the hop is x itself.
    from kdbench.methods.hkd import normalised_adjacency

    assert torch.equal(normalised_adjacency(torch.eye(3)), torch.eye(3))


def test_one_sample_of_another_class_is_enough_for_negatives():
    from kdbench.core.errors import UserError
    from kdbench.methods.hkd import HKDLoss

    labels = torch.tensor([0, 0, 1])  # the largest class leaves one other-class sample: one negative
    loss = HKDLoss(4, 4, 2, 3, 1, 16, 0.07, 0.9, 0.75, "opposite", labels)
    assert loss.nce_k == 1
    with pytest.raises(UserError, match="at least two classes"):
        HKDLoss(4, 4, 2, 3, 1, 16, 0.07, 0.9, 0.75, "opposite", torch.tensor([0, 0, 0]))
