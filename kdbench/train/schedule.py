"""The per-iteration learning rate from a recipe (the optimizer itself: kdbench.train.optim.build_optimizer).

The learning rate changes at every optimizer step and is a pure function of the global step (0-based count of
optimizer steps since the run began): `lr(step) = recipe.lr · lr_factor(recipe, step, steps_per_epoch)`.
:func:`build_scheduler` hands that function to torch's `LambdaLR`, which applies it after each step. Nothing but
the step count is state, so resume is exact without saving a scheduler: a resumed run rebuilds the scheduler at
`done_epochs · steps_per_epoch`. (torch's chainable `LinearLR`/`CosineAnnealingLR`/`MultiStepLR` in a
`SequentialLR` give the same values up to float rounding — tests/test_schedule.py checks it — but they carry
recursive state, and `MultiStepLR` keeps a `Counter`, which a plain-data checkpoint cannot hold.)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR

from kdbench.spec.recipe import Recipe
from kdbench.train.optim import group_base_lr


def lr_factor(recipe: Recipe, step: int, steps_per_epoch: int) -> float:
    """The multiplier of `recipe.lr` at 0-based global optimizer step `step`.

    - warm-up (W = warmup_epochs · steps_per_epoch steps): linear per step, (step + 1) / (W + 1), so the first
      step runs at lr / (W + 1) and the step after warm-up at the full lr (torch's `LinearLR` with
      start_factor 1/(W+1) over W steps);
    - multistep: gamma^(number of milestones m with step ≥ m · steps_per_epoch) — RepDistiller's rule: the decay
      applies from epoch m + 1, after m full epochs (milestones count from the run's first epoch, warm-up
      included);
    - cosine: half-cosine from the full lr towards 0 over the T − W steps after warm-up,
      ½ (1 + cos(π (step − W) / (T − W))), T = epochs · steps_per_epoch (torch's `CosineAnnealingLR`, eta_min 0);
      the last step runs just above 0, never at the peak;
    - constant: 1.
    """
    warmup = recipe.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if recipe.schedule == "multistep":
        return recipe.gamma ** sum(step >= m * steps_per_epoch for m in recipe.milestones)
    if recipe.schedule == "cosine":
        span = max(1, recipe.epochs * steps_per_epoch - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * (step - warmup) / span))
    return 1.0


def build_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, steps_per_epoch: int,
                    start_step: int = 0) -> LambdaLR:
    """torch's LambdaLR over :func:`lr_factor`, positioned so that the optimizer's lr is the one for
    `start_step` (0 for a fresh run, done_epochs · steps_per_epoch for a resumed one). Call `.step()` after
    every optimizer step."""
    for group in optimizer.param_groups:
        # The base lr the factor multiplies (a resumed optimizer holds the last lr): the recipe's, times the
        # group's scale, so the schedule applies to every parameter group alike.
        group["initial_lr"] = group_base_lr(group, recipe)
    return LambdaLR(optimizer, lambda step: lr_factor(recipe, step, steps_per_epoch), last_epoch=start_step - 1)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def describe_schedule(recipe: Recipe, steps_per_epoch: int) -> dict[str, Any]:
    """The schedule a run used, for its record: kind, milestones and warm-up in epochs, the step counts, and the
    lr of the first and of the last optimizer step."""
    total = recipe.epochs * steps_per_epoch
    return {
        "kind": recipe.schedule,
        "milestones_epochs": list(recipe.milestones) if recipe.schedule == "multistep" else [],
        "gamma": recipe.gamma if recipe.schedule == "multistep" else None,
        "warmup_epochs": recipe.warmup_epochs,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "per": "step",
        "lr_first": recipe.lr * lr_factor(recipe, 0, steps_per_epoch),
        "lr_last": recipe.lr * lr_factor(recipe, max(total - 1, 0), steps_per_epoch),
    }
