"""What the tests of the pre-stage methods (ab, ft, fsp) share: a `kdbench run` of 2 epochs through the CLI in
process (epoch 1 the pre-stage, epoch 2 the training stage: 30 of 240 rescaled to 2 is 1), and the method built
directly on the CRD code's ResNet-8 for the checks of which modules a stage trains."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from method_cli import RUN_ARGS

from kdbench.models import create_model
from kdbench.train.method import Batch, Distiller, MethodContext, get_method


def run_two_epochs(in_process, results: Path, method: str, *sets: str) -> tuple[dict[str, Any], list[dict]]:  # noqa: ANN001 - conftest's invoker
    """`kdbench run --method METHOD --epochs 2` on digits → (the run record, each epoch's logged losses)."""
    extra = [a for s in sets for a in ("--set", s)]
    done = in_process("run", "--method", method, *RUN_ARGS, "--epochs", "2", *extra)  # the last --epochs wins
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["status"] == "completed" and record["method"] == method
    lines = (results / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()
    return record, [json.loads(line)["losses"] for line in lines]


def build(method: str, teacher: str = "cifar_resnet8", student: str = "cifar_resnet8", epochs: int = 4,
          **params: Any) -> Distiller:
    """The method on a teacher/student pair at 8 px, its params resolved for `epochs` as a run resolves them."""
    torch.manual_seed(0)
    spec = get_method(method)
    p = spec.cls.resolve_params(spec.params.__class__(**{**spec.defaults(), **params}), teacher=teacher,
                                student=student, epochs=epochs)
    ctx = MethodContext(10, 1, 8, 8, torch.arange(8) % 10, epochs, 0)
    models = [create_model(name, num_classes=10, in_chans=1, image_size=8) for name in (student, teacher)]
    return spec.cls(models[0], models[1], p, ctx)


def step_grads(distiller: Distiller, epoch: int) -> dict[str, bool]:
    """One training step's backward at `epoch`: for each top-level submodule, whether any parameter got a grad."""
    distiller.train()
    distiller.on_epoch_start(epoch)
    distiller.zero_grad(set_to_none=True)
    batch = Batch(torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3]), torch.arange(4))
    _, losses = distiller.forward_train(batch)
    sum(losses.values()).backward()
    return {name: any(p.grad is not None for p in module.parameters())
            for name, module in distiller.named_children()}
