"""DOT, the Distillation-Oriented Trainer (Zhao, Cui, Song, Liang, ICCV 2023, "DOT: A Distillation-Oriented
Trainer", arXiv:2307.08436): SGD with one momentum buffer for the task loss's gradient and another for the
distillation losses' gradient, the distillation one kept longer.

    m_task = β − Δ,   m_kd = β + Δ          (β the recipe's momentum, Δ `recipe.dot_delta`; the paper's Δ = 0.075)
    g_t = ∇L_task + λ·θ                     (the weight decay λ rides on the task gradient)
    v_task ← m_task · v_task + g_t,   v_kd ← m_kd · v_kd + ∇L_kd
    θ ← θ − lr · v_task − lr · v_kd

In kdbench the task loss is the `ce` term of a method's weighted loss dict and every other term is distillation
(their sum is L_kd). A run without a teacher has nothing for DOT to balance and is refused in one line when it
is resolved (:func:`check_dot_run`). A step whose dict holds one half only (FitNet's two-stage hint pre-stage:
`hint` alone) moves by that half's buffer alone, at β: the reference's rule for a parameter with one gradient,
i.e. plain SGD momentum for that stage.

Everything follows the reference, mdistiller (megvii-research/mdistiller, commit a08d46f,
mdistiller/engine/dot.py `DistillationOrientedTrainer` and engine/trainer.py `DOT`), checked against its numbers in
tests/test_dot_optimizer.py:
- two backward passes per step: L_kd first (graph retained), its gradients kept (:meth:`stash_kd_grads`, its
  `step_kd`), then L_task, then one :meth:`step` that moves every parameter by both buffers;
- a parameter that gets only one of the two gradients (a FitNet regressor gets L_kd's alone) keeps one buffer
  at (m_task + m_kd) / 2 = β, with the weight decay added to that gradient;
- a buffer's first value is the gradient itself (as torch's SGD); the reference's first kd-only step leaves the
  weight decay out (its `buf is None` branch comes before the decay): kept, so the numbers are its numbers;
- no dampening. The reference has no Nesterov; with `recipe.nesterov=true` (the digits recipe's) each buffer
  takes torch SGD's Nesterov form, θ ← θ − lr·(g + m·v) with its own g, m and v: kdbench's extension, which
  with Δ = 0 is torch's Nesterov SGD on the summed loss (tests/test_dot_optimizer.py). The reference's numbers
  are those of nesterov=false (the CIFAR recipes').
The reference takes one parameter group; here each group steps alone with its own lr and weight decay (kdbench's
groups, kdbench.train.optim), which is the reference's rule applied per group. Both buffers live in the optimizer's
state (`momentum_buffer`, `momentum_kd_buffer`), so a checkpoint holds them and a resumed run is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch

from kdbench.core.errors import UserError
from kdbench.spec.recipe import Recipe

TASK_TERM = "ce"


def check_dot_run(recipe: Recipe, *, amp: bool = False, distils: bool = True, world_size: int = 1,
                  scope: str = "recipe", trainee: str = "this training (no teacher)") -> None:
    """Refuse, in one line, a run DOT cannot train (the recipe's own checks, optimizer and momentum, are in
    Recipe): AMP (the two backward passes would each need the scaler's unscale), data-parallel (DDP reduces
    gradients once per forward) and a run without distillation (a teacher's or the `ce` baseline)."""
    if not recipe.dot_delta:
        return
    setting = f"{scope}.dot_delta={recipe.dot_delta:g}"
    if amp:
        raise UserError(f"{setting}: DOT's two backward passes are not implemented with --amp; drop one of them")
    if world_size > 1:
        raise UserError(f"{setting}: DOT is not implemented for data-parallel runs (--nproc {world_size}); "
                        "run it with one process")
    if not distils:
        raise UserError(f"{setting}: DOT balances a task loss against distillation losses and {trainee} has "
                        "none; use it with a distillation method, e.g. kd")


def split_losses(losses: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(L_task, L_kd): the `ce` term, and the sum of every other term in the dict's order; None for a half
    this step's dict does not hold."""
    others = [v for k, v in losses.items() if k != TASK_TERM]
    distil = others[0] if others else None
    for term in others[1:]:
        distil = distil + term
    return losses.get(TASK_TERM), distil


class DistillationOrientedSGD(torch.optim.Optimizer):
    """SGD with separate task / distillation momenta (see the module docstring). Use per step:
    `zero_grad(set_to_none=True)`, L_kd.backward(retain_graph=True), `stash_kd_grads()`,
    `zero_grad(set_to_none=True)`, L_task.backward(), `step()`."""

    def __init__(self, params: Iterable[Any], lr: float, momentum: float, dot_delta: float,
                 weight_decay: float = 0.0, nesterov: bool = False) -> None:
        defaults = {"lr": lr, "momentum": momentum, "dot_delta": dot_delta, "weight_decay": weight_decay,
                    "nesterov": nesterov}
        super().__init__(params, defaults)
        # The distillation gradients of the step in progress (per group, parameter → gradient), between
        # stash_kd_grads() and step(); never part of the state.
        self._kd_grads: list[dict[torch.Tensor, torch.Tensor]] = []

    @torch.no_grad()
    def stash_kd_grads(self) -> None:
        """Keep the gradients now in `.grad` as the distillation gradients of this step (the reference's
        `step_kd`); the caller then clears `.grad` (set to None: the kept tensors are not zeroed)."""
        self._kd_grads = [{p: p.grad for p in group["params"] if p.grad is not None} for group in self.param_groups]

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        """Move every parameter by its task buffer (gradients now in `.grad`), then by its distillation buffer
        (the stashed gradients)."""
        assert closure is None, "DistillationOrientedSGD takes no closure"
        kd_grads = self._kd_grads or [{} for _ in self.param_groups]
        for group, kd in zip(self.param_groups, kd_grads, strict=True):
            self._step_group(group, kd)
        self._kd_grads = []

    def _step_group(self, group: dict[str, Any], kd: dict[torch.Tensor, torch.Tensor]) -> None:
        # The reference's expressions, in its order, so that the bits are its bits.
        lr, decay = group["lr"], group["weight_decay"]
        m_task = group["momentum"] - group["dot_delta"]
        m_kd = group["momentum"] + group["dot_delta"]
        m_one = (m_kd + m_task) / 2.0  # a parameter with only one of the two gradients
        nesterov = group["nesterov"]
        task = [p for p in group["params"] if p.grad is not None]
        has_task = set(task)
        for p in task:
            d_p = p.grad
            if decay != 0:
                d_p = d_p.add(p, alpha=decay)
            m = m_task if p in kd else m_one
            buf = self._buffer(p, "momentum_buffer", d_p, m)
            p.add_(d_p.add(buf, alpha=m) if nesterov else buf, alpha=-lr)
        for p, d_p in kd.items():
            fresh = "momentum_kd_buffer" not in self.state[p]
            if p not in has_task and not fresh and decay != 0:  # the reference's order: no decay on a first step
                d_p = d_p.add(p, alpha=decay)
            m = m_kd if p in has_task else m_one
            buf = self._buffer(p, "momentum_kd_buffer", d_p, m)
            p.add_(d_p.add(buf, alpha=m) if nesterov else buf, alpha=-lr)

    def _buffer(self, p: torch.Tensor, key: str, d_p: torch.Tensor, momentum: float) -> torch.Tensor:
        """The momentum buffer `key` of `p` after this step's gradient `d_p`: the gradient itself at first."""
        state = self.state[p]
        buf = state.get(key)
        if buf is None:
            state[key] = buf = torch.clone(d_p).detach()
        else:
            buf.mul_(momentum).add_(d_p, alpha=1)
        return buf
