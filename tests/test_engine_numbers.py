"""The numbers the engine writes for each epoch, on a tiny linear method in seconds: the logged losses are the
epoch means of what the method returned (and their sum), train top-1 counts the method's logits, lr follows the
schedule, evaluation is the evaluator's, the best epoch is the earliest of the highest, a non-finite loss stops
the run before any step, and checkpoints follow their interval."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from kdbench.core.errors import RunDiverged
from kdbench.core.progress import Reporter
from kdbench.data.loaders import make_eval_loader, make_train_loader
from kdbench.spec.recipe import Recipe
from kdbench.store.record_builder import fit_metrics
from kdbench.train.engine import Engine, EngineSettings, EpochRecord, FitCallbacks, FitResult, epoch_seed
from kdbench.train.evaluate import evaluate
from kdbench.train.method import Batch, Distiller, MethodContext
from kdbench.train.schedule import lr_factor

CPU = torch.device("cpu")
N, BATCH = 26, 8  # batches of 8, 8, 8; the ragged last 2 are dropped


class TwoLosses(Distiller):
    """A linear student with two named losses; records, per batch, the values it returned and its hits."""

    needs_teacher = False

    def __init__(self, ctx: MethodContext, nan_at: tuple[int, int] | None = None) -> None:
        super().__init__(nn.Linear(4, 3), None, None, ctx)
        self.log: list[tuple[int, float, float, int, int]] = []  # epoch, ce, l2, hits, samples
        self.dtypes: set[torch.dtype] = set()
        self.epoch = 0
        self.nan_at = nan_at

    def on_epoch_start(self, epoch: int) -> None:
        self.epoch = epoch

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = self.student(batch.images)
        self.dtypes.add(logits.dtype)
        ce = 0.7 * F.cross_entropy(logits, batch.labels)
        l2 = 0.1 * logits.pow(2).mean()
        if self.nan_at == (self.epoch, sum(e == self.epoch for e, *_ in self.log)):
            l2 = l2 * math.nan
        hits = int((logits.argmax(1) == batch.labels).sum())
        self.log.append((self.epoch, ce.item(), l2.item(), hits, len(batch.labels)))
        return logits, {"ce": ce, "l2": l2}


def _setup(**recipe_kw):
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(N, 4, generator=g), torch.randint(0, 3, (N,), generator=g), torch.arange(N))
    ctx = MethodContext(num_classes=3, in_chans=1, image_size=2, num_train=N, train_targets=ds.tensors[1],
                        epochs=3, seed=1)
    epochs = recipe_kw.pop("epochs", 3)
    recipe = Recipe(name="t", epochs=epochs, batch_size=BATCH, lr=0.5, schedule="multistep",
                    milestones=(1,) if epochs > 1 else (), gamma=0.1, weight_decay=0.0, **recipe_kw)
    return ds, ctx, recipe


def _fit(model, ds, recipe, settings=None, **kw) -> FitResult:
    torch.manual_seed(0)
    train = make_train_loader(ds, BATCH, seed=1, device=CPU)
    evaluation = make_eval_loader(ds, BATCH, order_seed=0, device=CPU)
    return Engine(settings or EngineSettings(CPU)).fit(model, train, evaluation, recipe, seed=1, **kw)


def test_each_epoch_logs_the_means_of_the_methods_losses_its_train_top1_lr_and_the_evaluators_numbers():
    ds, ctx, recipe = _setup()
    model = TwoLosses(ctx)
    before = model.student.weight.detach().clone()
    result = _fit(model, ds, recipe)
    assert [r.epoch for r in result.history] == [1, 2, 3]
    for record in result.history:
        rows = [row for row in model.log if row[0] == record.epoch]
        assert len(rows) == 3  # 26 samples: 3 full batches of 8
        ce = sum(r[1] for r in rows) / 3
        l2 = sum(r[2] for r in rows) / 3
        assert record.losses == pytest.approx({"ce": ce, "l2": l2, "total": ce + l2}, rel=1e-6)
        assert record.train_top1 == pytest.approx(100.0 * sum(r[3] for r in rows) / sum(r[4] for r in rows))
        first_step = (record.epoch - 1) * 3
        assert record.lr == pytest.approx(0.5 * lr_factor(recipe, first_step, 3))
        assert record.lr_last == pytest.approx(0.5 * lr_factor(recipe, first_step + 2, 3))
        assert 0 < record.epoch_s < 60 and 0 < record.eval_s < 60
    assert [r.lr for r in result.history] == pytest.approx([0.5, 0.05, 0.05])
    final = evaluate(model, make_eval_loader(ds, BATCH, order_seed=0, device=CPU), CPU)
    last = result.last
    assert (last.top1, last.top5, last.eval_loss) == (final.top1, final.top5, pytest.approx(final.loss))
    assert not torch.equal(model.student.weight, before)  # the optimizer stepped
    assert model.dtypes == {torch.float32} and result.resumed_from == 0  # no AMP unless asked; a fresh run


def test_amp_on_cpu_trains_in_bfloat16():
    ds, ctx, recipe = _setup(epochs=1)
    model = TwoLosses(ctx)
    _fit(model, ds, recipe, EngineSettings(CPU, amp=True))
    assert model.dtypes == {torch.bfloat16}


class SeesLayout(Distiller):
    """A student over 2×3×3 images; records whether each training batch it was given is channels-last."""

    needs_teacher = False

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(nn.Sequential(nn.Conv2d(2, 3, 1), nn.Flatten(), nn.Linear(27, 3)), None, None, ctx)
        self.channels_last: list[bool] = []

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.channels_last.append(batch.images.is_contiguous(memory_format=torch.channels_last))
        logits = self.student(batch.images)
        return logits, {"ce": F.cross_entropy(logits, batch.labels)}


@pytest.mark.parametrize("channels_last", [False, True])
def test_channels_last_gives_the_method_channels_last_batches(channels_last):
    _, ctx, recipe = _setup(epochs=1)
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(N, 2, 3, 3, generator=g), torch.randint(0, 3, (N,), generator=g), torch.arange(N))
    model = SeesLayout(ctx)
    _fit(model, ds, recipe, EngineSettings(CPU, channels_last=channels_last))
    assert model.channels_last == [channels_last] * (N // BATCH)


class CountSteps(Reporter):
    def __init__(self) -> None:
        self.phases: list[tuple[str, int | None]] = []
        self.steps = 0
        self.summaries: list[dict] = []

    def phase_start(self, label: str, total: int | None = None) -> None:
        self.phases.append((label, total))

    def step(self, n: int = 1, **info) -> None:
        self.steps += n

    def phase_end(self, summary=None) -> None:
        self.summaries.append(summary)


def test_progress_reports_one_step_per_batch_and_each_epochs_record():
    ds, ctx, recipe = _setup()
    reporter = CountSteps()
    train = make_train_loader(ds, BATCH, seed=1, device=CPU)
    result = Engine(EngineSettings(CPU), reporter).fit(TwoLosses(ctx), train,
                                                       make_eval_loader(ds, BATCH, order_seed=0, device=CPU),
                                                       recipe, seed=1)
    assert reporter.phases == [("epoch 1/3", 3), ("epoch 2/3", 3), ("epoch 3/3", 3)] and reporter.steps == 9
    assert [s["top1"] for s in reporter.summaries] == [r.top1 for r in result.history]


def test_epoch_seeds_are_pinned_and_fit_numpys_seed_range():
    # Changing the formula would change every published number: these values are part of reproducibility.
    assert [epoch_seed(0, 1), epoch_seed(5, 240), epoch_seed(10_000, 3)] == [7919, 6900575, 1410119165]
    assert epoch_seed(3000, 0) == 852525352  # 3000·1000003 lies between 2^31 and 2^32: the modulus is 2^31
    assert 0 <= epoch_seed(2**40, 7) < 2**31


class FirstEpochOnly(TwoLosses):
    """Adds a parameter that only epoch 1's loss uses: later steps must leave it alone (no gradient, no step)."""

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.extra = nn.Parameter(torch.ones(3))

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, losses = super().forward_train(batch)
        if self.epoch == 1:
            losses["extra"] = (self.extra * logits).pow(2).mean()
        return logits, losses


def test_a_parameter_without_gradient_in_a_step_is_not_moved_by_momentum():
    # FitNet's two stages leave the regressor (or the classifier) without a gradient: gradients are reset to None,
    # not zero, so SGD's momentum does not keep moving them.
    ds, ctx, recipe = _setup()
    model = FirstEpochOnly(ctx)
    after_first: list[torch.Tensor] = []
    _fit(model, ds, recipe,
         callbacks=FitCallbacks(on_epoch_end=lambda r: after_first.append(model.extra.detach().clone())))
    assert not torch.equal(after_first[0], torch.ones(3))
    assert torch.equal(model.extra.detach(), after_first[0])


def _record(epoch: int, top1: float) -> EpochRecord:
    return EpochRecord(epoch=epoch, lr=0.1, lr_last=0.1, losses={}, train_top1=0.0, top1=top1, top5=top1 + 10,
                       eval_loss=1.0,
                       epoch_s=1.0, eval_s=1.0)


def test_the_best_epoch_is_the_earliest_of_the_highest_top1():
    result = FitResult([_record(1, 50.0), _record(2, 70.0), _record(3, 70.0), _record(4, 60.0)])
    assert result.best.epoch == 2 and result.last.epoch == 4
    assert fit_metrics(result) == {"top1_last": 60.0, "top5_last": 70.0, "top1_best": 70.0, "top5_best": 80.0,
                                "best_epoch": 2, "epochs": 4, "best_selected_on": "test"}


def test_a_non_finite_loss_stops_the_run_before_the_step():
    ds, ctx, recipe = _setup()
    model = TwoLosses(ctx, nan_at=(2, 1))  # epoch 2, second batch
    with pytest.raises(RunDiverged) as err:
        _fit(model, ds, recipe)
    assert (err.value.epoch, err.value.step) == (2, 1)
    assert math.isnan(err.value.losses["l2"]) and math.isfinite(err.value.losses["ce"])
    assert torch.isfinite(model.student.weight).all()


class Stop(Exception):
    pass


def _stop_after(n: int):
    def hook(result: FitResult) -> None:
        if len(result.history) == n:
            raise Stop

    return hook


@pytest.mark.parametrize("interval,saved", [(None, True), ("clock", False)], ids=["default-every-epoch", "long"])
def test_checkpoints_follow_their_interval_and_the_last_epoch_is_always_saved(tmp_path: Path, interval, saved):
    ds, ctx, recipe = _setup()
    ckpt = tmp_path / "ckpt.pt"
    # "clock": an interval far longer than an epoch, yet shorter than a sum of two clock readings would be.
    seconds = time.monotonic() if interval == "clock" else None
    settings = EngineSettings(CPU) if seconds is None else EngineSettings(CPU, checkpoint_interval_s=seconds)
    with pytest.raises(Stop):
        _fit(TwoLosses(ctx), ds, recipe, settings, checkpoint_path=ckpt,
             callbacks=FitCallbacks(on_epoch_end=_stop_after(1)))
    assert ckpt.exists() == saved
    result = _fit(TwoLosses(ctx), ds, recipe, settings, checkpoint_path=ckpt)
    assert result.resumed_from == (1 if saved else 0) and ckpt.exists()
    state = torch.load(ckpt, weights_only=False)
    assert [r["epoch"] for r in state["history"]] == [1, 2, 3]


def test_an_epoch_of_one_batch_logs_that_batchs_losses():
    ds, ctx, recipe = _setup(epochs=1)
    model = TwoLosses(ctx)
    torch.manual_seed(0)
    train = make_train_loader(ds, 32, seed=1, device=CPU)  # 26 samples, fewer than a batch: one batch
    result = Engine(EngineSettings(CPU)).fit(model, train, make_eval_loader(ds, 32, order_seed=0, device=CPU),
                                             recipe.replace(batch_size=32), seed=1)
    (_, ce, l2, hits, _), = model.log
    assert result.last.losses == pytest.approx({"ce": ce, "l2": l2, "total": ce + l2}, rel=1e-6)
    assert result.last.train_top1 == pytest.approx(100.0 * hits / N)


class StepLR(Distiller):
    """A linear student trained by plain SGD (no momentum, no weight decay), keeping its weight before each step
    and the gradient of that step: the lr the engine applied at step k is (w_k − w_{k+1}) / g_k."""

    needs_teacher = False

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(nn.Linear(4, 3, bias=False), None, None, ctx)
        self.weights: list[torch.Tensor] = []
        self.grads: list[torch.Tensor] = []
        self.student.weight.register_hook(lambda g: self.grads.append(g.detach().clone()))

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.weights.append(self.student.weight.detach().clone())
        logits = self.student(batch.images)
        return logits, {"ce": F.cross_entropy(logits, batch.labels)}

    def applied_lrs(self) -> list[float]:
        after = [*self.weights[1:], self.student.weight.detach()]
        lrs = []
        for w0, w1, g in zip(self.weights, after, self.grads, strict=True):
            i = g.abs().argmax()
            lrs.append(float((w0.flatten()[i] - w1.flatten()[i]) / g.flatten()[i]))
        return lrs


def _applied_lrs(**recipe_kw) -> tuple[list[float], FitResult]:
    ds, ctx, _ = _setup()
    recipe = Recipe(name="t", batch_size=BATCH, lr=0.5, momentum=0.0, weight_decay=0.0, **recipe_kw)
    model = StepLR(ctx)
    result = _fit(model, ds, recipe)
    return model.applied_lrs(), result


def test_warmup_then_cosine_changes_the_lr_at_every_step():
    # 3 epochs of 3 steps; 1 warm-up epoch: W = 3 steps at 0.5·(k+1)/4, then the half-cosine over the 6 steps left.
    lrs, result = _applied_lrs(epochs=3, schedule="cosine", warmup_epochs=1)
    by_hand = [0.5 * 1 / 4, 0.5 * 2 / 4, 0.5 * 3 / 4] + [0.5 * 0.5 * (1 + math.cos(math.pi * j / 6)) for j in range(6)]
    assert lrs == pytest.approx(by_hand, rel=1e-4)
    # The epoch record: lr of its first and of its last step.
    assert [lr for r in result.history for lr in (r.lr, r.lr_last)] == pytest.approx(
        [by_hand[0], by_hand[2], by_hand[3], by_hand[5], by_hand[6], by_hand[8]])
    schedule = dict(result.schedule)
    assert (schedule.pop("lr_first"), schedule.pop("lr_last")) == pytest.approx((by_hand[0], by_hand[-1]))
    assert schedule == {"kind": "cosine", "milestones_epochs": [], "gamma": None, "warmup_epochs": 1,
                        "steps_per_epoch": 3, "total_steps": 9, "per": "step"}


def test_one_warmup_epoch_then_one_cosine_epoch_never_runs_at_the_peak_at_the_end():
    lrs, _ = _applied_lrs(epochs=2, schedule="cosine", warmup_epochs=1)
    by_hand = [0.125, 0.25, 0.375] + [0.25 * (1 + math.cos(math.pi * j / 3)) for j in range(3)]
    assert lrs == pytest.approx(by_hand, rel=1e-4)
    assert lrs[-1] < 0.5 * 0.3  # the last step is well below the peak


def test_multistep_decays_after_the_milestone_epoch_with_a_per_step_warmup():
    lrs, _ = _applied_lrs(epochs=3, schedule="multistep", milestones=(2,), gamma=0.1, warmup_epochs=1)
    assert lrs == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5, 0.05, 0.05, 0.05], rel=1e-4)


def test_callbacks_run_on_new_best_before_the_epochs_checkpoint_and_on_epoch_end_after_it(tmp_path: Path):
    ds, ctx, recipe = _setup()
    ckpt = tmp_path / "ckpt.pt"
    calls: list[tuple[str, int, int]] = []  # hook, epoch just trained, epochs in the checkpoint at that moment

    def saved() -> int:
        return len(torch.load(ckpt, weights_only=False)["history"]) if ckpt.exists() else 0

    def hook(name: str):
        return lambda result: calls.append((name, result.last.epoch, saved()))

    result = _fit(TwoLosses(ctx), ds, recipe, checkpoint_path=ckpt,
                  callbacks=FitCallbacks(on_new_best=hook("best"), on_epoch_end=hook("end")))
    best = {e for e in (1, 2, 3) if FitResult(result.history[:e]).best.epoch == e}  # epochs that became best
    expected = []
    for epoch in (1, 2, 3):
        if epoch in best:
            expected.append(("best", epoch, epoch - 1))
        expected.append(("end", epoch, epoch))
    assert calls == expected and 1 in best


def test_the_epoch_seed_sets_the_generators_torch_manual_seed_sets():
    # The engine seeds the CPU (and CUDA) generators directly, without torch.manual_seed's probes of other
    # backends: the states must be the ones torch.manual_seed leaves, or every run's numbers would move.
    import random

    import numpy as np

    from kdbench.train.engine import _seed_everything

    torch.manual_seed(1234)
    random.seed(1234)
    np.random.seed(1234)
    expected = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    torch.manual_seed(0)
    _seed_everything(1234)
    assert torch.equal(torch.get_rng_state(), expected[0])
    assert random.getstate() == expected[1] and (np.random.get_state()[1] == expected[2]).all()


class Steps(Reporter):
    """Keeps the global step numbers and lrs the engine reports for each training step."""

    def __init__(self) -> None:
        self.steps: list[tuple[int, float]] = []

    def iteration(self, step: int, losses: dict, lr: float) -> None:
        self.steps.append((step, lr))


def test_reported_steps_count_from_one_across_epochs_with_each_steps_lr():
    # `--log` backends plot against this step: 1, 2, … without gaps or repeats across epochs, each with the lr the
    # step ran at (the multistep decay after epoch 1).
    ds, ctx, recipe = _setup()
    reporter = Steps()
    torch.manual_seed(0)
    train = make_train_loader(ds, BATCH, seed=1, device=CPU)
    evaluation = make_eval_loader(ds, BATCH, order_seed=0, device=CPU)
    Engine(EngineSettings(CPU), reporter).fit(TwoLosses(ctx), train, evaluation, recipe, seed=1)
    per_epoch = len(train)
    assert [s for s, _ in reporter.steps] == list(range(1, 3 * per_epoch + 1))
    assert [lr for _, lr in reporter.steps] == pytest.approx([0.5] * per_epoch + [0.05] * (2 * per_epoch))


class DrawsEachStep(TwoLosses):
    """Records one draw from torch's global stream at each step (dropout masks and CRD negatives come from it)."""

    def __init__(self, ctx: MethodContext) -> None:
        super().__init__(ctx)
        self.draws: list[float] = []

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        self.draws.append(float(torch.rand(())))
        return super().forward_train(batch)


def test_each_epochs_global_draws_start_from_the_epoch_seed():
    # One process: the stream of epoch e starts at epoch_seed(seed, e), nothing added (the rank is added only
    # when several processes train).
    ds, ctx, recipe = _setup()
    model = DrawsEachStep(ctx)
    _fit(model, ds, recipe)
    per_epoch = len(model.draws) // 3
    loader = make_train_loader(ds, BATCH, seed=1, device=CPU)
    for epoch in (1, 2, 3):
        torch.manual_seed(epoch_seed(1, epoch))
        loader.sampler.set_epoch(epoch)
        next(iter(loader))  # whatever the loader itself draws from the stream before the first batch
        assert model.draws[(epoch - 1) * per_epoch] == float(torch.rand(()))


def test_a_resumed_run_continues_with_the_uninterrupted_runs_lrs(tmp_path: Path):
    # The scheduler of a resumed run is positioned after the epochs done: the same lr per epoch as a run that
    # never stopped (a multistep decay after epoch 1, resumed after epoch 2).
    ds, ctx, recipe = _setup()
    whole = _fit(TwoLosses(ctx), ds, recipe)
    ckpt = tmp_path / "checkpoint.pt"

    def stop_after_two(fit: FitResult) -> None:
        if len(fit.history) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(TwoLosses(ctx), ds, recipe, checkpoint_path=ckpt, callbacks=FitCallbacks(on_epoch_end=stop_after_two))
    resumed = _fit(TwoLosses(ctx), ds, recipe, checkpoint_path=ckpt)
    assert [(r.lr, r.lr_last) for r in resumed.history] == [(r.lr, r.lr_last) for r in whole.history]


def test_engine_defaults_read_every_step_on_cpu_in_batches_of_50_on_a_gpu_one_process_no_syncbn():
    s = EngineSettings(CPU)
    assert (s.log_interval, s.strict_resume, s.world_size, s.sync_bn) == (50, False, 1, False)
