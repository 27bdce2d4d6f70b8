"""`kdbench run --compile` end to end (issue #40), through the command a user types, in a fresh process: one epoch
of ResNet-8 at 8 px on CPU with a plugin method whose connector calls a custom operator that has no fake-tensor
kernel (as a graph library's operator): dynamo cannot compile it.

- the student compiles; the connector prints one warning line naming it and runs eager; no traceback;
- the record states the compile seconds, the graphs and the recompilations (bounded: training, the ragged batch,
  evaluation; not one per batch) and which module ran eager;
- inductor's kernels land in the kdbench cache folder, one folder per torch build;
- the numbers are not the eager run's bits on CPU: the measurement behind a compiled run having a run id of its own
  (kdbench.spec.config.RunConfig.compile).

One compile of a tiny model (a cold inductor cache in tmp_path): a minute or two on a loaded 2-core machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PLUGIN = '''
from dataclasses import dataclass

import torch
from torch import nn

from kdbench.train.method import Batch, Distiller, register_method


@torch.library.custom_op("kdbench_plugin::opaque_scale", mutates_args=())
def opaque_scale(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5  # no register_fake: dynamo cannot trace it


opaque_scale.register_autograd(lambda ctx, grad: grad * 0.5)  # trainable eagerly


class OpaqueConnector(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return opaque_scale(self.linear(x))


@dataclass(frozen=True)
class OpaqueParams:
    w_aux: float = 0.1


@register_method("opaqueconn", paper="test plugin", params=OpaqueParams())
class OpaqueConn(Distiller):
    needs_teacher = False
    default_student = "cifar_resnet8"

    def __init__(self, student, teacher, params, ctx):
        super().__init__(student, teacher, params, ctx)
        self.connector = OpaqueConnector(ctx.num_classes)

    def forward_train(self, batch: Batch):
        logits = self.student(batch.images)
        return logits, {"ce": self.cross_entropy(logits, batch.labels),
                        "aux": self.params.w_aux * self.connector(logits).pow(2).mean()}
'''

CLI = "import sys, kdbench_compile_plugin; from kdbench.cli.app import main; sys.argv[0] = 'kdbench'; sys.exit(main())"


def _kdbench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"}  # kdbench chooses the folder
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])
    command = [sys.executable, "-c", CLI, "run", "--method", "opaqueconn", "--epochs", "1", "--set",
               "data.image_size=8", "--device", "cpu", "--results-dir", str(tmp_path / "results"), "--cache-dir",
               str(tmp_path / "kdbench" / "teacher-outputs"), "--json", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=1200)  # a hang fails


def _losses(tmp_path: Path, record: dict) -> dict:
    line = (tmp_path / "results" / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()[0]
    return json.loads(line)["losses"]


def test_a_compiled_run_records_its_compile_time_falls_back_per_module_and_differs_from_eager(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "kdbench_compile_plugin.py").write_text(PLUGIN)
    eager = _kdbench(tmp_path)
    assert eager.returncode == 0, eager.stderr[-3000:]
    compiled = _kdbench(tmp_path, "--compile")
    assert compiled.returncode == 0, compiled.stderr[-3000:]
    assert "Traceback" not in compiled.stderr
    # One warning naming the module (the console may fold it at the terminal's width, as any message)
    said = " ".join(compiled.stderr.split())
    assert said.count("could not be compiled") == 1, compiled.stderr[-3000:]
    assert "warning: --compile: connector (OpaqueConnector) could not be compiled (" in said and "runs eager" in said
    eager_rec, compiled_rec = json.loads(eager.stdout), json.loads(compiled.stdout)
    assert compiled_rec["run_id"] != eager_rec["run_id"] and "compile" not in eager_rec["timing"]
    stats = compiled_rec["timing"]["compile"]
    assert stats["modules"] == ["student"] and list(stats["eager"]) == ["connector"] and stats["mode"] == "default"
    assert stats["compile_s"] > 0 and stats["graphs"] >= 2  # training and evaluation
    assert stats["recompiles"] <= 4, stats  # 23 training batches, 1 ragged, and evaluation: not one per batch
    caches = list((tmp_path / "kdbench" / "inductor").iterdir())
    assert len(caches) == 1 and any(caches[0].iterdir())  # one folder for this torch build, kernels in it
    # Inductor fuses and reorders sums: not the eager bits on CPU (hence another run id and zoo entry)
    assert _losses(tmp_path, compiled_rec) != _losses(tmp_path, eager_rec)
