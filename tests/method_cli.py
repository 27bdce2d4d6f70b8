"""What the tests of the #36 feature methods do through the CLI: one short run on digits, and a bad setting's
one-line refusal (imported by the tests as `method_cli`, as `deadline` is: tests is not a package)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# A tiny pair at 8 px on a fifth of digits' training split: the whole command path in a few seconds.
DIGITS_RUN = ("--teacher", "cifar_resnet8", "--student", "test_resnet", "--epochs", "1")


def run_on_digits(in_process: Any, results: Path, method: str, *extra: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """`kdbench run --method METHOD [EXTRA...]` for 1 epoch into `results` (its teacher trained for 1 epoch first):
    the run's record and its first epoch's line of metrics.jsonl (`losses`, accuracies)."""
    result = in_process("run", "--method", method, *DIGITS_RUN, "--teacher-epochs", "1", "--set", "data.image_size=8",
                        "--set", "data.train_fraction=0.2", "--results-dir", str(results), *extra, "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["status"] == "completed"
    lines = (results / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()
    return record, json.loads(lines[0])


def assert_refused_in_one_line(in_process: Any, method: str, setting: str, message: str) -> None:
    """`kdbench run --method METHOD --set SETTING` exits 2 with exactly `error: MESSAGE`."""
    result = in_process("run", "--method", method, *DIGITS_RUN, "--set", setting)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {message}"
