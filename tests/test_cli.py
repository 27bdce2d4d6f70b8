"""The CLI end to end on the embedded dataset, and its error contract: one line, exit code 2, no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

CLI = [sys.executable, "-m", "kdbench"]


def kdbench(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


def test_run_kd_end_to_end_then_rerun_shows_the_stored_result(dirs):
    # The CRD codebase's ResNet-8 as teacher and student: the whole command path in a few seconds of training.
    args = ["run", "--method", "kd", "--teacher", "cifar_resnet8", "--student", "cifar_resnet8", "--epochs", "1",
            "--teacher-epochs", "1", "--set", "data.image_size=8", "--json"]
    first = kdbench(*args)
    assert first.returncode == 0, first.stderr
    record = json.loads(first.stdout)
    assert record["status"] == "completed" and record["teacher_metrics"]["cached"] is False
    run_dir = dirs["results"] / "runs" / record["run_id"]
    assert {p.name for p in run_dir.iterdir()} >= {"result.json", "metrics.jsonl", "student.safetensors",
                                                    "student_best.safetensors", "student.json"}
    epoch = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert set(epoch["losses"]) == {"ce", "kd", "total"}
    again = kdbench(*args)
    assert json.loads(again.stdout)["cached"] is True
    assert "already completed" in again.stderr
    table = kdbench("teachers", "list")
    assert "cifar_resnet8" in table.stdout and "digits" in table.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--method", "kdd", "--teacher", "resnet18"], "unknown method 'kdd'. Did you mean kd"),
        (["run", "--method", "kd", "--teacher", "resnet153"], "Did you mean resnet152"),
        (["run", "--method", "ce", "--dataset", "mnist"], "unknown dataset 'mnist'"),
        (["run", "--method", "ce", "--epochs", "0"], "epochs=0 is out of range; allowed: [1, 100000]"),
        (["run", "--method", "kd", "--teacher", "resnet18", "--set", "kd.T=2"], "unknown option 'kd.T'"),
        (["run", "--method", "ce", "--device", "tpu"], "unknown device 'tpu'"),
        (["run", "--method", "kd"], "pass --teacher"),
        (["teachers", "train", "resnet9000"], "unknown teacher architecture"),
    ],
)
def test_user_mistakes_print_one_line_and_exit_2(dirs, args, message, in_process):
    code, _, stderr = in_process(*args)
    assert code == 2
    assert message in " ".join(stderr.split())
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) <= 3  # one logical line (rich may wrap a long one)


@pytest.mark.parametrize("command", [["run"], ["teachers", "train"], ["teachers", "list"], ["methods"], ["datasets"]])
def test_every_command_has_help(command, in_process):
    code, stdout, _ = in_process(*command, "--help")
    assert code == 0 and "Usage" in stdout


def test_run_help_shows_examples(in_process):
    assert "kdbench run --method kd --teacher resnet152" in in_process("run", "--help")[1]
