"""CNN2GNN's `memory` graph mode (a momentum memory of the training samples) and `graph_features=teacher`."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_leaderboard import make_config, write_run

from kdbench.core.errors import UserError
from kdbench.execute.reevaluate import reevaluate
from kdbench.methods.cnn2gnn import CNN2GNN, CNN2GNNParams
from kdbench.models import create_model
from kdbench.models.graph import AnchorGraph, IdentityGraph, SparseGraphLearner
from kdbench.models.zoo import is_transductive_model
from kdbench.store.exports import run_teacher_file
from kdbench.store.records import RunStore
from kdbench.train.method import Batch, MethodContext


def _learner(momentum: float = 0.5) -> SparseGraphLearner:
    torch.manual_seed(0)
    return SparseGraphLearner(4, k=2, proj_dim=3, mode="memory", memory_momentum=momentum)


def test_memory_stores_the_first_visit_then_averages_with_momentum_by_index() -> None:
    learner = _learner(momentum=0.25)
    x1, x2 = torch.randn(5, 4), torch.randn(5, 4)
    index = torch.tensor([4, 0, 2, 1, 3])
    assert isinstance(learner(x1, index=index), IdentityGraph)  # an empty memory: no neighbours yet
    with torch.no_grad():
        z1, z2 = learner.proj(x1), learner.proj(x2)
    assert torch.allclose(learner.memory_z[index], z1) and bool(learner.memory_seen.all())
    learner(x2[:2], index=index[:2])  # samples 4 and 0 come back: m ← 0.25·m + 0.75·z
    assert torch.allclose(learner.memory_z[index[:2]], 0.25 * z1[:2] + 0.75 * z2[:2])
    assert torch.allclose(learner.memory_z[index[2:]], z1[2:])  # the others are untouched
    assert torch.equal(learner.memory_x[index[:2]], x2[:2]) and torch.equal(learner.memory_x[index[2:]], x1[2:])


def test_training_never_links_a_sample_to_itself_evaluation_may_and_never_writes() -> None:
    learner = _learner()
    x = torch.randn(6, 4)
    learner(x, index=torch.arange(6))
    # Training: sample 0 is its own nearest memory entry (distance 0) yet reads only the others.
    graph = learner(x[:1], index=torch.tensor([0]))
    assert isinstance(graph, AnchorGraph) and graph.p.shape[1] == 2
    assert not any(torch.equal(row, x[0]) for row in graph.anchor_x)
    learner.eval()
    before = learner.memory_z.clone()
    graph = learner(x[:1])
    assert any(torch.equal(row, x[0]) for row in graph.anchor_x)  # at evaluation the memory is just data
    assert torch.equal(learner.memory_z, before)
    learner.train()
    with pytest.raises(ValueError, match="index"):
        learner(x)


def test_gnn2_memory_mode_is_inductive_and_its_memory_survives_a_state_dict_round_trip() -> None:
    torch.manual_seed(0)
    model = create_model("gnn2", num_classes=3, in_chans=1, image_size=4, k=3, graph="memory", hidden=8,
                         proj_dim=4)
    images = torch.randn(20, 1, 4, 4)
    for _ in range(2):
        model(images, index=torch.arange(20)).sum().backward()
    model.eval()
    test = torch.randn(5, 1, 4, 4)
    with torch.no_grad():
        together = model(test)
        alone = torch.cat([model(test[i : i + 1]) for i in range(5)])
    assert torch.allclose(together, alone, atol=1e-6)  # a test image never reads the other test images
    assert not is_transductive_model("gnn2", {"graph": "memory", "k": 3})
    fresh = create_model("gnn2", num_classes=3, in_chans=1, image_size=4, k=3, graph="memory", hidden=8,
                         proj_dim=4)
    fresh.load_state_dict(model.state_dict())  # built with an empty memory: takes the saved one's size
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(test), together)
    assert fresh.graph.describe()["memory_filled"] == 20


def test_graph_features_options_are_checked() -> None:
    with pytest.raises(UserError, match="graph_features=teacher needs graph=batch or graph=memory"):
        CNN2GNNParams(graph="anchor", graph_features="teacher")
    with pytest.raises(UserError, match="unknown cnn2gnn.graph_features"):
        CNN2GNNParams(graph_features="both")
    with pytest.raises(UserError, match="memory_momentum"):
        CNN2GNNParams(memory_momentum=1.5)


def test_teacher_features_build_the_graph_in_training_and_at_evaluation() -> None:
    torch.manual_seed(0)
    params = CNN2GNNParams(graph="memory", k=3, hidden=8, proj_dim=4, graph_features="teacher")
    student = create_model("gnn2", num_classes=10, in_chans=3, image_size=8,
                           **CNN2GNN.student_options(params, "gnn2"))
    teacher = create_model("test_resnet", num_classes=10, in_chans=3, image_size=8).eval()
    ctx = MethodContext(num_classes=10, in_chans=3, image_size=8, num_train=32,
                        train_targets=torch.arange(32) % 10, epochs=1, seed=0)
    distiller = CNN2GNN(student, teacher, params, ctx)
    images = torch.randn(32, 3, 8, 8)
    batch = Batch(images, torch.arange(32) % 10, torch.arange(32))
    for _ in range(2):
        _, losses = distiller.forward_train(batch)
    sum(losses.values()).backward()
    assert distiller.graph_proj.weight.grad is not None and distiller.graph_proj.weight.grad.abs().sum() > 0
    assert distiller.describe()["inference_needs_teacher"] is True
    distiller.eval()
    with torch.no_grad():
        before = distiller(images[:4])
        for p in teacher.parameters():  # another teacher: other features, another graph, other predictions
            p.add_(0.5 * torch.randn_like(p))
        assert not torch.allclose(distiller(images[:4]), before)


def test_a_student_that_predicts_through_its_teacher_is_never_judged_or_used_alone(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    params = CNN2GNNParams(graph="memory", graph_features="teacher")
    run_id = write_run(root, make_config("cnn2gnn", teacher="resnet50", student="gnn2",
                                         method_params=params.__dict__), 90.0)
    store = RunStore(root)
    record = store.load(run_id)
    record["method_info"] = {"graph_features": "teacher", "inference_needs_teacher": True}
    store.write(record)
    with pytest.raises(UserError, match="cannot be evaluated without its teacher"):
        reevaluate(run_id, [1], results_dir=root, device="cpu")
    with pytest.raises(UserError, match="cannot serve alone as a teacher"):
        run_teacher_file(f"run:{run_id}", root)
