"""Anchor mode computes the anchors' side once per evaluation pass: the numbers are the ones computed afresh."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from kdbench.models import create_model
from kdbench.models.graph import SparseGraphLearner


def _trained_anchor_gnn(steps: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model("gnn2", num_classes=5, in_chans=1, image_size=8, graph="anchor", k=4, anchors=32,
                         hidden=16, proj_dim=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(steps):
        x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 5, (16,))
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def _count_anchor_sides(model: torch.nn.Module) -> list[int]:
    """Counts how often the anchors' side is computed (the learner's real method runs; only counted)."""
    learner: SparseGraphLearner = model.graph
    calls = [0]
    real = learner._anchor_side

    def counted(x: torch.Tensor):
        calls[0] += 1
        return real(x)

    learner._anchor_side = counted
    return calls


def test_eval_outputs_with_the_cache_equal_those_computed_afresh() -> None:
    model = _trained_anchor_gnn().eval()
    calls = _count_anchor_sides(model)
    batches = [torch.randn(n, 1, 8, 8) for n in (7, 16, 3)]
    with torch.no_grad():
        cached = [model(x) for x in batches]
    assert calls[0] == 1  # once for the whole pass, not once per batch
    with torch.enable_grad():  # autograd on: the cache steps aside and everything is computed afresh
        fresh = [model(x).detach() for x in batches]
    assert calls[0] == 1 + len(batches)
    for a, b in zip(cached, fresh, strict=True):
        assert torch.equal(a, b)


def test_a_weight_update_invalidates_the_cache() -> None:
    model = _trained_anchor_gnn().eval()
    calls = _count_anchor_sides(model)
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        before = model(x)
        for p in model.parameters():  # an in-place update, as an optimizer step does
            p.add_(0.01)
        after = model(x)
    assert calls[0] == 2 and not torch.equal(before, after)
    with torch.enable_grad():
        assert torch.equal(after, model(x).detach())
    model.load_state_dict(_trained_anchor_gnn(steps=1).state_dict())  # loading weights invalidates it too
    with torch.no_grad():
        loaded = model(x)
    with torch.enable_grad():
        assert torch.equal(loaded, model(x).detach())
    assert calls[0] == 5


def test_training_never_reuses_the_cache() -> None:
    model = _trained_anchor_gnn()
    calls = _count_anchor_sides(model)
    with torch.no_grad():
        model(torch.randn(4, 1, 8, 8))
        model(torch.randn(4, 1, 8, 8))
    assert calls[0] == 2
