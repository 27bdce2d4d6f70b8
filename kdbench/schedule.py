"""Optimizer and per-epoch learning rate from a recipe.

The learning rate is a pure function of the epoch (no scheduler state to save), which keeps resume exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from .recipe import Recipe


def build_optimizer(params: Iterable[torch.nn.Parameter], recipe: Recipe) -> torch.optim.Optimizer:
    params = list(params)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0,
            weight_decay=recipe.weight_decay,
        )
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def lr_at_epoch(recipe: Recipe, epoch: int) -> float:
    """Learning rate for 1-based `epoch`.

    - warm-up: linear ramp over the first `warmup_epochs` epochs, lr · epoch / (warmup_epochs + 1), so that even
      a single warm-up epoch runs at a reduced rate;
    - multistep: lr · gamma^(number of milestones m with epoch > m) — RepDistiller's rule, so milestones
      150/180/210 decay from epoch 151, 181, 211;
    - cosine: half-cosine from lr to 0 over the epochs after warm-up.
    """
    if epoch <= recipe.warmup_epochs:
        return recipe.lr * epoch / (recipe.warmup_epochs + 1)
    if recipe.schedule == "multistep":
        return recipe.lr * recipe.gamma ** sum(epoch > m for m in recipe.milestones)
    if recipe.schedule == "cosine":
        span = max(1, recipe.epochs - recipe.warmup_epochs)
        progress = (epoch - 1 - recipe.warmup_epochs) / span
        return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    return recipe.lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
