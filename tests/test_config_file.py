"""`kdbench run --config FILE.yaml` and `--save-config`: a file and the command line give the same run id, a flag
given on the command line wins over the file, and every way a file can be wrong is one line with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from kdbench.cli.app import _register_commands, app
from kdbench.cli.run_config import run_options, run_params, save_run_config
from kdbench.core.errors import UserError
from kdbench.execute.resolve import RunOptions, resolve_config


def run_command():
    _register_commands()
    return typer.main.get_command(app).commands["run"]


def params_of(*args: str) -> dict:
    """The parameters `kdbench run ARGS` would run with (the config file merged in), without running."""
    ctx = run_command().make_context("run", list(args))
    return run_params(ctx, ctx.params.get("config"))


def run_id_of(*args: str) -> str:
    return resolve_config(run_options(params_of(*args))).run_id


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


KD_FLAGS = ("--method", "kd", "--teacher", "resnet18", "--seed", "3", "--epochs", "2", "--teacher-epochs", "1",
            "--batch-size", "32", "--lr", "0.02", "--amp", "--set", "kd.temperature=2", "--set", "data.image_size=8")


def test_a_config_file_gives_the_run_id_of_the_same_flags(tmp_path):
    flat = write(tmp_path / "flat.yaml", "method: kd\nteacher: resnet18\nseed: 3\nepochs: 2\nteacher-epochs: 1\n"
                 "batch_size: 32\nlr: 0.02\namp: true\nset:\n  kd.temperature: 2\n  data.image_size: 8\n")
    nested = write(tmp_path / "nested.yaml", "method: kd\nteacher: resnet18\nseed: 3\nepochs: 2\nteacher_epochs: 1\n"
                   "batch_size: 32\nlr: 0.02\namp: true\nset: {kd: {temperature: 2.0}, data: {image_size: 8}}\n")
    listed = write(tmp_path / "list.yaml", "method: kd\nteacher: resnet18\nseed: 3\nepochs: 2\nteacher_epochs: 1\n"
                   "batch_size: 32\nlr: 0.02\namp: true\nsets: [kd.temperature=2, data.image_size=8]\n")
    expected = run_id_of(*KD_FLAGS)
    assert expected == resolve_config(RunOptions(method="kd", teacher="resnet18", seed=3, epochs=2, teacher_epochs=1,
                                                 batch_size=32, lr=0.02, amp=True,
                                                 sets=["kd.temperature=2", "data.image_size=8"])).run_id
    for path in (flat, nested, listed):
        assert run_id_of("--config", str(path)) == expected, path.name
    assert run_id_of("--config", str(flat), "--seed", "4") != expected  # a changed setting is another run


def test_flags_given_on_the_command_line_win_even_at_their_default_value(tmp_path):
    path = write(tmp_path / "c.yaml", "method: kd\nteacher: resnet18\nseed: 3\ndataset: digits\n"
                 "set: {kd.temperature: 2, kd.w_kd: 0.5}\n")
    p = params_of("--config", str(path), "--seed", "0", "--set", "kd.temperature=8")
    assert p["seed"] == 0  # --seed 0 is the default, typed on purpose: it wins over the file's 3
    assert p["method"] == "kd" and p["teacher"] == "resnet18"
    config = resolve_config(run_options(p))
    assert config.method_params["temperature"] == 8.0  # the command line's --set of the same key
    assert config.method_params["w_kd"] == 0.5  # the file's other key stays
    assert params_of("--config", str(path))["seed"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("method: ce\nepoch: 3\n",
         "unknown key 'epoch'. Valid: amp, batch_size, cache_dir, channels_last, checkpoint_every_steps"),
        ("method: ce\nepochs: [1\n", "not valid YAML at line 3"),
        ("- method\n- ce\n", "expected a mapping of option: value"),
        ("method: ce\nepochs: many\n", "epochs: Input should be a valid integer"),
        ("method: ce\namp: perhaps\n", "amp: Input should be a valid boolean"),
        ("method: ce\nset: {ce: 0.1}\n", "expected SCOPE.KEY"),
        ("teacher: resnet18\n", "pass --method METHOD (or method: in the --config file)"),
    ],
)
def test_a_wrong_config_file_is_one_line_and_exit_2(tmp_path, dirs, text, message):
    path = write(tmp_path / "c.yaml", text)
    res = CliRunner().invoke(app, ["run", "--config", str(path)])
    assert res.exit_code == 1 and isinstance(res.exception, UserError)  # main() turns it into exit 2
    assert message in str(res.exception)
    assert "\n" not in str(res.exception)


def test_the_cli_prints_a_config_error_as_one_line_with_exit_2(tmp_path, dirs, monkeypatch, capsys):
    import sys

    from kdbench.cli.app import main

    path = write(tmp_path / "c.yaml", "method: ce\nepoch: 3\n")
    # The CLI's entry point in process (`python -m kdbench` is main(); a subprocess spent ~5 s importing).
    monkeypatch.setattr(sys, "argv", ["kdbench", "run", "--config", str(path)])
    with pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err
    assert done.value.code == 2 and "unknown key 'epoch'" in err and "Traceback" not in err


def test_save_config_writes_the_resolved_options_and_reads_back_to_the_same_run_id(tmp_path):
    p = params_of("--method", "kd", "--teacher", "resnet18", "--set", "kd.temperature=2", "--set",
                  "data.image_size=8", "--set", "recipe.weight_decay=1e-4", "--seed", "2")
    config = save_run_config(tmp_path / "saved.yaml", p)
    doc = yaml.safe_load((tmp_path / "saved.yaml").read_text())
    # Resolved: the student, the recipe's epochs / batch size / lr and the teacher's epochs are written out.
    assert doc["student"] == config.student and doc["epochs"] == config.recipe.epochs
    assert doc["lr"] == config.recipe.lr and doc["teacher_epochs"] == config.teacher_recipe.epochs
    assert doc["set"] == {"kd.temperature": 2, "data.image_size": 8, "recipe.weight_decay": "1e-4"}
    assert run_id_of("--config", str(tmp_path / "saved.yaml")) == config.run_id
    assert config.run_id in (tmp_path / "saved.yaml").read_text()  # the header names the id it was written for


def test_run_with_save_config_then_config_is_the_same_stored_run(tmp_path, dirs):
    saved = tmp_path / "ce.yaml"
    args = ["run", "--method", "ce", "--student", "test_resnet", "--epochs", "1", "--set", "data.image_size=8",
            "--json"]
    first = CliRunner().invoke(app, [*args, "--save-config", str(saved)])
    assert first.exit_code == 0, first.output
    record = json.loads(first.stdout[first.stdout.index("{"):])
    again = CliRunner().invoke(app, ["run", "--config", str(saved), "--json"])
    assert again.exit_code == 0, again.output
    rerun = json.loads(again.stdout[again.stdout.index("{"):])
    assert rerun["run_id"] == record["run_id"] and rerun["cached"] is True  # found, not trained again
