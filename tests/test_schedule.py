"""The optimizer a recipe builds and the learning rate of each epoch, against the formulas written out."""

from __future__ import annotations

import math

import pytest
import torch

from kdbench.recipe import Recipe
from kdbench.schedule import build_optimizer, lr_at_epoch, set_lr


def _params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(2, 2).parameters())


def test_sgd_takes_the_recipes_lr_momentum_nesterov_and_weight_decay():
    opt = build_optimizer(_params(), Recipe(name="r", epochs=3, batch_size=4, lr=0.3, momentum=0.8, nesterov=True,
                                            weight_decay=1e-3))
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups[0]["params"]) == 2
    group = opt.param_groups[0]
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.3, 0.8, True, 1e-3)
    plain = build_optimizer(_params(), Recipe(name="r", epochs=3, batch_size=4, lr=0.3)).param_groups[0]
    assert plain["nesterov"] is False and plain["momentum"] == 0.9 and plain["weight_decay"] == 5e-4
    # Nesterov needs momentum: without it the flag is dropped rather than refused by torch.
    no_momentum = build_optimizer(_params(), Recipe(name="r", epochs=3, batch_size=4, lr=0.3, momentum=0.0,
                                                    nesterov=True)).param_groups[0]
    assert no_momentum["nesterov"] is False


def test_adamw_takes_the_recipes_lr_and_weight_decay():
    opt = build_optimizer(_params(), Recipe(name="r", epochs=3, batch_size=4, lr=0.002, optimizer="adamw",
                                            weight_decay=0.05))
    assert isinstance(opt, torch.optim.AdamW)
    assert (opt.param_groups[0]["lr"], opt.param_groups[0]["weight_decay"]) == (0.002, 0.05)


def test_warmup_ramps_linearly_below_the_base_lr():
    r = Recipe(name="r", epochs=10, batch_size=4, lr=0.6, schedule="constant", warmup_epochs=2)
    assert [lr_at_epoch(r, e) for e in (1, 2, 3, 10)] == pytest.approx([0.2, 0.4, 0.6, 0.6])


def test_multistep_decays_after_each_milestone():
    r = Recipe(name="r", epochs=12, batch_size=4, lr=0.5, schedule="multistep", milestones=(3, 6), gamma=0.2)
    expected = [0.5] * 3 + [0.1] * 3 + [0.02] * 6  # epoch > milestone: 4..6 at ×0.2, 7.. at ×0.04
    assert [lr_at_epoch(r, e) for e in range(1, 13)] == pytest.approx(expected)


def test_multistep_after_warmup_counts_milestones_from_epoch_one():
    r = Recipe(name="r", epochs=8, batch_size=4, lr=0.4, schedule="multistep", milestones=(4,), gamma=0.5,
               warmup_epochs=1)
    assert [lr_at_epoch(r, e) for e in (1, 2, 4, 5)] == pytest.approx([0.2, 0.4, 0.4, 0.2])


@pytest.mark.parametrize("warmup", [0, 2])
def test_cosine_is_the_half_cosine_over_the_epochs_after_warmup(warmup: int):
    r = Recipe(name="r", epochs=7, batch_size=4, lr=0.8, schedule="cosine", warmup_epochs=warmup)
    span = 7 - warmup
    for e in range(warmup + 1, 8):
        expected = 0.8 * 0.5 * (1 + math.cos(math.pi * (e - 1 - warmup) / span))
        assert lr_at_epoch(r, e) == pytest.approx(expected)
    assert lr_at_epoch(r, warmup + 1) == pytest.approx(0.8)  # the first epoch after warm-up runs at the full lr


def test_cosine_when_warmup_takes_every_epoch():
    r = Recipe(name="r", epochs=2, batch_size=4, lr=0.9, schedule="cosine", warmup_epochs=2)
    assert [lr_at_epoch(r, e) for e in (1, 2)] == pytest.approx([0.3, 0.6])


def test_set_lr_sets_every_group():
    opt = torch.optim.SGD([{"params": _params()}, {"params": _params(), "lr": 0.5}], lr=0.1)
    set_lr(opt, 0.025)
    assert [g["lr"] for g in opt.param_groups] == [0.025, 0.025]
