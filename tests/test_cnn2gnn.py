"""`cnn2gnn` end to end on digits (8 px, 1 epoch): both graph modes, the GNN student alone, the k = 0 ablation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import kdbench
from kdbench.core.errors import UserError
from kdbench.train.method import get_method

TINY = {"epochs": 1, "teacher_epochs": 1}
GNN = ["cnn2gnn.hidden=64", "cnn2gnn.anchors=64"]  # small widths keep the runs fast


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One torch thread for these tiny models: two threads on a shared 2-core machine thrash (measured 50× slower
    for a 64×768 matmul under load); restored afterwards so other modules keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def shared_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One zoo for the module, so the (cifar_resnet8) teacher trains once for every cnn2gnn run here."""
    root = tmp_path_factory.mktemp("cnn2gnn")
    return {"results_dir": root / "results", "zoo_dir": root / "zoo", "data_root": root / "data"}


def _run(method: str, dirs: dict[str, Path], sets: list[str], **kw) -> dict:
    return kdbench.run(method, sets=["data.image_size=8", *sets], **TINY, **dirs, **kw)


@pytest.mark.parametrize("graph", ["batch", "anchor"])
def test_cnn2gnn_trains_a_two_layer_gnn_in_each_graph_mode(shared_dirs: dict[str, Path], graph: str) -> None:
    record = _run("cnn2gnn", shared_dirs, [f"cnn2gnn.graph={graph}", *GNN],
                  teacher="cifar_resnet8")
    assert record["status"] == "completed"
    assert record["student"] == "gnn2" and record["student_info"]["layers"] == 2
    assert 0.0 <= record["metrics"]["top1_last"] <= 100.0 and record["inference"]["s_per_image"] > 0
    info = record["method_info"]["graph"]
    assert info["mode"] == graph and info["k"] == 10
    if graph == "anchor":
        assert info["anchors"] == 64 and info["anchors_filled"] == 64  # initialised from the training samples
    assert record["config"]["method_params"]["graph"] == graph


def test_cnn2gnn_k0_ablation_drops_the_graph(shared_dirs: dict[str, Path]) -> None:
    # The same settings as the batch-mode run above: its stored record is reused when that test ran first.
    with_graph = _run("cnn2gnn", shared_dirs, ["cnn2gnn.graph=batch", *GNN], teacher="cifar_resnet8")
    no_graph = _run("cnn2gnn", shared_dirs, ["cnn2gnn.graph=batch", *GNN, "cnn2gnn.k=0"], teacher="cifar_resnet8")
    assert no_graph["status"] == "completed" and no_graph["method_info"]["graph"]["k"] == 0
    # Only the graph projection (in → proj_dim, + bias) is gone: the two layers are the same size.
    projection = 3 * 8 * 8 * 256 + 256
    assert with_graph["student_info"]["params"] - no_graph["student_info"]["params"] == projection
    assert with_graph["teacher_metrics"]["sha256"] == no_graph["teacher_metrics"]["sha256"]  # one teacher


def test_gnn2_trains_alone_with_ce_and_takes_student_options(shared_dirs: dict[str, Path]) -> None:
    record = _run("ce", shared_dirs, ["student.k=0", "student.hidden=32"], student="gnn2")
    assert record["status"] == "completed" and record["teacher"] is None
    assert record["student_info"]["params"] == (3 * 8 * 8 * 32 + 32) + (32 * 10 + 10)  # an MLP, no projection


def test_student_options_reach_gnn2_only() -> None:
    spec = get_method("cnn2gnn")
    params = spec.params.__class__(graph="anchor", k=3)
    assert spec.cls.student_options(params, "gnn2")["graph"] == "anchor"
    assert spec.cls.student_options(params, "gnn2")["k"] == 3
    assert spec.cls.student_options(params, "resnet18") == {}


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["cnn2gnn.graph=knn"], "batch, anchor"),
        (["cnn2gnn.graph=anchor", "cnn2gnn.anchors=5"], "cnn2gnn.anchors"),
        (["cnn2gnn.k=-1"], "cnn2gnn.k"),
    ],
)
def test_bad_graph_options_are_user_errors(shared_dirs: dict[str, Path], sets: list[str], message: str) -> None:
    with pytest.raises(UserError, match=message):
        _run("cnn2gnn", shared_dirs, sets, teacher="cifar_resnet8")


def test_unknown_student_option_lists_valid_ones(shared_dirs: dict[str, Path]) -> None:
    with pytest.raises(UserError, match="Valid: k, graph"):
        _run("ce", shared_dirs, ["student.neighbours=3"], student="gnn2")
