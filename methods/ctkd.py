"""`ctkd`: curriculum temperature for knowledge distillation (Li, Li, Yang, Zhao, Song, Luo, Li, Yang, AAAI 2023,
"Curriculum Temperature for Knowledge Distillation", arXiv:2211.16231), as in the authors' code zhengli97/CTKD
(models/temp_global.py, helper/loops.py, train_student.py, scripts/run_cifar_distill.sh). It wraps vanilla KD:

    T = T_min + T_span · sigmoid(GRL_λ(θ))
    L = w_ce · CE(z_s, y) + w_kd · T² · KL( softmax(z_t / T) ‖ softmax(z_s / T) )

θ is learned with the student, through a gradient-reversal layer GRL_λ (identity forward, gradient × −λ
backward): the student minimises the KD loss while the temperature maximises it, λ times as strongly. λ follows
a cosine curriculum over the 1-based epoch e (the reference's CosineDecay(max 0, min −1, loops 10), whose value is
−λ):

    λ(e) = λ_max · (1 − cos(π · min(e, E_λ) / E_λ)) / 2,     λ = λ_max from the start when E_λ = 0

so the task gets harder as training goes. It is a function of the epoch alone (`on_epoch_start`), so a resumed
run continues exactly. E_λ is the reference's 10 epochs of its 240, rescaled to the run's `--epochs` like the
recipe's milestones (:func:`kdbench.spec.recipe.rescale_epochs`: 10 of 240 → 1 of 24, 2 of 40; a 1-epoch run
gets 0) and resolved into the config (`ctkd.lambda_epochs`); an explicit value is taken as stated.

Defaults (the reference's CIFAR script and argparse defaults): w_ce 0.1, w_kd 0.9 (`-r 0.1 -a 0.9`), T_min 1,
T_span 20 (`--t_start 1 --t_end 20`: T in (1, 21)), θ initialised to 1 (T = 15.6 at the start), λ_max 1
(`--decay_min -1`), E_λ 10 (`--decay_loops 10`), global temperature (`--mlp_name global`).

`temperature_mode=instance` predicts one temperature per sample from the two models' logits with a 2-layer MLP
(the paper's instance-wise variant; its code is not in the public repository, only the per-sample KD loss in its
README: T_i² · KL(p_t^{T_i} ‖ p_s^{T_i}), batch mean; here exact, without the README's 1e-7 added to p_t). The
MLP's inputs are detached: only the temperature module plays the adversary, not the student through it.

The temperature module is the parameter group "temperature" (`--set group.temperature.lr_scale=...`); by default it
has the recipe's lr and weight decay, as in the reference (one SGD over the student and Global_T).
`ctkd.logit_std=true` standardizes both models' logits before the temperature (the logit-standardization paper's
CTKD+LS; methods/_logit_standardization.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods._logit_standardization import standardized_pair
from kdbench.spec.recipe import rescale_epochs
from kdbench.train.method import Batch, Distiller, MethodContext, register_method

TEMPERATURE_MODES = ("global", "instance")
# The reference's `--decay_loops 10` and the length of the CIFAR-100 schedule it was stated for.
PUBLISHED_LAMBDA_EPOCHS, PUBLISHED_EPOCHS = 10, 240
THETA_INIT = 1.0  # Global_T's torch.ones(1)
INSTANCE_HIDDEN = 256  # width of the instance-wise MLP's hidden layer


class _GradientReversal(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, strength: float) -> torch.Tensor:
        ctx.strength = strength
        return x.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return -ctx.strength * grad, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Identity forward; backward multiplies the gradient by −`strength` (Ganin & Lempitsky 2015)."""
    return _GradientReversal.apply(x, strength)


def curriculum_lambda(epoch: int, lambda_max: float, lambda_epochs: int) -> float:
    """λ_max · (1 − cos(π · min(e, E_λ) / E_λ)) / 2 for the 1-based epoch e; λ_max when E_λ = 0 (no ramp)."""
    if lambda_epochs <= 0:
        return lambda_max
    e = min(max(epoch, 0), lambda_epochs)
    return lambda_max * (1.0 - math.cos(math.pi * e / lambda_epochs)) / 2.0


def ctkd_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                 temperature: torch.Tensor) -> torch.Tensor:
    """mean_i T_i² · KL(softmax(z_t,i / T_i) ‖ softmax(z_s,i / T_i)), with `temperature` one value (1 element,
    global) or one per sample (B elements); gradients reach the temperature. float32."""
    t = temperature.float().reshape(-1, 1)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1)
    return (kl * t.squeeze(1) ** 2).mean()


class GlobalTemperature(nn.Module):
    """One learned θ for every sample: T = T_min + T_span · sigmoid(GRL_λ(θ)) (the reference's Global_T)."""

    def __init__(self, t_min: float, t_span: float) -> None:
        super().__init__()
        self.t_min, self.t_span = t_min, t_span
        self.theta = nn.Parameter(torch.full((1,), THETA_INIT))

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, strength: float) -> torch.Tensor:
        return self.t_min + self.t_span * torch.sigmoid(reverse_gradient(self.theta, strength))


class InstanceTemperature(nn.Module):
    """A temperature per sample from [z_t, z_s] (detached) through a 2-layer MLP, then the same GRL and range."""

    def __init__(self, num_classes: int, t_min: float, t_span: float) -> None:
        super().__init__()
        self.t_min, self.t_span = t_min, t_span
        self.mlp = nn.Sequential(nn.Linear(2 * num_classes, INSTANCE_HIDDEN), nn.ReLU(),
                                 nn.Linear(INSTANCE_HIDDEN, 1))

    def forward(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, strength: float) -> torch.Tensor:
        x = torch.cat([teacher_logits.detach(), student_logits.detach()], dim=1).float()
        return self.t_min + self.t_span * torch.sigmoid(reverse_gradient(self.mlp(x).squeeze(1), strength))


@dataclass(frozen=True)
class CTKDParams:
    w_ce: float = 0.1  # run_cifar_distill.sh `-r 0.1`
    w_kd: float = 0.9  # `-a 0.9`
    temperature_min: float = 1.0  # `--t_start 1`
    temperature_span: float = 20.0  # `--t_end 20`: T = T_min + T_span · sigmoid(·)
    lambda_max: float = 1.0  # `--decay_min -1` (the GRL's factor is −λ)
    # Epochs of the cosine ramp of λ; None: the reference's 10 of 240 rescaled to the run's epochs (resolve_params).
    lambda_epochs: int | None = None
    temperature_mode: str = "global"  # `--mlp_name global`; "instance": one temperature per sample
    logit_std: bool = False  # logit standardization first (Sun et al. 2024: CTKD+LS)

    def __post_init__(self) -> None:
        check_range("ctkd.w_ce", self.w_ce, 0.0, None)
        check_range("ctkd.w_kd", self.w_kd, 0.0, None)
        check_range("ctkd.temperature_min", self.temperature_min, 0.0, 100.0, low_open=True)
        check_range("ctkd.temperature_span", self.temperature_span, 0.0, 100.0)
        check_range("ctkd.lambda_max", self.lambda_max, 0.0, 100.0)
        if self.lambda_epochs is not None:
            check_range("ctkd.lambda_epochs", self.lambda_epochs, 0, None)
        if self.temperature_mode not in TEMPERATURE_MODES:
            raise UserError(f"unknown ctkd.temperature_mode '{self.temperature_mode}'. "
                            f"Valid: {', '.join(TEMPERATURE_MODES)}")


def resolved_lambda_epochs(params: CTKDParams, epochs: int) -> int:
    """`ctkd.lambda_epochs` when set, else the reference's 10 of 240 epochs rescaled to `epochs`."""
    if params.lambda_epochs is not None:
        return params.lambda_epochs
    return rescale_epochs(PUBLISHED_LAMBDA_EPOCHS, PUBLISHED_EPOCHS, epochs)


@register_method("ctkd", paper="Li et al. 2023, Curriculum Temperature for Knowledge Distillation (AAAI)",
                 params=CTKDParams())
class CTKD(Distiller):
    param_group_modules = {"temperature": "temperature"}  # `--set group.temperature.lr_scale=...`

    def __init__(self, student, teacher, params: CTKDParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        p = params
        self.temperature: nn.Module = (
            GlobalTemperature(p.temperature_min, p.temperature_span) if p.temperature_mode == "global"
            else InstanceTemperature(ctx.num_classes, p.temperature_min, p.temperature_span))
        self.lambda_epochs = resolved_lambda_epochs(p, ctx.epochs)  # already resolved in a run's config
        self._lambda = curriculum_lambda(1, p.lambda_max, self.lambda_epochs)  # set again before every epoch

    @classmethod
    def resolve_params(cls, params: CTKDParams, *, teacher: str | None, student: str, epochs: int) -> CTKDParams:
        """`lambda_epochs` rescaled to the run's `epochs` into the config (an explicit value is kept)."""
        return replace(params, lambda_epochs=resolved_lambda_epochs(params, epochs))

    def on_epoch_start(self, epoch: int) -> None:
        self._lambda = curriculum_lambda(epoch, self.params.lambda_max, self.lambda_epochs)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        logits = self.student(batch.images)
        s, t = standardized_pair(logits, self.teacher_logits(batch), p.logit_std)
        temperature = self.temperature(s, t, self._lambda)
        return logits, {"ce": p.w_ce * self.cross_entropy(logits, batch.labels),
                        "kd": p.w_kd * ctkd_kd_loss(s, t, temperature)}

    def describe(self) -> dict[str, Any]:
        """The curriculum's length, the mode and, for a global temperature, the one learned by the end (the
        reference logs it as `temp`): where the adversary took it within (T_min, T_min + T_span)."""
        info: dict[str, Any] = {"lambda_epochs": self.lambda_epochs, "temperature_mode": self.params.temperature_mode}
        if isinstance(self.temperature, GlobalTemperature):
            with torch.no_grad():
                info["temperature_learned"] = float(self.temperature(torch.empty(0), torch.empty(0), 0.0))
        return info
