"""Leaderboard labels a researcher needs: how a best epoch was chosen, transductive students, ladder-only columns,
and user text printed literally through rich (records written with RunStore from resolved configs)."""

from __future__ import annotations

from pathlib import Path

from test_leaderboard import make_config, write_run
from typer.testing import CliRunner

from kdbench.methods.cnn2gnn import CNN2GNN, CNN2GNNParams
from kdbench.report.leaderboard import build, leaderboard, render
from kdbench.store.records import RunStore
from kdbench.train.transductive import is_transductive

PAIR = "digits · resnet50 → resnet18 · digits-v1"
GNN_PAIR = "digits · resnet50 → gnn2 · digits-v1"


def _select_on_val(root: Path, run_id: str) -> None:
    store = RunStore(root)
    record = store.load(run_id)
    record["metrics"].update(best_selected_on="val", val_top1_best=50.0)
    store.write(record)


def test_best_columns_say_how_the_epoch_was_chosen_and_never_mix_selections(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    write_run(root, make_config("kd", teacher="resnet50", seed=0), 90.0)  # an older record: no best_selected_on
    _select_on_val(root, write_run(root, make_config("kd", teacher="resnet50", seed=1), 80.0))
    best = leaderboard(root, metric="top1_best")
    assert sorted(best.columns) == [f"{PAIR} · best (test-selected)", f"{PAIR} · best (val-selected)"]
    assert best.loc["kd", f"{PAIR} · best (val-selected)"] == "81.00 (1)"  # not averaged with the 91 of seed 0
    assert best.loc["kd", f"{PAIR} · best (test-selected)"] == "91.00 (1)"
    assert any(line.startswith("best (val-selected): ") for line in best.attrs["footer"])
    ladder = build(root, "ladder", metric="top1_best", distilled=["kd"])
    assert "top1_best" in ladder.table.columns and len(ladder.data) == 2
    runs = build(root, "runs").data
    assert sorted(runs["best_selected_on"]) == ["test", "val"]


def test_ladder_header_names_a_single_selection(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    write_run(root, make_config("ce", seed=0), 90.0)
    board = build(root, "ladder", metric="top1_best")
    assert "top1_best (test-selected)" in board.table.columns
    assert "top1_last" in build(root, "ladder").table.columns  # a last-epoch column has no selection


def _cnn2gnn(root: Path, seed: int, top1: float, **params: object) -> str:
    return write_run(root, make_config("cnn2gnn", teacher="resnet50", student="gnn2", seed=seed,
                                       method_params=CNN2GNNParams(**params).__dict__), top1, layers=2)


def test_batch_graph_students_are_marked_transductive_in_every_table(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    batch = _cnn2gnn(root, 0, 70.0, graph="batch", k=10)
    anchor = _cnn2gnn(root, 0, 60.0, graph="anchor", k=10)
    no_graph = _cnn2gnn(root, 0, 50.0, graph="batch", k=0)
    store = RunStore(root)
    assert [is_transductive(store.load(r)) for r in (batch, anchor, no_graph)] == [True, False, False]
    table = leaderboard(root)
    assert set(table.index) == {"teacher", "cnn2gnn [graph=batch, k=10] ‡", "cnn2gnn [graph=anchor, k=10]",
                                "cnn2gnn [graph=batch, k=0]"}
    assert ("‡ transductive: predictions depend on the other test images in the evaluation batch (batch size 256)"
            in table.attrs["footer"])
    ladder = build(root, "ladder").data
    assert sorted(ladder["model"]) == ["gnn2 [graph=anchor, k=10]", "gnn2 [graph=batch, k=0]",
                                       "gnn2 [graph=batch, k=10] ‡"]
    runs = build(root, "runs").data
    assert sorted(runs["method"]) == ["cnn2gnn", "cnn2gnn", "cnn2gnn ‡"]
    # Without a transductive run there is no mark and no footnote.
    assert not any("transductive" in line for line in leaderboard(root, where="transductive=False").attrs["footer"])


def test_a_recorded_answer_wins_and_the_method_class_decides_from_its_params() -> None:
    params = CNN2GNNParams(graph="batch", k=10)
    assert CNN2GNN.transductive(params, "gnn2", {}) is True
    assert CNN2GNN.transductive(params, "gnn2", {"graph": "anchor"}) is False  # an explicit student.* option wins
    assert CNN2GNN.transductive(params, "resnet18", {}) is False
    assert is_transductive({"transductive": False, "config": {}}) is False


def test_columns_of_students_trained_only_alone_move_to_the_ladder(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    write_run(root, make_config("kd", teacher="resnet50", seed=0), 90.0)
    write_run(root, make_config("ce", seed=0), 85.0)
    write_run(root, make_config("ce", student="resnet50", seed=0), 88.0, layers=50)
    board = build(root)
    assert list(board.table.columns) == [PAIR]
    assert any("--table ladder" in line for line in board.footer)
    assert "resnet50" in set(build(root, "ladder").data["model"])
    # A results folder of nothing but students alone still has a methods table.
    only_ce = leaderboard(root, where="method=ce")
    assert sorted(only_ce.columns) == ["digits · resnet18 · digits-v1", "digits · resnet50 · digits-v1"]


def test_rich_output_prints_labels_and_footers_literally(dirs: dict[str, Path], capsys) -> None:
    root = dirs["results"]
    for k, v in ((0, 50.0), (10, 60.0)):
        _cnn2gnn(root, 0, v, graph="anchor", k=k)
    board = build(root)
    board.footer.append("note: [cnn2gnn.k=0] is the no-graph ablation")
    text = render(board, "text")
    assert "[cnn2gnn.k=0] is the no-graph ablation" in text
    assert "[k=v]: settings that differ" in text and "cnn2gnn [graph=anchor, k=0]" in text

    from kdbench.cli.app import _register_commands, app
    from kdbench.cli.reporter import RichReporter

    _register_commands()
    shown = CliRunner().invoke(app, ["leaderboard", "--results-dir", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "cnn2gnn [graph=anchor, k=10]" in shown.stdout and "[k=v]: settings" in shown.stdout
    RichReporter(enabled=False).log("resumed run cnn2gnn [cnn2gnn.k=0]")
    assert "cnn2gnn [cnn2gnn.k=0]" in capsys.readouterr().err


def _needs_teacher_at_inference(root: Path, run_id: str) -> None:
    """What the runner records for a cnn2gnn student whose graph is built on the teacher's features (its
    `method_info`, from CNN2GNN.describe; tests/test_graph_memory.py checks the method answers it)."""
    store = RunStore(root)
    record = store.load(run_id)
    record["method_info"] = {"graph_features": "teacher", "inference_needs_teacher": True}
    store.write(record)


def test_students_that_need_their_teacher_at_inference_are_marked_in_every_table(dirs: dict[str, Path]) -> None:
    root = dirs["results"]
    own = _cnn2gnn(root, 0, 60.0, graph="memory", k=10)
    teachers = [_cnn2gnn(root, seed, 90.0 + seed, graph="memory", k=10, graph_features="teacher")
                for seed in (0, 1)]
    for run_id in teachers:
        _needs_teacher_at_inference(root, run_id)
    footnote = next(line for line in leaderboard(root).attrs["footer"] if line.startswith("§ "))
    assert "not a standalone student" in footnote
    table = leaderboard(root)
    # graph=memory is not the default (batch): every row shows it, though both rows share it.
    assert set(table.index) == {"teacher", "cnn2gnn [graph=memory, graph_features=student]",
                                "cnn2gnn [graph=memory, graph_features=teacher] §"}
    assert sorted(build(root, "ladder").data["model"]) == ["gnn2 [graph=memory, graph_features=student]",
                                                           "gnn2 [graph=memory, graph_features=teacher] §"]
    runs = build(root, "runs").data
    assert dict(zip(runs["run_id"], runs["method"], strict=True)) == {
        own: "cnn2gnn", teachers[0]: "cnn2gnn §", teachers[1]: "cnn2gnn §"}
    pivot = build(root, "pivot", rows=["cnn2gnn.graph_features"], cols=["cnn2gnn.k"])
    assert pivot.table.loc["teacher", "cnn2gnn.k=10"] == "90.50 ± 0.71 (2) §"
    assert pivot.table.loc["student", "cnn2gnn.k=10"].startswith("60.00 (1)†")  # fewer seeds, no §
    assert "§" not in pivot.table.loc["student", "cnn2gnn.k=10"]
    # The LaTeX rendering writes the mark as LaTeX, not as a raw character a T1 font lacks.
    latex = render(build(root, "methods"), "latex")
    assert r"\S{}" in latex and "§" not in latex
    # Without such a run: no mark, no footnote.
    alone = leaderboard(root, where="teacher_at_inference=False")
    assert not any(line.startswith("§") for line in alone.attrs["footer"])
    assert not any("§" in str(label) for label in alone.index)


def test_the_ladder_keeps_models_with_their_own_learning_rates_on_one_axis(dirs: dict[str, Path]) -> None:
    """The GNN's default recipe differs from a CNN's (lr 0.01 vs 0.05): the ladder labels each row's recipe with
    what differs and ranks them in one section; another data setting under the same recipe name is its own
    section, labelled by that setting (never by the teacher's recipe)."""
    import dataclasses

    root = dirs["results"]
    cnn = make_config("ce", seed=0)
    write_run(root, cnn, 95.0)
    gnn = make_config("cnn2gnn", teacher="resnet50", student="gnn2", seed=0,
                      method_params=CNN2GNNParams(graph="anchor").__dict__)
    write_run(root, dataclasses.replace(gnn, recipe=dataclasses.replace(gnn.recipe, lr=0.01)), 96.0, layers=2)
    few = make_config("ce", seed=0, sets=("data.image_size=8", "data.train_fraction=0.1"))
    write_run(root, few, 70.0)
    board = build(root, "ladder")
    data = board.data
    rows = sorted(zip(data["section"], data["recipe"], data["trained"], data["model"], strict=True))
    assert rows == [
        ("digits · digits-v1 [data.train_fraction=0.1]", "digits-v1 [data.train_fraction=0.1]", "alone (ce)",
         "resnet18"),
        ("digits · digits-v1 [data.train_fraction=—]", "digits-v1 [data.train_fraction=—, lr=0.01]",
         "cnn2gnn ← resnet50", "gnn2 [graph=anchor]"),
        ("digits · digits-v1 [data.train_fraction=—]", "digits-v1 [data.train_fraction=—, lr=0.05]", "alone (ce)",
         "resnet18"),
    ]
    assert list(data.loc[data["best"], "model"]) == ["gnn2 [graph=anchor]"]  # the best of its section: one axis
    assert not any("teacher_recipe" in label for label in data["recipe"])


def test_the_ladder_counts_fewer_seeds_within_each_section(dirs: dict[str, Path]) -> None:
    """A 3-seed section is not marked for having fewer seeds than another setting's 5-seed section."""
    root = dirs["results"]
    for seed in range(3):
        write_run(root, make_config("ce", seed=seed), 95.0 + seed)
    for seed in range(5):
        write_run(root, make_config("ce", seed=seed, sets=("data.image_size=8", "data.train_fraction=0.1")),
                  70.0 + seed)
    write_run(root, make_config("ce", student="resnet50", seed=0, sets=("data.image_size=8",
                                                                       "data.train_fraction=0.1")), 60.0)
    data = build(root, "ladder").data
    flags = {(s.split("=")[-1].rstrip("]"), m): f for s, m, f in zip(data["section"], data["model"],
                                                                      data["fewer_seeds"], strict=True)}
    assert flags == {("—", "resnet18"): False, ("0.1", "resnet18"): False, ("0.1", "resnet50"): True}
    empty = build(root, "ladder", where="method=kd")
    assert len(empty.data) == 0


def test_a_non_default_setting_shows_in_the_label_even_without_a_default_run_beside_it(dirs: dict[str, Path]) -> None:
    """`kd.temperature=2` alone (no default kd run to differ from) is still labelled; a setting every variant shares
    shows when it is not the method's default; default settings never do."""
    import dataclasses

    root = dirs["results"]

    def kd_run(seed: int, top1: float, **params: float) -> None:
        config = make_config("kd", teacher="resnet50", seed=seed)
        write_run(root, dataclasses.replace(config, method_params={**config.method_params, **params}), top1)

    kd_run(0, 90.0, temperature=2.0)
    assert set(leaderboard(root).index) == {"teacher", "kd [temperature=2]"}
    assert set(build(root, "runs").data["method"]) == {"kd"}
    assert set(build(root, "runs").table["variant"]) == {"temperature=2"}
    kd_run(0, 91.0, temperature=2.0, w_kd=0.5)
    assert set(leaderboard(root).index) == {"teacher", "kd [temperature=2, w_kd=0.9]",
                                            "kd [temperature=2, w_kd=0.5]"}
    # The defaults alone: the bare method name.
    other = dirs["zoo"]
    write_run(other, make_config("kd", teacher="resnet50", seed=0), 90.0)
    assert set(leaderboard(other).index) == {"teacher", "kd"}
