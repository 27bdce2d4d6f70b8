"""The graph operators of the CNN2GNN student written out densely by hand on small examples.

Anchor mode as one joint graph over [samples; anchors]: a sample row holds its self-loop 1 and p(j|i) towards its
anchors (degree 1 + Σ_j p(j|i) = 2); an anchor row holds the anchor graph's (P_a + P_aᵀ)/2 + I and nothing from
the samples; Â = D^{-1/2} A D^{-1/2} over the joint degrees. Propagating [y; y_a] by this Â gives the samples'
rows of AnchorGraph.propagate and the anchors' rows of the anchor graph's own propagate; a GNN2 forward is two
such layers. Batch mode: Â over the batch with self-pairs excluded from the neighbours.
"""

from __future__ import annotations

import pytest
import torch

from kdbench.models import create_model
from kdbench.models.graph import (
    AnchorGraph,
    IdentityGraph,
    NeighbourGraph,
    SparseGraphLearner,
    sparse_conditional_neighbors,
    sparse_conditional_probs,
    squared_distances,
)


def _normalised(a: torch.Tensor) -> torch.Tensor:
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


def _batch_operator(z: torch.Tensor, k: int) -> torch.Tensor:
    """Â = D^{-1/2}((P + Pᵀ)/2 + I)D^{-1/2} over the rows of z, self excluded from each row's candidates."""
    n = z.shape[0]
    d = squared_distances(z, z).masked_fill(torch.eye(n, dtype=torch.bool), float("inf"))
    p = sparse_conditional_probs(d, k)
    return _normalised((p + p.T) / 2 + torch.eye(n, dtype=z.dtype))


def _joint_operator(p: torch.Tensor, anchor_a: torch.Tensor) -> torch.Tensor:
    """The (B+m) × (B+m) normalised operator of anchor mode from P (B × m) and the anchor graph's A + I (m × m)."""
    b, m = p.shape
    a = torch.zeros(b + m, b + m, dtype=p.dtype)
    a[:b, :b] = torch.eye(b, dtype=p.dtype)
    a[:b, b:] = p  # (p_ij + p_ij)/2: the sample reads anchor j as if the anchor returned the link
    a[b:, b:] = anchor_a  # anchors read anchors only: samples send nothing
    return _normalised(a)


def test_anchor_propagation_equals_the_joint_operator_written_out():
    # 3 samples, 4 anchors, k = 2, weights written by hand (rows sum to 1).
    p = torch.tensor([[0.7, 0.3, 0.0, 0.0], [0.0, 0.0, 0.6, 0.4], [0.5, 0.0, 0.0, 0.5]])
    indices = torch.tensor([[0, 1], [2, 3], [0, 3]])
    weights = p.gather(1, indices)
    pa = torch.tensor([[0.0, 0.8, 0.2, 0.0], [0.9, 0.0, 0.0, 0.1], [0.0, 0.0, 0.0, 1.0], [0.0, 0.35, 0.65, 0.0]])
    a_idx = torch.tensor([[1, 2], [0, 3], [3, 2], [2, 1]])
    anchors = NeighbourGraph(a_idx, pa.gather(1, a_idx))
    anchor_a = (pa + pa.T) / 2 + torch.eye(4)
    y, ya = torch.randn(3, 5), torch.randn(4, 5)
    graph = AnchorGraph(indices, weights, anchors, anchor_x=torch.randn(4, 6))
    expected = _joint_operator(p, anchor_a) @ torch.cat([y, ya])
    torch.testing.assert_close(graph.propagate(y, ya), expected[:3])
    torch.testing.assert_close(anchors.propagate(ya), expected[3:])
    # Written out for sample 0: ½·y_0 + Σ_j p(j|0) y_a[j] / √(2·d_j).
    degrees = anchor_a.sum(1)
    by_hand = 0.5 * y[0] + sum(p[0, j] * ya[j] / (2 * degrees[j]).sqrt() for j in range(4))
    torch.testing.assert_close(graph.propagate(y, ya)[0], by_hand)


def test_anchor_propagation_without_an_anchor_graph_reads_raw_anchor_features():
    p = torch.tensor([[0.25, 0.75, 0.0], [0.0, 0.5, 0.5]])
    indices = torch.tensor([[0, 1], [1, 2]])
    graph = AnchorGraph(indices, p.gather(1, indices), IdentityGraph(), anchor_x=torch.randn(3, 2))
    y, ya = torch.randn(2, 4), torch.randn(3, 4)
    expected = _joint_operator(p, torch.eye(3)) @ torch.cat([y, ya])  # anchor degree 1
    torch.testing.assert_close(graph.propagate(y, ya), expected[:2])


def _filled_anchor_learner(k: int = 2, m: int = 6) -> tuple[SparseGraphLearner, torch.Tensor]:
    torch.manual_seed(0)
    learner = SparseGraphLearner(5, k=k, proj_dim=3, mode="anchor", num_anchors=m).train()
    learner(torch.randn(m, 5))  # the first training batch fills the anchors
    return learner.eval(), torch.randn(4, 5)


def test_the_learner_anchor_graph_is_the_joint_operator_of_its_projection():
    learner, x = _filled_anchor_learner()
    graph = learner(x)
    assert isinstance(graph, AnchorGraph)
    with torch.no_grad():
        z, za = learner.proj(x), learner.proj(learner.anchors)
        p = sparse_conditional_probs(squared_distances(z, za), 2)
        anchor_op = _batch_operator(za, 2)
        n = za.shape[0]
        d = squared_distances(za, za).masked_fill(torch.eye(n, dtype=torch.bool), float("inf"))
        pa = sparse_conditional_probs(d, 2)
        anchor_a = (pa + pa.T) / 2 + torch.eye(n)
        y, ya = torch.randn(4, 3), torch.randn(n, 3)
        expected = _joint_operator(p, anchor_a) @ torch.cat([y, ya])
        torch.testing.assert_close(graph.propagate(y, ya), expected[:4], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(graph.anchors.propagate(ya), anchor_op @ ya, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(graph.anchor_x, learner.anchors)


@pytest.mark.parametrize("dense_max_nodes", [0, 1000], ids=["sparse-csr", "dense"])
def test_the_learner_batch_graph_is_the_normalised_operator_of_its_projection(dense_max_nodes: int):
    torch.manual_seed(0)
    learner = SparseGraphLearner(5, k=3, proj_dim=4, dense_max_nodes=dense_max_nodes).eval()
    x, y = torch.randn(9, 5), torch.randn(9, 2)
    with torch.no_grad():
        graph = learner(x)
        assert isinstance(graph, NeighbourGraph) and graph.is_dense == (dense_max_nodes > 0)
        torch.testing.assert_close(graph.propagate(y), _batch_operator(learner.proj(x), 3) @ y, rtol=1e-5, atol=1e-6)


def test_small_batches_clip_k_and_tiny_ones_have_no_graph():
    torch.manual_seed(0)
    learner = SparseGraphLearner(5, k=10, proj_dim=4).eval()
    x, y = torch.randn(5, 5), torch.randn(5, 2)
    with torch.no_grad():  # 5 nodes: 4 candidates each, k clipped to 3 (the closed form needs k+1)
        torch.testing.assert_close(learner(x).propagate(y), _batch_operator(learner.proj(x), 3) @ y)
        assert isinstance(learner(x[:2]), IdentityGraph)


@pytest.mark.parametrize("graph", ["batch", "anchor"])
def test_gnn2_forward_is_two_graph_layers_over_the_joint_operator(graph: str):
    torch.manual_seed(0)
    model = create_model("gnn2", num_classes=3, in_chans=1, image_size=4, k=2, graph=graph, hidden=6, proj_dim=5,
                         anchors=5, pool=2)
    model.train()(torch.rand(5, 1, 4, 4))  # fills the anchors in anchor mode
    model.eval()
    with torch.no_grad():  # biases start at zero, where a wrong sign would not show
        model.conv1.bias.normal_()
        model.head.bias.normal_()
    images = torch.rand(4, 1, 4, 4)
    with torch.no_grad():
        # pool=2: each 2×2 quarter of the 4×4 image averaged, flattened row-major.
        x = images.reshape(4, 2, 2, 2, 2).mean(dim=(2, 4)).flatten(1)
        w1, b1 = model.conv1.linear.weight, model.conv1.bias
        w2, b2 = model.head.linear.weight, model.head.bias
        proj = model.graph.proj
        if graph == "batch":
            op, nodes = _batch_operator(proj(x), 2), x
        else:
            xa = model.graph.anchors
            z, za = proj(x), proj(xa)
            n = xa.shape[0]
            pa = sparse_conditional_probs(
                squared_distances(za, za).masked_fill(torch.eye(n, dtype=torch.bool), float("inf")), 2)
            op = _joint_operator(sparse_conditional_probs(squared_distances(z, za), 2), (pa + pa.T) / 2 + torch.eye(n))
            nodes = torch.cat([x, xa])
        h = torch.relu(op @ nodes @ w1.T + b1)
        logits = (op @ h @ w2.T + b2)[:4]
        torch.testing.assert_close(model(images), logits, rtol=1e-5, atol=1e-5)


def test_the_closed_form_is_scale_free_down_to_tiny_distances():
    # p(j|i) is a ratio of distance gaps: scaling every distance leaves it unchanged, however small they are
    # (the 0/0 guard only takes over when all k+1 distances are equal).
    g = torch.Generator().manual_seed(0)
    d = torch.rand(6, 9, generator=g, dtype=torch.float64) + 0.1
    for scale in (1e-3, 1e-6):
        torch.testing.assert_close(sparse_conditional_probs(d * scale, 3), sparse_conditional_probs(d, 3))
        idx, w = sparse_conditional_neighbors(d * scale, 3)
        torch.testing.assert_close(torch.zeros_like(d).scatter(1, idx, w), sparse_conditional_probs(d, 3))


def test_k_zero_gives_no_neighbours_and_k_up_to_n_minus_one_is_allowed():
    d = torch.rand(4, 6, dtype=torch.float64)
    assert torch.equal(sparse_conditional_probs(d, 0), torch.zeros_like(d))
    idx, w = sparse_conditional_neighbors(d, 0)
    assert idx.shape == w.shape == (4, 0)
    p = sparse_conditional_probs(d, 5)  # 6 candidates: k + 1 = 6 of them, the farthest gets 0
    torch.testing.assert_close(p.sum(1), torch.ones(4, dtype=p.dtype))
    assert (p.gather(1, d.argmax(1, keepdim=True)) == 0).all()
    for bad in (-1, 6):
        with pytest.raises(ValueError, match=f"k={bad}"):
            sparse_conditional_probs(d, bad)


def test_squared_distances_by_hand():
    a = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    b = torch.tensor([[3.0, 4.0], [1.0, 2.0], [-1.0, 0.0]])
    expected = torch.tensor([[25.0, 5.0, 1.0], [8.0, 0.0, 8.0]])
    torch.testing.assert_close(squared_distances(a, b), expected)


def test_the_learner_refuses_bad_settings_and_describes_itself():
    with pytest.raises(ValueError, match="graph mode 'ring'"):
        SparseGraphLearner(4, mode="ring")
    with pytest.raises(ValueError, match="k=-1"):
        SparseGraphLearner(4, k=-1)
    with pytest.raises(ValueError, match="anchors=3, k=3"):
        SparseGraphLearner(4, k=3, mode="anchor", num_anchors=3)
    assert SparseGraphLearner(4, k=3, mode="anchor", num_anchors=4).anchors.shape == (4, 4)
    assert SparseGraphLearner(4, k=0, mode="anchor", num_anchors=1).proj is None
    learner, _ = _filled_anchor_learner(k=2, m=6)
    assert learner.describe() == {"mode": "anchor", "k": 2, "anchors": 6, "anchors_filled": 6}
    assert SparseGraphLearner(4, k=3).describe() == {"mode": "batch", "k": 3, "anchors": 0, "anchors_filled": 0}
    assert learner.extra_repr() == "mode=anchor, k=2"


def test_partly_filled_anchors_are_the_only_ones_used():
    torch.manual_seed(0)
    learner = SparseGraphLearner(5, k=2, proj_dim=3, mode="anchor", num_anchors=6).train()
    untrained = learner.eval()(torch.randn(4, 5))  # never trained: all 6 random anchors, none filled
    assert untrained.p.shape == (4, 6) and int(learner.anchors_filled) == 0
    first = torch.randn(4, 5)
    graph = learner.train()(first)  # 4 of the 6 anchors filled from this batch
    assert int(learner.anchors_filled) == 4 and graph.p.shape == (4, 4)
    torch.testing.assert_close(graph.anchor_x, first)
    graph = learner(torch.randn(3, 5))  # 2 more fill the rest; a third sample is not taken
    assert int(learner.anchors_filled) == 6 and graph.p.shape == (3, 6)
    torch.testing.assert_close(learner.anchors[:4].detach(), first)


def test_one_filled_anchor_leaves_no_neighbour_to_pick():
    torch.manual_seed(0)
    learner = SparseGraphLearner(5, k=2, proj_dim=3, mode="anchor", num_anchors=6).train()
    assert isinstance(learner(torch.randn(1, 5)), IdentityGraph)  # 1 anchor: k+1 = 2 candidates needed
    two = learner(torch.randn(1, 5))  # 2 anchors: k clipped to 1
    assert isinstance(two, AnchorGraph) and (two.p > 0).sum() == 1


def test_three_nodes_are_enough_for_one_neighbour():
    torch.manual_seed(0)
    learner = SparseGraphLearner(5, k=4, proj_dim=4).eval()
    x, y = torch.randn(3, 5), torch.randn(3, 2)
    with torch.no_grad():  # 2 candidates per node: k clipped to 1
        graph = learner(x)
        assert isinstance(graph, NeighbourGraph)
        torch.testing.assert_close(graph.propagate(y), _batch_operator(learner.proj(x), 1) @ y)


def test_no_graph_in_anchor_mode_has_no_anchors():
    learner = SparseGraphLearner(4, k=0, mode="anchor", num_anchors=1)
    assert not hasattr(learner, "anchors") and learner.describe()["anchors"] == 0
    assert isinstance(learner(torch.randn(3, 4)), IdentityGraph)


def test_a_checkpoint_of_partly_filled_anchors_keeps_using_only_those():
    torch.manual_seed(0)
    trained = SparseGraphLearner(5, k=2, proj_dim=3, mode="anchor", num_anchors=6).train()
    trained(torch.randn(3, 5))  # 3 of 6 filled
    resumed = SparseGraphLearner(5, k=2, proj_dim=3, mode="anchor", num_anchors=6)
    resumed.load_state_dict(trained.state_dict())
    graph = resumed.eval()(torch.randn(4, 5))
    assert int(resumed.anchors_filled) == 3 and graph.p.shape == (4, 3)


def test_gnn2_defaults_and_learning_rate_scale():
    from kdbench.models.zoo import student_lr_scale

    model = create_model("gnn2", num_classes=4)
    assert (model.graph.k, model.graph.mode, model.num_features, model.graph.proj.out_features, model.pool) == (
        10, "batch", 256, 256, 0)
    assert model.conv1.linear.in_features == 3 * 32 * 32 and model.head.drop.p == 0.5 and model.conv1.drop.p == 0.0
    assert create_model("gnn2", num_classes=4, graph="anchor").graph.anchors.shape == (256, 3 * 32 * 32)
    assert student_lr_scale("gnn2") == 0.2
