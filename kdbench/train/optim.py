"""The optimizer (:func:`build_optimizer`, the one place kdbench builds one) and its parameter groups: a method
names groups of its trainable parameters, the run's settings scale them, the optimizer gets one torch param group
each.

A method declares the modules it adds (a FitNet regressor, CRD's embedding heads, ...) in
`Distiller.param_group_modules` (group name → attribute path), and :meth:`Distiller.param_groups` returns
:class:`ParamGroup` objects: a name, its parameters, and the method's own overrides (an lr scale, a weight decay)
where a published recipe gives one. The references (RepDistiller, mdistiller) train those modules with the
student's lr and weight decay, so no built-in method overrides anything by default.

A user overrides a declared group with `--set group.NAME.lr_scale=X` / `--set group.NAME.weight_decay=Y`: one
scope for every method, not a field on each method's dataclass, because the setting belongs to the optimizer
(like `recipe.lr`), and a per-method field would be a dozen copies of the same knob. The overrides are in the
run config (`RunConfig.param_groups`), hence in the run id; they are checked against the method's declared
groups when the config is resolved, before anything runs.

Group lr = recipe.lr × the method's lr_scale × the user's lr_scale; weight decay = the user's, else the
method's, else the recipe's. The schedule multiplies each group's own base lr (`initial_lr`), so warm-up, cosine
and milestones apply to every group alike. When no group differs from the recipe (every run of the built-in
methods without a `group.*` setting), the optimizer holds ONE group of all trainable parameters in the model's
order: exactly the optimizer, the numbers and the checkpoints of before groups existed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from kdbench.core.errors import UserError
from kdbench.spec.recipe import Recipe
from kdbench.train.dot import DistillationOrientedSGD

GROUP_SCOPE = "group"
# The group holding every trainable parameter no declared group claims (the student, mostly).
MAIN_GROUP = "main"
GROUP_KEYS = ("lr_scale", "weight_decay")


@dataclass
class ParamGroup:
    """A named group of trainable parameters and the method's overrides (None / 1.0: the recipe's)."""

    name: str
    params: list[nn.Parameter] = field(default_factory=list)
    lr_scale: float = 1.0
    weight_decay: float | None = None


def parse_group_sets(items: Mapping[str, str], groups: Mapping[str, str], method: str) -> dict[str, dict[str, float]]:
    """`{"regressor.lr_scale": "0.1"}` (the `group` scope of `--set`) → `{"regressor": {"lr_scale": 0.1}}`,
    checked against `method`'s declared `groups`: unknown names and keys, and values out of range, are one-line
    UserErrors."""
    out: dict[str, dict[str, float]] = {}
    for item, text in items.items():
        name, dot, key = item.rpartition(".")
        if not dot or not name:
            raise UserError(f"--set {GROUP_SCOPE}.{item}: expected {GROUP_SCOPE}.NAME.KEY=VALUE with KEY one of "
                            f"{', '.join(GROUP_KEYS)}")
        if name not in groups:
            valid = ", ".join(sorted(groups)) or "(none: it trains one group)"
            raise UserError(f"--set {GROUP_SCOPE}.{item}: method '{method}' has no parameter group '{name}'. "
                            f"Valid: {valid}")
        if key not in GROUP_KEYS:
            raise UserError(f"--set {GROUP_SCOPE}.{item}: unknown key '{key}'. Valid: {', '.join(GROUP_KEYS)}")
        try:
            value = float(text)
        except ValueError:
            raise UserError(f"{GROUP_SCOPE}.{item}: expected float, got '{text}'") from None
        low, high = (0.0, 100.0) if key == "lr_scale" else (0.0, 1.0)
        if not math.isfinite(value) or not (low < value <= high if key == "lr_scale" else low <= value <= high):
            allowed = f"({low:g}, {high:g}]" if key == "lr_scale" else f"[{low:g}, {high:g}]"
            raise UserError(f"{GROUP_SCOPE}.{item}={text} is out of range; allowed: {allowed}")
        out.setdefault(name, {})[key] = value
    return out


def resolved_groups(groups: list[ParamGroup], recipe: Recipe,
                    overrides: Mapping[str, Mapping[str, float]]) -> list[dict[str, Any]]:
    """The torch param groups: `{"name", "params", "lr", "weight_decay", "lr_scale"}` per non-empty group, with
    the user's `overrides` applied; one group of everything when none differs from the recipe."""
    out = []
    for g in groups:
        own = overrides.get(g.name, {})
        scale = g.lr_scale * own.get("lr_scale", 1.0)
        decay = own.get("weight_decay", g.weight_decay if g.weight_decay is not None else recipe.weight_decay)
        if g.params:
            out.append({"name": g.name, "params": list(g.params), "lr": recipe.lr * scale, "lr_scale": scale,
                        "weight_decay": decay})
    if all(g["lr_scale"] == 1.0 and g["weight_decay"] == recipe.weight_decay for g in out):
        everything = [p for g in groups for p in g.params]
        return [{"name": MAIN_GROUP, "params": everything, "lr": recipe.lr, "lr_scale": 1.0,
                 "weight_decay": recipe.weight_decay}]
    return out


def check_partition(groups: list[ParamGroup], trainable: list[nn.Parameter]) -> None:
    """Every trainable parameter in exactly one group (a method's param_groups() that drops or doubles one is a
    bug in the method, not a user mistake)."""
    seen = [id(p) for g in groups for p in g.params]
    if len(seen) != len(set(seen)) or set(seen) != {id(p) for p in trainable}:
        raise RuntimeError("param_groups() must hold every trainable parameter exactly once")


def build_optimizer(model: nn.Module, recipe: Recipe, overrides: Mapping[str, Mapping[str, float]] | None = None,
                    *, fused: bool = False) -> tuple[torch.optim.Optimizer, list[dict[str, Any]]]:
    """The one optimizer builder: the recipe's optimizer (SGD with its momentum / Nesterov, DOT's two-momentum SGD
    when `recipe.dot_delta` is set, or AdamW) over
    `model.param_groups()` (a Distiller) — or over a plain module's trainable parameters, as one group — and,
    for the run record, each group's name, parameter count, base lr and weight decay. `fused`: torch's fused
    SGD / AdamW kernel (a compiled run's optimizer step, kdbench.train.compile; DOT's optimizer has none), which
    sums in another order than the default."""
    # Asked by attribute, not isinstance(Distiller): kdbench.train.method imports this module.
    trainable = list(model.trainable_parameters() if hasattr(model, "trainable_parameters")
                     else (p for p in model.parameters() if p.requires_grad))
    groups = model.param_groups() if hasattr(model, "param_groups") else [ParamGroup(MAIN_GROUP, trainable)]
    check_partition(groups, trainable)
    # Overrides of groups this model lacks do not apply (e.g. a zoo teacher trained inside a FitNet run).
    overrides = {name: o for name, o in (overrides or {}).items() if any(g.name == name for g in groups)}
    if not any(g.lr_scale != 1.0 or g.weight_decay is not None for g in groups) and not overrides:
        torch_groups: list[Any] = [{"name": MAIN_GROUP, "params": trainable, "lr_scale": 1.0}]  # today's order
    else:
        torch_groups = resolved_groups(groups, recipe, overrides)
    optimizer = _torch_optimizer(torch_groups, recipe, fused)
    described = [{"name": g["name"], "params": sum(p.numel() for p in g["params"]), "lr": g["lr"],
                  "weight_decay": g["weight_decay"]} for g in optimizer.param_groups]
    return optimizer, described


def _torch_optimizer(groups: list[dict[str, Any]], recipe: Recipe, fused: bool) -> torch.optim.Optimizer:
    # The recipe's lr and weight decay are the defaults of groups that do not set their own. `fused` only when asked:
    # left unset, torch picks foreach, which every eager run's numbers come from.
    kernel = {"fused": True} if fused else {}
    if recipe.dot_delta:  # DOT (kdbench.train.dot); the recipe has checked it is SGD with momentum
        return DistillationOrientedSGD(groups, lr=recipe.lr, momentum=recipe.momentum, dot_delta=recipe.dot_delta,
                                       weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov and recipe.momentum > 0,
            weight_decay=recipe.weight_decay, **kernel,
        )
    return torch.optim.AdamW(groups, lr=recipe.lr, weight_decay=recipe.weight_decay, **kernel)


def group_base_lr(group: Mapping[str, Any], recipe: Recipe) -> float:
    """The base lr the schedule's factor multiplies in `group` (a resumed optimizer holds its last lr)."""
    return recipe.lr * float(group.get("lr_scale", 1.0))
