"""The option groups `kdbench sweep` and `kdbench run` gather their flags into, and the one SCOPE.KEY parser.

The commands' CLI behaviour is tested end to end in test_cli*.py and test_sweep*.py; these tests pin the logic
of the pieces in between: which flags count as "not given" (so a sweep file's value holds), how a file and the
flags become a grid, and that a run's option groups are exactly what `kdbench.execute.api.run` takes.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest

from kdbench.cli.run_config import RunMachine, run_arguments, run_identity, run_machine
from kdbench.cli.sweep_options import (
    GridSelection,
    SchedulerFlags,
    SweepActions,
    SweepPlaces,
    sweep_flags,
    sweep_inputs,
)
from kdbench.core.errors import UserError
from kdbench.execute.api import run
from kdbench.spec.scoped_sets import parse_grid, parse_set_options, set_items, split_scoped_key
from kdbench.spec.yaml_file import yaml_mapping
from kdbench.sweep.grid import expand


def test_a_sweep_file_under_the_flags_becomes_the_grid(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("methods: [ce, kd]\nteachers: resnet18\nseeds: 0-3\ngrid: {kd.temperature: [1, 2]}\n"
                    "set: {data.image_size: 8}\nexecutor: local\ngpus-per-node: 2\ntasks-per-node: 2\n"
                    "sync-bn: true\n")
    # --seeds and a --set of the gridded key given on the command line; the rest unset (typer's None / False)
    flags = sweep_flags(GridSelection(seeds="1,2", sets=["kd.temperature=4"]),
                        SweepPlaces(results_dir=tmp_path / "results"), SchedulerFlags())
    new = sweep_inputs(flags, path)
    assert new.grid.methods == ["ce", "kd"] and new.grid.teachers == ["resnet18"]
    assert new.grid.seeds == [1, 2]  # the flag over the file
    assert new.grid.grid == {}  # the command line's --set of kd.temperature replaces the file's grid of it
    assert new.grid.sets == ["data.image_size=8", "kd.temperature=4"]
    assert new.paths.results_dir == str((tmp_path / "results").resolve()) and Path(new.paths.zoo_dir).is_absolute()
    # an unset --sync-bn is "not given": the file's sync-bn holds, with its 2 processes per run
    assert new.resources.sync_bn is True and new.resources.world_size == 2
    assert new.executor == "local"


def test_flags_not_given_are_none_so_the_file_keeps_its_values():
    flags = sweep_flags(GridSelection(chains=[], sets=[], grid=None), SweepPlaces(),
                        SchedulerFlags(sync_bn=False, sbatch=[]))
    assert all(value is None for value in flags.values())
    assert set(flags) == ({f.name for f in dataclasses.fields(GridSelection)}
                          | {f.name for f in dataclasses.fields(SweepPlaces)}
                          | {f.name for f in dataclasses.fields(SchedulerFlags)})
    given = sweep_flags(GridSelection(chains=["a,b"]), SweepPlaces(device="cpu"), SchedulerFlags(sync_bn=True))
    assert given["chains"] == ["a,b"] and given["device"] == "cpu" and given["sync_bn"] is True


def test_portable_from_the_flag_or_the_file_reaches_every_run_id(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("methods: [ce]\nseeds: 0\n")
    places = SweepPlaces(results_dir=tmp_path / "results")
    native = sweep_inputs(sweep_flags(GridSelection(portable=False), places, SchedulerFlags()), path)
    flag = sweep_inputs(sweep_flags(GridSelection(portable=True), places, SchedulerFlags()), path)
    path.write_text("methods: [ce]\nseeds: 0\nportable: true\n")
    from_file = sweep_inputs(sweep_flags(GridSelection(portable=False), places, SchedulerFlags()), path)
    assert not native.grid.portable and flag.grid.portable and from_file.grid.portable
    [native_run], [flag_run] = expand(native.grid), expand(flag.grid)
    assert flag_run.config.portable and not native_run.config.portable
    assert flag_run.config.run_id != native_run.config.run_id


def test_json_is_for_a_dry_run_only():
    SweepActions(as_json=True, dry_run=True).check()
    with pytest.raises(UserError, match="--json prints the plan of a dry run: add --dry-run"):
        SweepActions(as_json=True).check()


def test_a_runs_option_groups_are_exactly_what_run_takes():
    identity = run_identity({"method": "kd", "teacher": "resnet18", "sets": ["kd.temperature=2"], "seed": 3})
    flags = {"force": True, "strict": False, "keep_checkpoint": False, "deterministic": True, "sync_bn": False}
    machine = run_machine({**flags, "device": None, "nproc": None, "log": None, "teacher_cache": None})
    assert machine == RunMachine(force=True)  # a config file's null of these falls back to the flag's default
    kwargs = {**run_arguments(identity), **dataclasses.asdict(machine)}
    assert kwargs["seed"] == 3 and kwargs["sets"] == ["kd.temperature=2"] and kwargs["device"] == "auto"
    # every option of run() but the reporter and the evaluation batch size comes from one of the groups
    taken = set(inspect.signature(run).parameters) - {"reporter", "infer_batch_size"}
    assert set(kwargs) == taken


def test_a_run_without_a_method_is_refused():
    with pytest.raises(UserError, match="pass --method METHOD"):
        run_identity({"method": None})


@pytest.mark.parametrize("key", ["kd", ".temperature", "kd.", " . ", ""])
def test_every_reader_of_scope_key_refuses_the_same_keys(key):
    assert split_scoped_key(key) is None
    with pytest.raises(UserError, match=r"--set expects SCOPE\.KEY=VALUE \(e\.g\. kd\.temperature=2\), got"):
        parse_set_options([f"{key}=2"])
    with pytest.raises(UserError, match=r"--grid expects SCOPE\.KEY=V1,V2"):
        parse_grid([f"{key}=1,2"])
    with pytest.raises(UserError, match=r"set: expected SCOPE\.KEY"):
        set_items({key: 2})


def test_one_parse_of_set_items_from_the_command_line_and_files():
    assert split_scoped_key(" kd.temperature ") == ("kd", "temperature")
    from_file = set_items({"kd": {"temperature": 2}, "recipe.lr": 0.1})
    assert parse_set_options(from_file) == parse_set_options(["kd.temperature=2", "recipe.lr= 0.1"]) \
        == {"kd": {"temperature": "2"}, "recipe": {"lr": "0.1"}}


def test_the_config_reader_names_the_flag_and_where_the_yaml_broke(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("methods: [ce\n")
    with pytest.raises(UserError, match=r"--config .*bad\.yaml: not valid YAML at line 2, column 1"):
        yaml_mapping(bad)
    (tmp_path / "ok.yaml").write_text("")
    assert yaml_mapping(tmp_path / "ok.yaml") == {}
