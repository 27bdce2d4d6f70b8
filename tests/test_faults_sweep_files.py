"""Sweep and run files a colleague hands you, and grids typed by hand, through the commands a user types
(issue #34, cases 5, 6 and 8): each wrong one is one line and exit 2, at once, never a hang, a MemoryError or a
traceback.

- a grid of a million runs is refused with its count and `--max-runs`, before one point is expanded;
- a YAML alias (a "billion laughs" bomb) in `set:`, `method:`, `methods:` or `grid:` is refused where it is read;
- an integer of 5,001 digits, `epochs: 1e999`, `lr: abc`, `gpus_per_node: abc` name the key and what it allows.

Each command runs under a deadline (SIGALRM), so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest
from deadline import deadline

from kdbench.spec.paths import Paths
from kdbench.sweep.grid import Grid, JobSettings, Resources
from kdbench.sweep.sweep_file import OPTION_KEYS

HUNDRED = ",".join(str(v) for v in range(1, 101))
DIGITS_5001 = "1" * 5001


def one_error_line(done) -> str:
    """The command's single error line (exit 2, no traceback)."""
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# ---------------------------------------------------------------------------------------------------------
# Case 5: the grid's size


def test_a_grid_of_a_million_runs_is_refused_at_once_with_its_count_and_the_option(dirs, in_process):
    # Three --grid keys of 100 values: before, `--dry-run` printed nothing for minutes and grew past 1 GB.
    with deadline(20):
        done = in_process("sweep", "--methods", "kd", "--teachers", "resnet18", "--grid", f"kd.temperature={HUNDRED}",
                          "--grid", f"kd.w_kd={HUNDRED}", "--grid", f"kd.w_ce={HUNDRED}", "--dry-run",
                          "--executor", "local")
    line = one_error_line(done)
    assert "1,000,000 runs" in line and "10,000" in line and "--max-runs" in line


def test_max_runs_on_the_command_line_and_in_a_sweep_file_moves_the_cap(dirs, in_process, tmp_path):
    three = ("sweep", "--methods", "kd", "--teachers", "resnet18", "--grid", "kd.temperature=1,2,4", "--dry-run",
             "--executor", "local")
    line = one_error_line(in_process(*three, "--max-runs", "2"))
    assert "3 runs" in line and "2 allowed" in line
    done = in_process(*three, "--max-runs", "3")
    assert done.returncode == 0, done.stderr
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("methods: kd\nteachers: resnet18\ngrid:\n  kd.temperature: [1, 2, 4]\nmax_runs: 2\n")
    line = one_error_line(in_process("sweep", "--config", str(sweep), "--dry-run", "--executor", "local"))
    assert "3 runs" in line and "--max-runs" in line
    # the flag overrides the file's value
    done = in_process("sweep", "--config", str(sweep), "--max-runs", "3", "--dry-run", "--executor", "local")
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------------------------------
# Case 6: YAML aliases


def alias_bomb(levels: int = 7) -> str:
    """A flow list whose last item, written out, is 9**(levels-1) copies of "lol" (the real bomb has 9
    levels, ~400 bytes; 7 keep a regression's memory modest while it fails)."""
    items = ['&a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    items += [f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "[" + ", ".join(items) + "]"


@pytest.mark.parametrize(("command", "text"), [
    ("run", f"method: kd\nteacher: resnet18\nset:\n  kd.temperature: {alias_bomb()}\n"),
    ("run", f"method: {alias_bomb()}\n"),
    ("sweep", f"methods: {alias_bomb()}\nteachers: resnet18\n"),
    ("sweep", f"methods: kd\nteachers: resnet18\ngrid:\n  kd.temperature: {alias_bomb()}\n"),
    ("sweep", f"methods: kd\nteachers: resnet18\nset:\n  kd.temperature: {alias_bomb()}\n"),
], ids=["run set", "run method", "sweep methods", "sweep grid", "sweep set"])
def test_a_yaml_alias_bomb_is_refused_naming_the_file_and_line(command, text, dirs, in_process, tmp_path):
    config = tmp_path / "bomb.yaml"
    config.write_text(text)
    with deadline(20):
        line = one_error_line(in_process(command, "--config", str(config), "--dry-run"))
    first_alias = text[:text.index("*a0")].count("\n") + 1
    assert f"--config {config}" in line and "alias" in line and f"line {first_alias}," in line
    assert len(line) < 300


def test_a_saved_config_with_an_alias_is_refused_too(dirs, in_process, tmp_path):
    # --save-config writes no alias; a hand-edited copy of one (a colleague's) is read by the same reader.
    saved = tmp_path / "saved.yaml"
    done = in_process("run", "--method", "ce", "--epochs", "1", "--save-config", str(saved), "--dry-run")
    assert done.returncode == 0, done.stderr
    text = saved.read_text()
    assert "\nseed: 0\n" in text and "teacher_seed" not in text
    saved.write_text(text.replace("\nseed: 0\n", "\nseed: &s 0\nteacher_seed: *s\n"))  # harmless, but an alias
    line = one_error_line(in_process("run", "--config", str(saved), "--dry-run"))
    assert "alias" in line and "(*s)" in line


def test_a_fifo_as_a_config_file_is_refused_without_waiting(dirs, in_process, tmp_path):
    fifo = tmp_path / "sweep.yaml"
    os.mkfifo(fifo)  # nobody writes to it: reading it would wait forever
    with deadline(20):
        line = one_error_line(in_process("sweep", "--config", str(fifo), "--dry-run"))
    assert "not a regular file" in line


# ---------------------------------------------------------------------------------------------------------
# Case 8: numbers in sweep and run files


@pytest.mark.parametrize(("text", "key", "allowed"), [
    (f"epochs: {DIGITS_5001}\n", "epochs", "at most 100 digits"),
    (f"epochs: '{DIGITS_5001}'\n", "epochs", "an integer from 1"),
    ("epochs: 1e999\n", "epochs", "an integer from 1"),  # YAML 1.1 reads it as text
    ("epochs: 1.0e+999\n", "epochs", "an integer from 1"),  # and this as inf
    ("epochs: 2.5\n", "epochs", "an integer from 1"),  # never truncated to 2
    ("epochs: true\n", "epochs", "an integer from 1"),  # never taken for 1
    ("lr: abc\n", "lr", "allowed: a number"),
    ("gpus_per_node: abc\n", "gpus_per_node", "an integer from 0"),
    ("mem_gb: .inf\n", "mem_gb", "a finite number > 0"),
    ("amp: 'false'\n", "amp", "true or false"),  # bool("false") is True
    # 200,000 seeds (not 10⁹: without the check, listing them would fill the memory in C, past any deadline)
    ("seeds: 0-199999\n", "seeds", "at most 100,000"),
    (f"set:\n  recipe.epochs: {DIGITS_5001}\n", "recipe.epochs", "at most 100 digits"),
    (f"grid:\n  kd.temperature: [1, {DIGITS_5001}]\n", "grid.kd.temperature[1]", "at most 100 digits"),
])
def test_a_wrong_number_in_a_sweep_file_names_the_key_the_value_and_what_is_allowed(text, key, allowed, dirs,
                                                                                   in_process, tmp_path):
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("methods: kd\nteachers: resnet18\n" + text)
    with deadline(20):
        line = one_error_line(in_process("sweep", "--config", str(sweep), "--dry-run", "--executor", "local"))
    assert f"--config {sweep}" in line and key in line and allowed in line, line
    assert len(line) < 300, line  # the value is shortened


@pytest.mark.parametrize("text", ["lr: .nan\n", "lr: 1e999\n", "epochs: 1000001\n"])
def test_a_number_out_of_the_recipes_range_is_refused_by_the_recipe_as_for_kdbench_run(text, dirs, in_process,
                                                                                       tmp_path):
    # epochs, batch size and lr: the recipe holds their ranges; the file's value reaches its check as a number
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text("methods: ce\n" + text)
    line = one_error_line(in_process("sweep", "--config", str(sweep), "--dry-run", "--executor", "local"))
    assert text.split(":")[0] + "=" in line and "allowed" in line, line


@pytest.mark.parametrize(("text", "words"), [
    (f"epochs: {DIGITS_5001}\n", ("epochs", "at most 100 digits")),
    (f"set:\n  recipe.epochs: {DIGITS_5001}\n", ("recipe.epochs", "at most 100 digits")),
    (f"set:\n  recipe.epochs: '{DIGITS_5001}'\n", ("recipe.epochs", "expected int", "(5001 characters)")),
])
def test_a_number_of_5001_digits_in_a_run_config_is_one_line(text, words, dirs, in_process, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("method: ce\n" + text)
    line = one_error_line(in_process("run", "--config", str(config), "--dry-run"))
    assert all(word in line for word in words) and len(line) < 300, line


def test_a_wrong_flag_value_names_the_flag_and_the_range(dirs, in_process):
    line = one_error_line(in_process("sweep", "--methods", "ce", "--gpus-per-node", "-1", "--dry-run",
                                     "--executor", "local"))
    assert "--gpus-per-node" in line and "an integer from 0" in line


def test_every_sweep_option_has_a_check():
    # The key table is what a sweep file may hold: a field added to the grid, the paths or the resources
    # without a check would be refused as an unknown key (or slip through unchecked).
    fields = {f.name for cls in (Grid, Paths, JobSettings, Resources) for f in dataclasses.fields(cls)}
    assert set(OPTION_KEYS) == fields | {"executor", "max_runs"}


def test_the_shipped_sweep_files_pass_their_checks(dirs, in_process, tmp_path, monkeypatch):
    # A pretrained teacher's weights are hashed into its runs' ids, so a dry run needs the files: stand-ins in a
    # Hugging Face cache (a dry run hashes them; it never loads them), offline.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("resnet34.tv_in1k", "resnet50.tv_in1k"):
        snapshot = tmp_path / "hf" / "hub" / f"models--timm--{name}" / "snapshots" / ("0" * 40)
        snapshot.mkdir(parents=True)
        (snapshot.parents[1] / "refs").mkdir()
        (snapshot.parents[1] / "refs" / "main").write_text("0" * 40)
        (snapshot / "model.safetensors").write_bytes(name.encode())
    repo = Path(__file__).resolve().parent.parent
    for sweep in sorted((repo / "slurm" / "sweeps").glob("*.yaml")):
        done = in_process("sweep", "--config", str(sweep), "--dry-run", "--executor", "local", "--json")
        assert done.returncode == 0, (sweep.name, done.stderr)


def test_every_yaml_file_is_read_through_the_one_reader():
    # The alias and size limits hold only if no other code parses YAML: kdbench/spec/yaml_file.py is the one place.
    package = Path(__file__).resolve().parent.parent / "kdbench"
    parsers = ("safe_load(", "yaml.load(", "full_load(", "compose(", "SafeLoader", "CSafeLoader")
    readers = sorted(str(p.relative_to(package)) for p in package.rglob("*.py")
                     if any(word in p.read_text() for word in parsers))
    assert readers == ["spec/yaml_file.py"]
