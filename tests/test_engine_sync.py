"""The engine's per-step reads: on a GPU the losses stay on the device and are read once per logging interval
(kdbench.train.step_log); on CPU each step is read as it happens. Both paths must give the same numbers, the same
per-step curves to the reporter, and stop a non-finite run at the same step, before any checkpoint of that
epoch. (The deferred path is forced on CPU here: it is the same code a CUDA device runs.)"""

from __future__ import annotations

import math
from dataclasses import asdict

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from kdbench.core.environment import configure_determinism
from kdbench.core.errors import RunDiverged
from kdbench.core.progress import Reporter
from kdbench.core.safe_load import load_plain_checkpoint
from kdbench.data.loaders import make_eval_loader, make_train_loader
from kdbench.spec.recipe import Recipe
from kdbench.train.engine import Engine, EngineSettings
from kdbench.train.method import Batch, Distiller, MethodContext

CPU = torch.device("cpu")
N, BATCH = 40, 8  # 5 steps per epoch


class Linear(Distiller):
    """A linear student with two named losses; `nan_at` = (epoch, step) makes that step's `l2` NaN."""

    needs_teacher = False

    def __init__(self, ctx: MethodContext, nan_at: tuple[int, int] | None = None) -> None:
        super().__init__(nn.Linear(4, 3), None, None, ctx)
        self.nan_at, self.epoch, self.step = nan_at, 0, 0

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(batch.images)
        l2 = 0.1 * logits.pow(2).mean()
        if self.nan_at == (self.epoch, self.step):
            l2 = l2 * math.nan
        self.step += 1
        return logits, {"ce": F.cross_entropy(logits, batch.labels), "l2": l2}


class Curves(Reporter):
    def __init__(self) -> None:
        self.rows: list[tuple[int, dict[str, float], float]] = []
        self.steps = 0

    def step(self, n: int = 1, **info) -> None:
        self.steps += n

    def iteration(self, step: int, losses: dict, lr: float) -> None:
        self.rows.append((step, {k: float(v) for k, v in losses.items()}, lr))


def _fit(sync_every_step: bool, tmp_path, nan_at=None, interval: int = 2):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(N, 4, generator=g), torch.randint(0, 3, (N,), generator=g), torch.arange(N))
    ctx = MethodContext(num_classes=3, in_chans=1, image_size=2, num_train=N, train_targets=ds.tensors[1],
                        epochs=3, seed=1)
    recipe = Recipe(name="t", epochs=3, batch_size=BATCH, lr=0.5, schedule="cosine", weight_decay=0.0)
    torch.manual_seed(0)
    model, curves = Linear(ctx, nan_at), Curves()
    settings = EngineSettings(CPU, sync_every_step=sync_every_step, log_interval=interval)
    result = Engine(settings, curves).fit(
        model, make_train_loader(ds, BATCH, seed=1, device=CPU), make_eval_loader(ds, BATCH, order_seed=0, device=CPU),
        recipe, seed=1, checkpoint_path=tmp_path / "checkpoint.pt")
    return result, curves


def _numbers(result) -> list[dict]:
    return [{k: v for k, v in asdict(r).items() if not k.endswith("_s")} for r in result.history]


def test_reading_the_losses_per_interval_gives_the_per_step_numbers_and_curves(tmp_path):
    every, every_curves = _fit(True, tmp_path / "a")
    batched, batched_curves = _fit(False, tmp_path / "b", interval=2)  # 5 steps: flushes after 2, 4, and 5
    assert _numbers(batched) == _numbers(every)
    assert batched_curves.rows == every_curves.rows  # every step, in order, with its lr
    assert [step for step, _, _ in batched_curves.rows] == list(range(1, 16))
    assert set(batched_curves.rows[0][1]) == {"ce", "l2", "total"}
    assert batched_curves.steps == every_curves.steps == 15


@pytest.mark.parametrize("sync_every_step", [True, False])
def test_a_non_finite_loss_stops_at_its_step_before_that_epochs_checkpoint(tmp_path, sync_every_step):
    with pytest.raises(RunDiverged) as err:
        _fit(sync_every_step, tmp_path, nan_at=(2, 2), interval=4)  # read after step 3 of epoch 2's 5
    assert (err.value.epoch, err.value.step) == (2, 2)
    assert math.isnan(err.value.losses["l2"]) and math.isfinite(err.value.losses["ce"])
    history = load_plain_checkpoint(tmp_path / "checkpoint.pt")["history"]
    assert [h["epoch"] for h in history] == [1]  # epoch 2 never reached a checkpoint


def test_determinism_switches_cudnn_autotuning_and_is_recorded():
    try:
        assert configure_determinism(False, CPU)["cudnn_benchmark"] is True
        on = configure_determinism(True, CPU)
        assert on["deterministic"] is True and on["cudnn_benchmark"] is False
        assert not torch.are_deterministic_algorithms_enabled()  # CPU: kernels are deterministic already
    finally:
        torch.backends.cudnn.benchmark = False
