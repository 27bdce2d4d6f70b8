"""Sweep planning without a scheduler: grid expansion, idempotence through run records, the teacher zoo check,
dry runs, sweep files and job-state bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdbench.core.errors import UserError
from kdbench.execute.create_teacher import create_teacher
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.store.record_builder import new_record
from kdbench.store.records import RunStore
from kdbench.sweep.grid import Grid, expand
from kdbench.sweep.plan import make_plan
from kdbench.sweep.status import _parse_states, combine
from kdbench.sweep.sweep_file import grid_from_options, read_sweep_file, resources_from_options
from kdbench.teachers.zoo import WEIGHTS, TeacherZoo
from kdbench.train.method import get_method

REPO = Path(__file__).resolve().parent.parent
TINY_SETS = ["data.image_size=8", "teacher_recipe.batch_size=256"]


def tiny_grid(**kw) -> Grid:
    base = dict(methods=["ce", "kd"], teachers=["resnet18"], students=["resnet18"], seeds=[0, 1], epochs=1,
                teacher_epochs=1, batch_size=256, sets=list(TINY_SETS))
    return Grid(**{**base, **kw})


@pytest.fixture
def one_thread():
    """One torch thread: on a shared 2-core machine two threads contend and run several times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def kdbench_cli(*args: object):
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, [str(a) for a in args])


def test_ce_expands_once_per_student_and_kd_once_per_teacher():
    runs = expand(tiny_grid(teachers=["resnet18", "resnet34"]))
    by_method = {m: [r for r in runs if r.config.method == m] for m in ("ce", "kd")}
    assert len(by_method["ce"]) == 2  # 1 student × 2 seeds, not × 2 teachers
    assert len(by_method["kd"]) == 4  # 2 teachers × 2 seeds
    assert all(r.teacher is None and r.config.teacher is None for r in by_method["ce"])
    assert len({r.teacher.digest for r in by_method["kd"]}) == 2
    assert len({r.run_id for r in runs}) == 6


def test_sweep_run_ids_are_the_ids_kdbench_run_gives():
    run = expand(tiny_grid(methods=["kd"], seeds=[1]))[0]
    config = resolve_config(RunOptions(method="kd", teacher="resnet18", student="resnet18", seed=1, epochs=1,
                                       teacher_epochs=1, batch_size=256, sets=list(TINY_SETS)))
    assert run.run_id == config.run_id


def test_empty_students_mean_each_methods_default_student():
    runs = expand(tiny_grid(students=[], seeds=[0]))
    assert {r.config.method: r.config.student for r in runs} == {
        "ce": get_method("ce").default_student, "kd": get_method("kd").default_student}


def test_method_that_needs_a_teacher_without_teachers_is_a_user_error():
    with pytest.raises(UserError, match="--teachers"):
        expand(tiny_grid(teachers=[]))


def test_completed_and_diverged_runs_are_skipped_unless_forced(dirs):
    runs = expand(tiny_grid())
    store = RunStore(dirs["results"])
    for run, status in zip(runs[:2], ("completed", "diverged"), strict=True):
        store.write({**new_record(run.config), "status": status})
    store.write({**new_record(runs[2].config), "status": "failed"})  # failed runs are resubmitted

    plan = make_plan(runs, dirs["results"], dirs["zoo"])
    assert [r.run_id for r in plan.run_tasks] == [r.run_id for r in runs[2:]]
    assert sorted(why for _, why in plan.skipped) == ["completed", "diverged"]
    assert make_plan(runs, dirs["results"], dirs["zoo"], force=True).run_tasks == runs


def test_runs_in_flight_are_not_submitted_twice(dirs):
    runs = expand(tiny_grid())
    plan = make_plan(runs, dirs["results"], dirs["zoo"], in_flight={runs[0].run_id: "12_0"})
    assert runs[0] not in plan.run_tasks and len(plan.run_tasks) == 3
    assert plan.skipped[0][1] == "in flight (job 12_0)"


def test_teacher_job_only_when_the_zoo_lacks_a_verified_teacher(dirs, one_thread):
    runs = expand(tiny_grid())
    plan = make_plan(runs, dirs["results"], dirs["zoo"])
    assert [t.key.arch for t in plan.teacher_tasks] == ["resnet18"]
    # Only ce runs left to do: they need no teacher, so no teacher job.
    ce_only = [r for r in runs if r.teacher is None]
    assert make_plan(ce_only, dirs["results"], dirs["zoo"]).teacher_tasks == []

    _, card = create_teacher("resnet18", "digits", epochs=1, sets=list(TINY_SETS), zoo_dir=dirs["zoo"])
    key = plan.teacher_tasks[0].key
    assert Path(card["path"]) == TeacherZoo(dirs["zoo"]).entry_dir(key)  # the job trains what runs will load
    cached = make_plan(runs, dirs["results"], dirs["zoo"])
    assert cached.teacher_tasks == [] and [k.digest for k in cached.cached_teachers] == [key.digest]

    weights = TeacherZoo(dirs["zoo"]).entry_dir(key) / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:-1] + b"\0")  # corrupt: checksum no longer matches the card
    assert len(make_plan(runs, dirs["results"], dirs["zoo"]).teacher_tasks) == 1


def test_dry_run_prints_the_plan_and_submits_nothing(dirs):
    result = kdbench_cli("sweep", "--methods", "ce,kd", "--teachers", "resnet18", "--students", "resnet18",
                         "--seeds", "0,1", "--epochs", "1", "--teacher-epochs", "1", "--set", "data.image_size=8",
                         "--executor", "local", "--results-dir", dirs["results"], "--zoo-dir", dirs["zoo"],
                         "--dry-run")
    assert result.exit_code == 0, result.output
    assert "teacher job" in result.output and "resnet18 on digits" in result.output
    assert "array tasks" in result.output and "4 (after the teacher jobs)" in result.output
    assert "dry run: nothing submitted" in result.output
    assert list(dirs["results"].iterdir()) == []  # no sweep file, no submitit folder, no run


def test_sweep_file_keys_load_and_cli_flags_override_them(tmp_path):
    from kdbench.cli.sweep_options import _merge

    path = tmp_path / "s.yaml"
    path.write_text("methods: [ce, kd]\nteachers: resnet18\nseeds: 0-2\nsets: [data.image_size=8]\n"
                    "gpus-per-node: 2\nsbatch: {exclusive: '', nice: 10}\n")
    options = _merge(read_sweep_file(path), {"seeds": "5", "sets": ["kd.temperature=2"], "sbatch": ["nice=3"],
                                             "methods": None})
    grid = grid_from_options(options)
    assert grid.methods == ["ce", "kd"] and grid.teachers == ["resnet18"]
    assert grid.seeds == [5]
    assert grid.sets == ["data.image_size=8", "kd.temperature=2"]
    res = resources_from_options(options)
    assert res.gpus_per_node == 2 and res.sbatch == {"exclusive": "", "nice": "3"}
    assert grid_from_options(read_sweep_file(path)).seeds == [0, 1, 2]

    path.write_text("methods: ce\nepoch: 3\n")
    with pytest.raises(UserError, match="unknown key 'epoch'"):
        read_sweep_file(path)


def test_shipped_sweep_files_expand():
    embedded = read_sweep_file(REPO / "slurm" / "sweeps" / "embedded.yaml")
    grid = grid_from_options(embedded)
    assert grid.methods == ["ce", "kd", "fitnet", "at", "pkt", "rkd", "crd", "crd+kd", "dkd", "hkd", "hkd+kd",
                            "cnn2gnn", "sp", "cc", "vid", "nst", "ab", "fsp", "kdsvd", "ofd", "reviewkd", "dist",
                            "ctkd", "ofa"]
    assert grid.teachers == ["resnet18"] and grid.seeds == [0, 1, 2] and grid.students == []
    runs = expand(grid)
    # ce once per seed; every other method once per teacher and seed.
    assert len(runs) == 3 + 23 * 1 * 3
    # DKD's β is resolved per pair into each run's config (neither pair here is a published one: β = 8).
    assert {r.config.method_params["w_nckd"] for r in runs if r.config.method == "dkd"} == {8.0}
    assert {r.config.student for r in runs if r.config.method == "cnn2gnn"} == {get_method("cnn2gnn").default_student}

    # embedded-hard (docs/benchmark.md): 21 methods × 5 seeds into cifar_resnet8 on 10 % of the training split,
    # all from the one zoo teacher that trains on the full split; CNN2GNN's graph ablation on the same setting.
    hard = expand(grid_from_options(read_sweep_file(REPO / "slurm" / "sweeps" / "embedded-hard.yaml")))
    assert len(hard) == 5 + 20 * 5 and {r.config.student for r in hard} == {"cifar_resnet8"}
    assert {r.config.data_params["train_fraction"] for r in hard} == {0.1}
    # Batches of 47: 142 training images make three full batches (the loader drops a ragged last one).
    assert {(r.config.recipe.name, r.config.recipe.epochs, r.config.recipe.batch_size) for r in hard} == {
        ("embedded-hard-v2", 40, 47)}
    assert len({r.teacher.digest for r in hard if r.teacher}) == 1
    ablation = [expand(grid_from_options(read_sweep_file(REPO / "slurm" / "sweeps" / f"{name}.yaml")))
                for name in ("cnn2gnn-graph-ablation", "cnn2gnn-graph-ablation-teacher")]
    assert [len(runs) for runs in ablation] == [5 + 3 * 4 * 5, 2 * 3 * 5]
    assert {(r.config.method_params["graph"], r.config.method_params["graph_features"]) for r in ablation[1]} == {
        ("batch", "teacher"), ("memory", "teacher")}

    paper = grid_from_options(read_sweep_file(REPO / "slurm" / "sweeps" / "paper.yaml"))
    assert paper.datasets == ["cifar100", "stl10", "mini-imagenet"] and paper.teachers == ["resnet152"]
    assert resources_from_options(read_sweep_file(REPO / "slurm" / "sweeps" / "paper.yaml")).gpus_per_node == 1


def test_job_states_from_squeue_and_sacct_lines():
    states = _parse_states("12|COMPLETED\n13_0|RUNNING\n13_[1-3%2]|PENDING\n14|CANCELLED by 0\n")
    assert states == {"12": "COMPLETED", "13_0": "RUNNING", "13_1": "PENDING", "13_2": "PENDING",
                      "13_3": "PENDING", "14": "CANCELLED"}


@pytest.mark.parametrize(("record", "job", "expected"), [
    ("completed", "RUNNING", "completed"),  # the record is the truth once written
    ("failed", "PENDING", "pending"),  # a requeued run: its interrupted attempt wrote `failed`
    (None, "CANCELLED", "failed"),  # e.g. the array cancelled after a teacher failed
    ("running", "COMPLETED", "failed"),  # the job ended without completing the run
    ("running", None, "running"),
    (None, None, "pending"),
    ("running", "CANCELLED", "interrupted"),  # killed before its record could say so: reconciled
    ("interrupted", "TIMEOUT", "interrupted"),
    ("interrupted", "PENDING", "pending"),  # requeued
    ("interrupted", None, "interrupted"),  # scheduler unreachable: what the record knows
    ("running", "OUT_OF_MEMORY", "failed"),
])
def test_run_state_combines_record_and_job(record, job, expected):
    assert combine(record, job, has_job=True) == expected


def test_default_executor_is_local_when_sbatch_is_missing(monkeypatch, tmp_path):
    from kdbench.sweep.executors import choose_executor

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch, no scontrol
    kind, reason = choose_executor(None)
    assert kind == "local" and "no sbatch on PATH" in reason
    with pytest.raises(UserError, match="--executor local"):
        choose_executor("slurm")
    with pytest.raises(UserError, match="Valid: slurm, local, debug"):
        choose_executor("pbs")


@pytest.mark.parametrize(("content", "message"), [
    (None, "no such file"),
    ("dir", "is a directory, not a sweep file"),
    (b"methods: ce\nseeds: \xff\xfe\n", "not UTF-8 text (byte 0xff at offset 19)"),
    ("methods: [ce, kd\nseeds: 0\n", "not valid YAML at line 2, column 6 (expected ',' or ']', but got ':')"),
    ("- ce\n- kd\n", "expected a mapping of option: value"),
    ("methods: ce\nepoch: 3\n", "unknown key 'epoch'"),
])
def test_every_unreadable_sweep_file_gets_its_own_line(tmp_path, content, message):
    path = tmp_path / "sweep.yaml"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(UserError) as caught:
        read_sweep_file(path)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_warning_signal_fits_the_time_limit():
    from kdbench.sweep.time_limits import signal_delay_s

    assert signal_delay_s(1) == 6  # a tenth of a 1-minute limit, not submitit's 90 s
    assert signal_delay_s(10) == 60
    assert signal_delay_s(240) == 90  # capped on long partitions
    assert signal_delay_s(1, checkpoint_s=20) == 20  # never shorter than a checkpoint
