"""Every user mistake the CLI knows ends the same way: exit code 2, one line on stderr naming what is wrong, no
traceback, and no run record left behind (load_runs finds none)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
from fixtures_data import write_cifar100
from safetensors.torch import save_file

from kdbench.cli.app import main
from kdbench.models import create_model
from kdbench.report.results import load_runs

CLI = [sys.executable, "-m", "kdbench"]
KD = ["run", "--method", "kd", "--teacher", "resnet18", "--epochs", "1", "--set", "data.image_size=8"]


def _garbage(name: str) -> Callable[[dict[str, Path]], list[str]]:
    def setup(dirs: dict[str, Path]) -> list[str]:
        path = dirs["data"] / name
        path.write_bytes(b"\x00not a checkpoint\xff" * 64)
        return ["--teacher-ckpt", str(path)]

    return setup


def _resnet18_ckpt(num_classes: int) -> Callable[[dict[str, Path]], list[str]]:
    """Weights of another architecture (resnet18) than the teacher asked for, or of another class count."""

    def setup(dirs: dict[str, Path]) -> list[str]:
        model = create_model("resnet18", num_classes=num_classes, in_chans=3, image_size=8)
        path = dirs["data"] / f"resnet18-{num_classes}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        return ["--teacher-ckpt", str(path)]

    return setup


def _results_dir_is_a_file(dirs: dict[str, Path]) -> list[str]:
    path = dirs["data"] / "results.txt"
    path.write_text("not a folder\n")
    return ["--results-dir", str(path)]


def _cifar100_with_garbage_train(dirs: dict[str, Path]) -> list[str]:
    written = write_cifar100(dirs["data"], train_per_class=1, test_per_class=1, classes=2)
    (written.folder / "train").write_bytes(os.urandom(4096))
    return ["--dataset", "cifar100", "--data-root", str(dirs["data"])]


def _truncated_record(dirs: dict[str, Path]) -> list[str]:
    record = dirs["results"] / "runs" / "0123456789abcdef" / "result.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"run_id": "0123456789abcdef", "status": "completed", "method": "kd"})[:30])
    return []


def _none(dirs: dict[str, Path]) -> list[str]:
    return []


CASES = [
    # what the user typed, what the test prepares (extra args), what the line must say (one or more parts)
    ("unknown method", ["run", "--method", "kdd", "--teacher", "resnet18"], _none, "unknown method 'kdd'"),
    ("unknown teacher", ["run", "--method", "kd", "--teacher", "resnet153"], _none, "Did you mean resnet152"),
    ("unknown dataset", ["run", "--method", "ce", "--dataset", "mnist"], _none, "unknown dataset 'mnist'"),
    ("epochs 0", ["run", "--method", "ce", "--epochs", "0"], _none, "epochs=0 is out of range; allowed: [1, 100000]"),
    ("unknown --set key", [*KD, "--set", "kd.T=2"], _none, "unknown option 'kd.T'"),
    ("milestone at the last epoch", ["run", "--method", "ce", "--dataset", "cifar100", "--epochs", "24", "--set",
                                    "recipe.milestones=15,24"], _none,
     "milestones=15,24: each must be an epoch after which the lr decays, strictly increasing, within this run's 24 "
     "epochs; allowed: 1..23"),
    ("teacher milestone 0", [*KD, "--set", "teacher_recipe.schedule=multistep", "--set",
                             "teacher_recipe.milestones=0"], _none, "allowed: 1..9"),
    ("unknown device", ["run", "--method", "ce", "--device", "tpu"], _none, "unknown device 'tpu'"),
    ("no teacher", ["run", "--method", "kd"], _none, "pass --teacher"),
    ("unknown zoo teacher", ["teachers", "train", "resnet9000"], _none, "unknown teacher architecture"),
    ("lr nan", ["run", "--method", "ce", "--lr", "nan"], _none,
     "lr=nan is not a finite number; allowed: finite values in (0, 10]"),
    ("lr inf", ["run", "--method", "ce", "--lr", "inf"], _none, "lr=inf is not a finite number"),
    ("--set nan", [*KD, "--set", "kd.temperature=nan"], _none,
     "kd.temperature=nan is not a finite number; allowed: finite values in (0, 100]"),
    ("--set -inf weight", [*KD, "--set", "kd.w_kd=-inf"], _none, "kd.w_kd=-inf is not a finite number"),
    ("--set inf recipe", ["run", "--method", "ce", "--set", "recipe.weight_decay=inf"], _none,
     "weight_decay=inf is not a finite number; allowed: finite values in [0, 1]"),
    ("--set nan student option", ["run", "--method", "ce", "--student", "gnn2", "--set", "student.dropout=nan"],
     _none, "student.dropout=nan is not a finite number"),
    ("sweep --lr nan", ["sweep", "--methods", "ce", "--lr", "nan", "--executor", "debug", "--dry-run"], _none,
     "lr=nan is not a finite number"),
    ("missing teacher file", [*KD, "--teacher-ckpt", "/nonexistent/teacher.safetensors"], _none, "no such file"),
    ("teacher file not safetensors", KD, _garbage("teacher.safetensors"),
     "not a plain tensor checkpoint: "),
    ("teacher file not a torch file", KD, _garbage("teacher.pt"),
     "not a plain tensor checkpoint: "),
    ("teacher file of another class count", KD, _resnet18_ckpt(7), "does not fit resnet18 with 10 classes"),
    ("teacher file of another architecture", [*KD[:3], "--teacher", "resnet34", *KD[5:]], _resnet18_ckpt(10),
     "does not fit resnet34"),
    ("results dir is a file", ["run", "--method", "ce", "--epochs", "1"], _results_dir_is_a_file,
     "results.txt is a file, not a folder"),
    ("cifar file unreadable", ["run", "--method", "ce", "--epochs", "1"], _cifar100_with_garbage_train,
     ("cifar-100-python/train", "failed the md5 check: the file is there but unreadable", "expected the python "
      "pickles of the official cifar-100-python.tar.gz", "run again to download it afresh")),
    ("cifar files missing (offline)", ["run", "--method", "ce", "--dataset", "cifar100"], _none,
     ("cifar100: missing train, test, meta", "KDBENCH_OFFLINE is set")),
    ("leaderboard --strict", ["leaderboard", "--strict"], _truncated_record,
     "run 0123456789abcdef: "),
]


def _one_line(stderr: str, message: str | tuple[str, ...]) -> None:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    for part in (message,) if isinstance(message, str) else message:
        assert part in lines[0]


@pytest.mark.parametrize(("args", "setup", "message"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_user_mistake_is_one_line_exit_2_and_leaves_no_record(dirs, args, setup, message, monkeypatch, capsys):
    """The CLI's entry point (`python -m kdbench` is `main()`) in this process: a subprocess per case spent ~5 s
    importing (26 cases, ~2 minutes). A warning would be a second stderr line in a fresh process; here it is
    recorded instead, and must not be there either. FRESH below runs cases in a real subprocess."""
    monkeypatch.setenv("KDBENCH_OFFLINE", "1")
    monkeypatch.setattr(sys, "argv", ["kdbench", *args, *setup(dirs)])
    with warnings.catch_warnings(record=True) as caught, pytest.raises(SystemExit) as done:
        main()
    err = capsys.readouterr().err
    assert done.value.code == 2, err
    assert not caught, [str(w.message) for w in caught]
    _one_line(err, message)
    assert load_runs(dirs["results"]).empty  # nothing half-written is counted


# A parse error and one that builds a model and reads a checkpoint, as a user's fresh process: what imports
# print to stderr (a warning line) is part of what the user sees.
FRESH = ["unknown method", "teacher file of another architecture"]


@pytest.mark.parametrize(("args", "setup", "message"), [c[1:] for c in CASES if c[0] in FRESH], ids=FRESH)
def test_a_user_mistake_in_a_fresh_process_is_one_line_and_exit_2(dirs, args, setup, message):
    env = {**os.environ, "KDBENCH_OFFLINE": "1"}
    res = subprocess.run([*CLI, *args, *setup(dirs)], capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 2, res.stderr
    _one_line(res.stderr, message)
    assert load_runs(dirs["results"]).empty


def test_an_unreadable_record_is_reported_and_the_others_still_load(dirs, capsys):
    good = dirs["results"] / "runs" / "fedcba9876543210" / "result.json"
    good.parent.mkdir(parents=True)
    good.write_text(json.dumps({"run_id": "fedcba9876543210", "status": "failed", "method": "ce"}))
    _truncated_record(dirs)
    runs = load_runs(dirs["results"])
    assert runs["run_id"].tolist() == ["fedcba9876543210"]
    err = capsys.readouterr().err
    assert "run 0123456789abcdef" in err and "unreadable" in err and "JSONDecodeError" in err
    from kdbench.core.errors import UserError

    with pytest.raises(UserError, match="1 unreadable run record"):
        load_runs(dirs["results"], strict=True)
