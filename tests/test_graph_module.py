"""The differentiable sparse graph head and the GNN student on random inputs (no training, no data)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from kdbench.methods.cnn2gnn import SparseGraphLearner, sparse_conditional_probs
from kdbench.models import create_model
from kdbench.models.graph import NeighbourGraph, sparse_conditional_neighbors, squared_distances


def _distances(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(rows, cols, generator=g, dtype=torch.float64) * 10  # continuous: no ties


@pytest.mark.parametrize("k", [1, 3, 10])
def test_every_row_has_exactly_k_nonzeros_summing_to_one(k: int) -> None:
    p = sparse_conditional_probs(_distances(32, 40), k)
    assert ((p > 0).sum(1) == k).all()
    torch.testing.assert_close(p.sum(1), torch.ones(32, dtype=p.dtype))
    assert (p >= 0).all()


def test_weights_go_to_the_k_nearest_and_decrease_with_distance() -> None:
    d = _distances(8, 20)
    p = sparse_conditional_probs(d, 5)
    nearest = d.topk(5, largest=False).indices
    assert torch.equal(p.gather(1, nearest) > 0, torch.ones(8, 5, dtype=torch.bool))
    order = d.argsort(1)
    sorted_p = p.gather(1, order)[:, :5]
    assert (sorted_p[:, :-1] >= sorted_p[:, 1:]).all()


def test_self_excluded_by_inf_never_chosen() -> None:
    d = _distances(10, 10).masked_fill(torch.eye(10, dtype=torch.bool), float("inf"))
    p = sparse_conditional_probs(d, 4)
    assert (p.diagonal() == 0).all()
    assert torch.isfinite(p).all()


def test_all_equal_distances_give_uniform_weights_not_nan() -> None:
    d = torch.full((3, 12), 2.5, requires_grad=True)
    p = sparse_conditional_probs(d, 4)
    torch.testing.assert_close(p.sum(1), torch.ones(3))
    assert ((p > 0).sum(1) == 4).all() and torch.allclose(p[p > 0], torch.tensor(0.25))
    p.sum().backward()
    assert torch.isfinite(d.grad).all()


def test_k_too_large_for_the_candidates_is_refused() -> None:
    with pytest.raises(ValueError, match="k=5"):
        sparse_conditional_probs(_distances(2, 5), 5)


def _simplex_solution(d: np.ndarray, gamma: float) -> np.ndarray:
    """min_p Σ p_j d_j + γ p_j² on the probability simplex, by a generic constrained solver."""
    n = len(d)
    result = minimize(
        lambda p: p @ d + gamma * p @ p, np.full(n, 1.0 / n), jac=lambda p: d + 2 * gamma * p, method="SLSQP",
        bounds=[(0.0, None)] * n, constraints=[{"type": "eq", "fun": lambda p: p.sum() - 1.0}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    assert result.success, result.message
    return result.x


def test_closed_form_solves_the_regularised_simplex_problem() -> None:
    k = 4
    d = _distances(5, 15, seed=3)
    p = sparse_conditional_probs(d, k)
    for i in range(d.shape[0]):
        s = d[i].sort().values
        gamma = float(k * s[k] - s[:k].sum()) / 2  # the γ_i the closed form implies
        expected = _simplex_solution(d[i].numpy(), gamma)
        np.testing.assert_allclose(p[i].numpy(), expected, atol=1e-5)


def test_sparse_form_matches_dense_form() -> None:
    d = _distances(6, 30)
    idx, w = sparse_conditional_neighbors(d, 7)
    assert idx.shape == w.shape == (6, 7)
    dense = torch.zeros_like(d).scatter(1, idx, w)
    torch.testing.assert_close(dense, sparse_conditional_probs(d, 7))


@pytest.mark.parametrize("dense_max_nodes", [0, 1000], ids=["sparse-csr", "dense"])
def test_gradcheck_through_graph_wrt_projection(dense_max_nodes: int) -> None:
    torch.manual_seed(0)
    learner = SparseGraphLearner(5, k=3, proj_dim=4, dense_max_nodes=dense_max_nodes).double()
    x = torch.randn(12, 5, dtype=torch.float64)
    y = torch.randn(12, 3, dtype=torch.float64)
    weight = learner.proj.weight.detach().clone().requires_grad_(True)

    def propagate(w: torch.Tensor) -> torch.Tensor:
        z = x @ w.T + learner.proj.bias
        d = squared_distances(z, z).masked_fill(torch.eye(12, dtype=torch.bool), float("inf"))
        idx, wts = sparse_conditional_neighbors(d, 3)
        return NeighbourGraph(idx, wts, dense_max_nodes).propagate(y)

    assert torch.autograd.gradcheck(propagate, (weight,), eps=1e-6, atol=1e-6)


def test_sparse_propagation_equals_dense_normalised_adjacency() -> None:
    torch.manual_seed(0)
    n, k = 40, 5
    d = _distances(n, n).masked_fill(torch.eye(n, dtype=torch.bool), float("inf"))
    p = sparse_conditional_probs(d, k)
    a = (p + p.T) / 2 + torch.eye(n, dtype=p.dtype)
    s = a.sum(1).rsqrt()
    a_hat = s[:, None] * a * s[None, :]
    y = torch.randn(n, 7, dtype=torch.float64)
    idx, w = sparse_conditional_neighbors(d, k)
    torch.testing.assert_close(NeighbourGraph(idx, w, dense_max_nodes=0).propagate(y), a_hat @ y)
    torch.testing.assert_close(NeighbourGraph(idx, w, dense_max_nodes=n).propagate(y), a_hat @ y)


def _gnn(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("gnn2", num_classes=10, in_chans=1, image_size=8, hidden=32, proj_dim=16, **options).eval()


@pytest.mark.parametrize("dense_max_nodes", [0, 1000], ids=["sparse-csr", "dense"])
def test_batch_mode_is_permutation_equivariant(dense_max_nodes: int) -> None:
    model = _gnn(graph="batch", k=5)
    model.graph.dense_max_nodes = dense_max_nodes
    x = torch.randn(50, 1, 8, 8)
    perm = torch.randperm(50)
    with torch.no_grad():
        torch.testing.assert_close(model(x[perm]), model(x)[perm], atol=1e-5, rtol=1e-5)


def test_batch_mode_prediction_depends_on_the_batch() -> None:
    model = _gnn(graph="batch", k=5)
    x = torch.randn(40, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(model(x[:20])[0], model(torch.cat([x[:1], x[20:39]]))[0])


def test_batch_of_one_has_no_neighbours() -> None:
    model = _gnn(graph="batch", k=5)
    x = torch.randn(1, 1, 8, 8)
    with torch.no_grad():
        h = torch.relu(model.conv1.linear(x.flatten(1)) + model.conv1.bias)
        torch.testing.assert_close(model(x), model.head.linear(h) + model.head.bias)


def test_anchor_mode_gives_a_sample_the_same_logits_in_any_batch() -> None:
    model = _gnn(graph="anchor", k=5, anchors=24)
    x = torch.randn(60, 1, 8, 8)
    model.train()
    model(x[:16])
    model(x[16:40])  # fills the 24 anchors from the first training samples seen
    assert int(model.graph.anchors_filled) == 24
    torch.testing.assert_close(model.graph.anchors.detach(), x[:24].flatten(1))
    model.eval()
    with torch.no_grad():
        alone = model(x[40:41])
        in_batch_a = model(x[40:50])[0]
        in_batch_b = model(torch.cat([x[50:60], x[40:41]]))[-1]
    torch.testing.assert_close(in_batch_a, alone[0])
    torch.testing.assert_close(in_batch_b, alone[0])
    assert "graph.anchors_filled" in model.state_dict()


def test_k0_is_an_mlp_on_the_same_input() -> None:
    model = _gnn(graph="batch", k=0)
    assert model.graph.proj is None  # no graph parameters at all
    x = torch.randn(30, 1, 8, 8)
    with torch.no_grad():
        h = torch.relu(model.conv1.linear(x.flatten(1)) + model.conv1.bias)
        expected = model.head.linear(h) + model.head.bias
        torch.testing.assert_close(model(x), expected)
        torch.testing.assert_close(model(x[3:4]), expected[3:4])  # no neighbour mixing


def test_gnn_exposes_hidden_layer_as_embedding_and_stage() -> None:
    from kdbench.models import FeatureTap

    model = _gnn(graph="batch", k=5)
    assert model.num_layers == 2 and model.feature_info[0]["num_chs"] == 32
    features = FeatureTap(model, stages=[0], embedding=True).probe(torch.randn(20, 1, 8, 8))
    assert features.embedding.shape == (20, 32)
    torch.testing.assert_close(features.embedding, features.stages[0])
    assert (features.embedding >= 0).all()  # H is post-ReLU


def test_initialised_anchors_survive_a_checkpoint_and_are_not_refilled() -> None:
    trained = _gnn(graph="anchor", k=5, anchors=24).train()
    trained(torch.randn(30, 1, 8, 8))
    resumed = _gnn(graph="anchor", k=5, anchors=24)
    resumed.load_state_dict(trained.state_dict())
    resumed.train()
    resumed(torch.randn(30, 1, 8, 8))  # a new training batch must not overwrite the restored anchors
    torch.testing.assert_close(resumed.graph.anchors, trained.graph.anchors)
    assert int(resumed.graph.anchors_filled) == 24


@pytest.mark.parametrize("graph", ["batch", "anchor"])
def test_bfloat16_autocast_above_the_dense_threshold(graph: str) -> None:
    model = _gnn(graph=graph, k=5, anchors=24).train()
    x = torch.randn(300, 1, 8, 8)  # > DENSE_MAX_NODES: the sparse CSR path in batch mode
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    logits.float().sum().backward()
    assert torch.isfinite(logits).all() and torch.isfinite(model.graph.proj.weight.grad).all()


# gnn2's own option checks at their edges: a user's `--set student.k=...` reaches gnn2 unchecked by cnn2gnn.
GNN2_EDGES = [  # (option, accepted at the edge, refused just outside)
    ("k", [0, 1000], [-1, 1001]),
    ("hidden", [1, 65536], [0, 65537]),
    ("proj_dim", [1, 65536], [0, 65537]),
    ("dropout", [0.0, 1.0], [-0.001, 1.001]),
    ("pool", [0, 8], [-1, 9]),  # up to the image side (8 here)
]


@pytest.mark.parametrize(("option", "accepted", "refused"), GNN2_EDGES, ids=[e[0] for e in GNN2_EDGES])
def test_gnn2_options_are_accepted_at_their_edges_and_refused_outside(option, accepted, refused) -> None:
    from kdbench.core.errors import UserError
    from kdbench.models.gnn import gnn2

    small = {"num_classes": 3, "in_chans": 1, "image_size": 8, "hidden": 4, "proj_dim": 4, "k": 2}
    for value in accepted:
        model = gnn2(**{**small, option: value})
        assert model is not None
    for value in refused:
        with pytest.raises(UserError, match=rf"gnn2\.{option}={value:g} is out of range"):
            gnn2(**{**small, option: value})


def test_gnn2_anchor_count_is_checked_in_anchor_mode_only_and_whole_numbers_are_required() -> None:
    from kdbench.core.errors import UserError
    from kdbench.models.gnn import gnn2

    small = {"num_classes": 3, "in_chans": 1, "image_size": 8, "hidden": 4, "proj_dim": 4}
    assert gnn2(**small, graph="anchor", k=3, anchors=4) is not None  # k + 1 anchors: the least that works
    assert gnn2(**small, graph="anchor", k=3, anchors=1_000_000).graph is not None
    for anchors in (3, 1_000_001):
        with pytest.raises(UserError, match=rf"gnn2\.anchors={re.escape(f'{anchors:g}')} is out of range"):
            gnn2(**small, graph="anchor", k=3, anchors=anchors)
    assert gnn2(**small, graph="batch", k=3, anchors=1) is not None  # unused outside anchor mode
    assert gnn2(**small, graph="anchor", k=0, anchors=0) is not None  # no graph: no anchors needed
    with pytest.raises(UserError, match=r"gnn2\.anchors=1 is out of range"):
        gnn2(**small, graph="anchor", k=1, anchors=1)  # one neighbour already needs two anchors
    for option in ("k", "hidden", "proj_dim", "anchors", "pool"):
        with pytest.raises(UserError, match=rf"gnn2\.{option}=2\.5 must be a whole number"):
            gnn2(**{**small, option: 2.5})
        with pytest.raises(UserError, match=rf"gnn2\.{option}=True must be a whole number"):
            gnn2(**{**small, option: True})
    with pytest.raises(UserError, match="unknown graph mode 'ring'"):
        gnn2(**small, graph="ring")
    with pytest.raises(UserError, match="gnn2 has no option 'width'"):
        gnn2(**small, width=3)
