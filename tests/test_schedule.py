"""The optimizer a recipe builds, the learning rate of each optimizer step against the formulas written out and
against torch's own schedulers, and schedules that follow `--epochs` (milestones and warm-up rescaled)."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, MultiStepLR, SequentialLR

from kdbench.core.errors import UserError
from kdbench.execute.resolve import RunOptions, resolve_config, resolve_teacher
from kdbench.spec.recipe import Recipe, crd_schedule
from kdbench.train.optim import build_optimizer
from kdbench.train.schedule import build_scheduler, describe_schedule, lr_factor


def _optimizer(recipe: Recipe) -> torch.optim.Optimizer:
    return build_optimizer(torch.nn.Linear(2, 2), recipe)[0]


def test_sgd_takes_the_recipes_lr_momentum_nesterov_and_weight_decay():
    opt = _optimizer(Recipe(name="r", epochs=3, batch_size=4, lr=0.3, momentum=0.8, nesterov=True,
                            weight_decay=1e-3))
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups[0]["params"]) == 2
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.3, 0.8, True, 1e-3)
    plain = _optimizer(Recipe(name="r", epochs=3, batch_size=4, lr=0.3)).param_groups[0]
    assert plain["nesterov"] is False and plain["momentum"] == 0.9 and plain["weight_decay"] == 5e-4
    # Nesterov needs momentum: without it the flag is dropped rather than refused by torch.
    no_momentum = _optimizer(Recipe(name="r", epochs=3, batch_size=4, lr=0.3, momentum=0.0,
                                    nesterov=True)).param_groups[0]
    assert no_momentum["nesterov"] is False


def test_adamw_takes_the_recipes_lr_and_weight_decay():
    opt = _optimizer(Recipe(name="r", epochs=3, batch_size=4, lr=0.002, optimizer="adamw",
                            weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW)
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (0.002, 0.05)


def _lrs(recipe: Recipe, steps_per_epoch: int, start: int = 0) -> list[float]:
    """The lr of every optimizer step from `start`, read off the scheduler the engine uses."""
    opt = _optimizer(recipe)
    sched = build_scheduler(opt, recipe, steps_per_epoch, start)
    out = []
    for _ in range(start, recipe.epochs * steps_per_epoch):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_ramps_linearly_per_step_below_the_base_lr():
    r = Recipe(name="r", epochs=4, batch_size=4, lr=0.6, schedule="constant", warmup_epochs=2)
    # W = 4 steps: 0.6·(k+1)/5, then the full lr.
    assert _lrs(r, 2) == pytest.approx([0.12, 0.24, 0.36, 0.48, 0.6, 0.6, 0.6, 0.6])


def test_multistep_decays_after_each_milestone_epoch():
    r = Recipe(name="r", epochs=5, batch_size=4, lr=0.5, schedule="multistep", milestones=(1, 3), gamma=0.2)
    expected = [0.5] * 2 + [0.1] * 4 + [0.02] * 4  # from epoch 2 (step 2) ×0.2, from epoch 4 (step 6) ×0.04
    assert _lrs(r, 2) == pytest.approx(expected)


@pytest.mark.parametrize("warmup", [0, 1])
def test_cosine_is_the_half_cosine_over_the_steps_after_warmup(warmup: int):
    r = Recipe(name="r", epochs=3, batch_size=4, lr=0.8, schedule="cosine", warmup_epochs=warmup)
    w, span = 2 * warmup, 6 - 2 * warmup
    expected = [0.8 * (k + 1) / (w + 1) for k in range(w)] + [
        0.8 * 0.5 * (1 + math.cos(math.pi * j / span)) for j in range(span)]
    assert _lrs(r, 2) == pytest.approx(expected)


def test_one_warmup_epoch_and_one_cosine_epoch_does_not_end_at_the_peak():
    r = Recipe(name="r", epochs=2, batch_size=4, lr=0.9, schedule="cosine", warmup_epochs=1)
    lrs = _lrs(r, 4)
    assert lrs[3] < 0.9 and lrs[4] == pytest.approx(0.9) and lrs[-1] == pytest.approx(0.9 * 0.5 * (1 + 2**-0.5 * -1))
    assert describe_schedule(r, 4)["lr_last"] == pytest.approx(lrs[-1])


@pytest.mark.parametrize("schedule,milestones", [("cosine", ()), ("multistep", (2, 3))])
def test_the_schedule_is_torchs_linear_warmup_then_cosine_or_multistep(schedule: str, milestones: tuple):
    spe, warmup_epochs = 3, 1
    r = Recipe(name="r", epochs=5, batch_size=4, lr=0.4, schedule=schedule, milestones=milestones, gamma=0.3,
               warmup_epochs=warmup_epochs)
    w = warmup_epochs * spe
    opt = _optimizer(r)
    after = CosineAnnealingLR(opt, T_max=r.epochs * spe - w) if schedule == "cosine" else \
        MultiStepLR(opt, milestones=[m * spe - w for m in milestones], gamma=0.3)
    torch_sched = SequentialLR(opt, [LinearLR(opt, start_factor=1 / (w + 1), total_iters=w), after], milestones=[w])
    theirs = []
    for _ in range(r.epochs * spe):
        theirs.append(opt.param_groups[0]["lr"])
        opt.step()
        torch_sched.step()
    assert _lrs(r, spe) == pytest.approx(theirs, rel=1e-9)


def test_a_resumed_scheduler_continues_with_the_same_lrs():
    r = Recipe(name="r", epochs=4, batch_size=4, lr=0.3, schedule="cosine", warmup_epochs=1)
    assert _lrs(r, 3, start=6) == _lrs(r, 3)[6:]
    assert lr_factor(r, 6, 3) * 0.3 == _lrs(r, 3)[6]


def test_crd_milestones_follow_the_epochs():
    crd = crd_schedule("c", augment="none", cifar_stem=True)
    assert crd.with_epochs(24).milestones == (15, 18, 21)
    assert crd.with_epochs(240) is crd
    assert crd.with_epochs(100).milestones == (63, 75, 88)  # 62.5 → 63: halves round up
    assert crd.with_epochs(3).milestones == (2,)  # 1.875, 2.25, 2.625 → 2, 2, 3 → clamped into 1..2, merged
    assert crd.with_epochs(1).milestones == ()
    digits_like = Recipe(name="d", epochs=10, batch_size=4, lr=0.1, warmup_epochs=1)
    assert [digits_like.with_epochs(e).warmup_epochs for e in (1, 2, 5, 20, 40)] == [0, 1, 1, 2, 4]


def test_the_resolved_config_holds_the_rescaled_schedule_for_student_and_teacher():
    config = resolve_config(RunOptions("kd", teacher="resnet18", dataset="cifar100", epochs=24, teacher_epochs=48))
    assert config.recipe.milestones == (15, 18, 21) and config.recipe.epochs == 24
    assert config.teacher_recipe is not None and config.teacher_recipe.milestones == (30, 36, 42)
    by_set = resolve_config(RunOptions("ce", dataset="cifar100", sets=["recipe.epochs=24"]))
    assert by_set.recipe == config.recipe.replace(lr=by_set.recipe.lr)
    teacher = resolve_teacher("resnet18", "cifar100", sets=["teacher_recipe.epochs=24"])
    assert teacher.recipe.milestones == (15, 18, 21)
    explicit = resolve_config(RunOptions("ce", dataset="cifar100", epochs=24, sets=["recipe.milestones=5,10"]))
    assert explicit.recipe.milestones == (5, 10)  # explicit milestones are taken as given


@pytest.mark.parametrize("milestones", ["5,24", "0,5", "7,5"])
def test_milestones_outside_the_runs_epochs_are_refused(milestones: str):
    with pytest.raises(UserError, match=r"allowed: 1\.\.23"):
        resolve_config(RunOptions("ce", dataset="cifar100", epochs=24, sets=[f"recipe.milestones={milestones}"]))
    with pytest.raises(UserError, match=r"allowed: 1\.\.23"):
        resolve_teacher("resnet18", "cifar100", epochs=24, sets=[f"teacher_recipe.milestones={milestones}"])


def test_a_fresh_scheduler_starts_at_the_first_steps_lr():
    # Without start_step the optimizer holds step 0's lr at once (a warm-up's first, reduced lr), not step 1's.
    r = Recipe(name="r", epochs=4, batch_size=4, lr=0.6, schedule="constant", warmup_epochs=2)
    opt = _optimizer(r)
    build_scheduler(opt, r, 2)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.6 * lr_factor(r, 0, 2)) == pytest.approx(0.12)


@pytest.mark.parametrize("schedule", ["multistep", "cosine"])
def test_the_records_schedule_states_its_kind_milestones_and_first_and_last_lr(schedule: str):
    r = Recipe(name="r", epochs=10, batch_size=4, lr=0.4, schedule=schedule, milestones=(4, 8), gamma=0.1,
               warmup_epochs=1)
    described = describe_schedule(r, steps_per_epoch=3)
    multistep = schedule == "multistep"
    assert described == {
        "kind": schedule, "milestones_epochs": [4, 8] if multistep else [], "gamma": 0.1 if multistep else None,
        "warmup_epochs": 1, "steps_per_epoch": 3, "total_steps": 30, "per": "step",
        # the first step is warm-up's first (lr / (W + 1), W = 3 steps); the last is step 29
        "lr_first": pytest.approx(0.4 / 4),
        "lr_last": pytest.approx(0.4 * 0.1 ** 2 if multistep else 0.4 * 0.5 * (1 + math.cos(math.pi * 26 / 27))),
    }


def test_the_current_lr_is_the_first_groups():
    from kdbench.train.schedule import current_lr

    opt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.3},
                           {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.03}])
    assert current_lr(opt) == 0.3
