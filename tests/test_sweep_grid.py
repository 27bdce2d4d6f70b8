"""Hyperparameter grids and method-scoped settings in sweeps, planned without a scheduler (`--dry-run --json`):
which runs a `--grid` / `--set` reaches, their product, validation before submission, dedup by run id, the
sweep file's `grid:` and the temperature ablation sweep."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kdbench.core.errors import UserError
from kdbench.execute.resolve import RunOptions, resolve_config
from kdbench.spec.scoped_sets import parse_grid, set_items, split_values
from kdbench.store.record_builder import new_record
from kdbench.store.records import RunStore
from kdbench.sweep.grid import Grid, count_runs, expand
from kdbench.sweep.sweep_file import grid_from_options, read_sweep_file

REPO = Path(__file__).resolve().parent.parent


def kdbench_cli(*args: object):
    from kdbench.cli.app import _register_commands, app

    _register_commands()
    return CliRunner().invoke(app, [str(a) for a in args])


def dry_run_json(*args: object) -> list[dict]:
    res = kdbench_cli("sweep", *args, "--executor", "local", "--dry-run", "--json")
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def by_method(entries: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in entries:
        out.setdefault(e["method"], []).append(e)
    return out


def test_grid_multiplies_only_its_methods_runs_and_a_scoped_set_reaches_only_its_method(dirs):
    entries = dry_run_json("--methods", "ce,kd", "--teachers", "resnet18", "--seeds", "0",
                           "--grid", "kd.temperature=2,4", "--set", "kd.w_ce=0.5")
    runs = by_method(entries)
    assert len(runs["ce"]) == 1 and len(runs["kd"]) == 2
    assert sorted(e["method_params"]["temperature"] for e in runs["kd"]) == [2.0, 4.0]
    assert all(e["method_params"]["w_ce"] == 0.5 for e in runs["kd"])
    assert runs["ce"][0]["method_params"]["w_ce"] == 1.0  # ce has a w_ce too; kd.w_ce is not its setting
    assert [e["grid"] for e in runs["kd"]] == [{"kd.temperature": 2.0}, {"kd.temperature": 4.0}]
    assert runs["ce"][0]["grid"] == {}
    assert all(e["completed"] is False and e["planned"] == "submit" for e in entries)
    assert len({e["run_id"] for e in entries}) == 3
    # Each planned id is the id `kdbench run` gives the same options.
    kd4 = next(e for e in runs["kd"] if e["method_params"]["temperature"] == 4.0)
    assert kd4["run_id"] == resolve_config(RunOptions(method="kd", teacher="resnet18", seed=0,
                                                      sets=["kd.w_ce=0.5", "kd.temperature=4"])).run_id


def test_several_grids_form_their_product_and_common_scopes_reach_every_method(dirs):
    runs = expand(Grid(methods=["ce", "kd"], teachers=["resnet18"], seeds=[0, 1],
                       grid={"kd.temperature": ["1", "2", "4"], "kd.w_kd": ["0.5", "0.9"],
                             "recipe.weight_decay": ["0.0005", "0.0001"]}))
    kd = [r for r in runs if r.config.method == "kd"]
    ce = [r for r in runs if r.config.method == "ce"]
    assert len(kd) == 3 * 2 * 2 * 2 and len(ce) == 2 * 2  # recipe.* multiplies ce too, kd.* does not
    assert {(r.config.method_params["temperature"], r.config.method_params["w_kd"], r.config.recipe.weight_decay)
            for r in kd} == {(t, w, wd) for t in (1.0, 2.0, 4.0) for w in (0.5, 0.9) for wd in (5e-4, 1e-4)}


def test_a_named_variant_takes_its_class_scope(dirs):
    runs = expand(Grid(methods=["crd", "crd+kd"], teachers=["resnet18"], grid={"crd.w_crd": ["0.4", "0.8"]}))
    assert sorted((r.config.method, r.config.method_params["w_crd"]) for r in runs) == [
        ("crd", 0.4), ("crd", 0.8), ("crd+kd", 0.4), ("crd+kd", 0.8)]


def test_grid_points_that_resolve_to_one_run_id_plan_one_run(dirs):
    # kd's default temperature is 4: "4" and "4.0" are the same run, and so is the point the default gives.
    runs = expand(Grid(methods=["kd"], teachers=["resnet18"], grid={"kd.temperature": ["4", "4.0", "2"]}))
    assert len(runs) == 2


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        (dict(methods=["ce"], sets=["kd.w_ce=0.5"]), "--set kd.w_ce=0.5: no method of this sweep (ce) has the scope"),
        (dict(methods=["ce"], grid={"kd.temperature": ["1", "2"]}), "--grid kd.temperature: no method of this sweep"),
        (dict(methods=["kd"], teachers=["resnet18"], grid={"kd.temperature": ["2", "-1"]}),
         "kd.temperature=-1 is out of range"),
        (dict(methods=["kd"], teachers=["resnet18"], grid={"kd.temprature": ["2"]}),
         "unknown option 'kd.temprature'"),
        (dict(methods=["kd"], teachers=["resnet18"], sets=["kd.temperature=2"], grid={"kd.temperature": ["1"]}),
         "kd.temperature is both in --set and in --grid"),
    ],
)
def test_a_setting_no_run_takes_or_a_value_out_of_range_is_refused_before_planning(dirs, grid, message):
    with pytest.raises(UserError, match=re.escape(message)):
        expand(Grid(**grid))


def test_a_wrong_grid_on_the_command_line_is_one_line_and_nothing_is_written(dirs):
    res = kdbench_cli("sweep", "--methods", "ce,kd", "--teachers", "resnet18", "--grid", "kd.temperature=2,0",
                      "--executor", "local")
    assert isinstance(res.exception, UserError) and "kd.temperature=0 is out of range" in str(res.exception)
    assert not (dirs["results"] / "sweeps").exists()


@pytest.mark.parametrize("grid", [
    Grid(methods=["ce", "kd"], teachers=["resnet18", "resnet34"], students=["resnet10t"], seeds=[0, 1],
         chains=[["resnet50", "resnet34", "resnet18"]],
         grid={"kd.temperature": ["1", "2"], "recipe.lr": ["0.1", "0.2"]}),
    Grid(methods=["ce", "kd"], pairs=[("resnet34", "resnet18"), (None, "resnet10t")], seeds=[0, 1, 2]),
], ids=["teachers × students, chains, grids", "pairs"])
def test_the_count_the_cap_checks_is_the_number_of_runs_expanded(grid):
    # The cap (--max-runs) is checked on count_runs, before expanding: it must count what expand() yields
    # (these grids have no two points with one run id).
    assert count_runs(grid) == len(expand(grid))
    with pytest.raises(UserError, match=f"has {count_runs(grid)} runs, more than the {count_runs(grid) - 1} allowed"):
        expand(grid, max_runs=count_runs(grid) - 1)


def test_grid_values_parse_from_flags_and_yaml_alike():
    assert split_values("(1,2),(2,3), 4") == ["(1,2)", "(2,3)", "4"]
    assert parse_grid(["kd.temperature=1,2", "kd.w_kd=0.5"]) == {"kd.temperature": ["1", "2"], "kd.w_kd": ["0.5"]}
    assert parse_grid({"kd": {"temperature": [1, 2.5]}, "recipe.nesterov": [True, False]}) == {
        "kd.temperature": ["1", "2.5"], "recipe.nesterov": ["true", "false"]}
    assert parse_grid({"kd.temperature": "1, 2, 2"}) == {"kd.temperature": ["1", "2"]}
    assert set_items({"kd": {"temperature": 2}, "data.image_size": 8}) == ["kd.temperature=2", "data.image_size=8"]
    with pytest.raises(UserError, match="expects SCOPE.KEY=V1,V2"):
        parse_grid(["temperature=1,2"])
    with pytest.raises(UserError, match="no values"):
        parse_grid(["kd.temperature="])


def test_the_command_line_overrides_the_sweep_files_grid_key_by_key(dirs, tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("methods: kd\nteachers: resnet18\ngrid: {kd.temperature: [1, 2, 4, 8], kd.w_kd: [0.5, 0.9]}\n"
                    "set: {kd: {w_ce: 0.2}}\n")  # `set:` as in a run's config file
    from_file = dry_run_json("--config", path)
    assert len(from_file) == 8 and {e["method_params"]["w_ce"] for e in from_file} == {0.2}
    # --set of a gridded key replaces its values; --grid of a set key replaces the setting.
    fixed_t = dry_run_json("--config", path, "--set", "kd.temperature=3")
    assert len(fixed_t) == 2 and {e["method_params"]["temperature"] for e in fixed_t} == {3.0}
    regrid = dry_run_json("--config", path, "--grid", "kd.w_ce=0.1,0.3", "--grid", "kd.w_kd=0.7")
    assert len(regrid) == 4 * 2 and {e["method_params"]["w_kd"] for e in regrid} == {0.7}
    assert {e["method_params"]["w_ce"] for e in regrid} == {0.1, 0.3}


def test_dry_run_json_says_which_runs_already_have_a_completed_record(dirs):
    grid = Grid(methods=["kd"], teachers=["resnet18"], grid={"kd.temperature": ["2", "4"]})
    done = expand(grid)[0]
    record = new_record(done.config)
    record["status"] = "completed"
    RunStore(dirs["results"]).write(record)
    entries = dry_run_json("--methods", "kd", "--teachers", "resnet18", "--grid", "kd.temperature=2,4")
    status = {e["run_id"]: (e["completed"], e["planned"]) for e in entries}
    assert status[done.run_id] == (True, "completed")
    assert sorted(status.values()) == [(False, "submit"), (True, "completed")]


def test_json_needs_dry_run(dirs):
    res = kdbench_cli("sweep", "--methods", "ce", "--json", "--executor", "local")
    assert isinstance(res.exception, UserError) and "add --dry-run" in str(res.exception)


def test_the_temperature_sweep_plans_8_grid_points_times_3_seeds(dirs):
    path = REPO / "slurm" / "sweeps" / "kd-temperature.yaml"
    grid = grid_from_options(read_sweep_file(path))
    assert grid.grid == {"kd.temperature": ["1", "2", "4", "8"], "kd.w_kd": ["0.5", "0.9"]}
    entries = dry_run_json("--config", path)
    assert len(entries) == 24 and len({e["run_id"] for e in entries}) == 24
    points = {(e["method_params"]["temperature"], e["method_params"]["w_kd"]) for e in entries}
    assert points == {(t, w) for t in (1.0, 2.0, 4.0, 8.0) for w in (0.5, 0.9)}
    assert {e["seed"] for e in entries} == {0, 1, 2}
    assert {(e["teacher"], e["dataset"]) for e in entries} == {("resnet18", "digits")}


def test_sync_bn_goes_into_each_data_parallel_runs_config_and_id(dirs, tmp_path):
    """`--sync-bn` (or `sync_bn:` in the sweep file) reaches the config of every run of a multi-task GPU job;
    it changes the numbers, so it changes the run id. Planned only: SyncBatchNorm itself needs GPUs."""
    base = ("--methods", "kd", "--teachers", "resnet18", "--seeds", "0", "--gpus-per-node", "2")
    plain, = dry_run_json(*base, "--tasks-per-node", "1")
    ddp, = dry_run_json(*base, "--tasks-per-node", "2")
    synced, = dry_run_json(*base, "--tasks-per-node", "2", "--sync-bn")
    assert (plain["world_size"], plain["sync_bn"]) == (1, False)
    assert (ddp["world_size"], ddp["sync_bn"]) == (2, False)
    assert (synced["world_size"], synced["sync_bn"]) == (2, True)
    assert len({plain["run_id"], ddp["run_id"], synced["run_id"]}) == 3
    sweep_file = tmp_path / "synced.yaml"
    sweep_file.write_text("methods: kd\nteachers: resnet18\nseeds: 0\ngpus_per_node: 2\ntasks_per_node: 2\n"
                          "sync_bn: true\n")
    from_file, = dry_run_json("--config", sweep_file)
    assert from_file["run_id"] == synced["run_id"]


@pytest.mark.parametrize(("flags", "message"), [
    (("--sync-bn",), "each run has one: add --tasks-per-node N or --nodes M"),
    (("--sync-bn", "--tasks-per-node", "2"), "--sync-bn needs GPUs"),
    (("--resume", "20250101-120000-ab12", "--tasks-per-node", "2"), "drop --tasks-per-node"),
    # The saved grid was expanded (and bounded) when the sweep started: a --max-runs here would be ignored.
    (("--resume", "20250101-120000-ab12", "--max-runs", "5"), "drop --max-runs"),
])
def test_sync_bn_without_processes_or_gpus_and_a_new_world_on_resume_are_refused(dirs, flags, message):
    res = kdbench_cli("sweep", "--executor", "local", "--dry-run", *flags)
    assert isinstance(res.exception, UserError) and message in str(res.exception)  # exit 2 in the CLI


def test_resume_refuses_gpus_that_would_change_the_runs_world_size(dirs):
    """Tasks per node default to one per GPU: resuming a 2-GPU sweep with --gpus-per-node 1 would start 1-rank
    jobs for runs planned (and identified) as 2-rank ones. Another time limit is fine."""
    from kdbench.sweep.grid import at_world_size
    from kdbench.sweep.saved_sweep import new_sweep, save_sweep
    from kdbench.sweep.submit import absolute_paths
    from kdbench.sweep.sweep_file import paths_from_options, resources_from_options

    options = {"methods": "kd", "teachers": "resnet18", "seeds": "0", "gpus_per_node": 2,
               "results_dir": str(dirs["results"])}
    resources = resources_from_options(options)
    grid = grid_from_options(options)
    sweep = new_sweep(grid, absolute_paths(paths_from_options(options)), resources, "local", "test",
                      at_world_size(expand(grid), resources.world_size))
    save_sweep(sweep)
    res = kdbench_cli("sweep", "--resume", sweep["sweep_id"], "--gpus-per-node", "1", "--dry-run",
                      "--results-dir", dirs["results"])
    assert isinstance(res.exception, UserError), res.output
    assert "train on 2 process(es) each, but these resources give 1: keep --gpus-per-node at 2" \
        in str(res.exception)
    res = kdbench_cli("sweep", "--resume", sweep["sweep_id"], "--timeout-min", "30", "--dry-run",
                      "--results-dir", dirs["results"])
    assert res.exit_code == 0, res.output
