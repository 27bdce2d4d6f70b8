"""What the #36 method tests share: a reference-loss fixture's tensors, and `kdbench run` of one method through the
CLI in process on the digits default, 1 epoch at 8 px (the CRD code's ResNet-8 as teacher and student, the
teacher trained for 1 epoch): a few seconds of training."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch

FIXTURES = Path(__file__).parent / "fixtures" / "reference_losses"
RUN_ARGS = ("--teacher", "cifar_resnet8", "--student", "cifar_resnet8", "--epochs", "1", "--teacher-epochs", "1",
            "--set", "data.image_size=8", "--device", "cpu", "--json")


def reference(method: str) -> dict[str, Any]:
    """tests/fixtures/reference_losses/<method>.json (numbers computed once from the reference code)."""
    return json.loads((FIXTURES / f"{method}.json").read_text())


def tensor(entry: dict[str, Any]) -> torch.Tensor:
    """A fixture's {"shape", "values"} as a float32 tensor."""
    return torch.tensor(entry["values"], dtype=torch.float32).reshape(entry["shape"])


def run_on_digits(in_process, results: Path, method: str, *sets: str) -> tuple[dict[str, Any], dict[str, float]]:  # noqa: ANN001 - conftest's invoker
    """`kdbench run --method METHOD` (1 epoch on digits) → (the run record, the epoch's logged losses), checking
    that it completed and every logged loss is finite."""
    extra = [a for s in sets for a in ("--set", s)]
    done = in_process("run", "--method", method, *RUN_ARGS, *extra)
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "completed" and record["method"] == method
    epoch = json.loads((results / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()[0])
    assert all(math.isfinite(v) for v in epoch["losses"].values()), epoch["losses"]
    return record, epoch["losses"]


def one_line_exit_2(done) -> str:  # noqa: ANN001 - conftest's CliResult
    """The CLI's error contract: exit 2, one line on stderr, no traceback; returns the line."""
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    return done.stderr.strip()
