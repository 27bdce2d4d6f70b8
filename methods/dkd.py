"""`dkd`: decoupled knowledge distillation (Zhao, Cui, Song, Qiu, Liang, CVPR 2022, "Decoupled Knowledge
Distillation", arXiv:2203.08679), as in the authors' mdistiller code.

    L = w_ce · CE(z_s, y) + min(epoch / warmup, 1) · ( α · TCKD + β · NCKD )

with p = softmax(z / T) of each model, t the target class,
    TCKD = T² · KL( [p_t^T, 1 − p_t^T]  ‖  [p_t^S, 1 − p_t^S] )                 (target vs non-target)
    NCKD = T² · KL( p̂^T ‖ p̂^S ),   p̂_i = p_i / (1 − p_t)  for i ≠ t             (among the non-target classes)
each averaged over the batch. Defaults (mdistiller's CFG.DKD): w_ce 1, α 1, β 8, T 4, warm-up 20 epochs of its
240-epoch CIFAR-100 schedule (the factor is a function of the 1-based epoch alone, so a resumed run continues
exactly). The options name the weights for what they weigh: `dkd.w_tckd` is the paper's α, `dkd.w_nckd` its β.

Warm-up and `--epochs`: the published 20 epochs are a twelfth of mdistiller's 240. A run of other length gets
them rescaled by the rule the recipe's milestones follow (:func:`kdbench.spec.recipe.rescale_epochs`: 20 of 240 →
2 of 24, 3 of 40, 1 of 10), so the KD terms ramp up over the same share of training; without that, a 40-epoch
run would spend half of it below full weight and a 10-epoch run would never reach it. The rescaled value is
resolved into the run config (`dkd.warmup`), so the run id follows it; an explicit `--set dkd.warmup=N` is
taken as stated.

β per pair: the DKD paper tuned β for some CIFAR-100 pairs (mdistiller's configs/cifar100/dkd/*.yaml):
:data:`PUBLISHED_BETA`. `dkd.nckd_preset=published` (the default) resolves `dkd.w_nckd` from that table for
the run's (teacher, student), else 8; `dkd.nckd_preset=none` gives 8 for every pair; an explicit
`--set dkd.w_nckd=X` always wins. The resolved β is what the run config records and hashes (see
:meth:`DKD.resolve_params`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.methods._logit_standardization import standardized_pair
from kdbench.spec.recipe import rescale_epochs
from kdbench.train.method import Batch, Distiller, MethodContext, register_method

DEFAULT_BETA = 8.0
# mdistiller's CFG.DKD.WARMUP and the length of the CIFAR-100 schedule it was stated for (CFG.SOLVER.EPOCHS).
PUBLISHED_WARMUP, PUBLISHED_EPOCHS = 20, 240
BETA_PRESETS = ("published", "none")
# (teacher, student) → β in the DKD paper / mdistiller configs, named as kdbench's CIFAR zoo names them. Pairs
# not listed (resnet32x4 → resnet8x4, the ShuffleNet and ResNet50 → MobileNetV2 pairs, ...) use β = 8.
PUBLISHED_BETA: dict[tuple[str, str], float] = {
    ("cifar_resnet56", "cifar_resnet20"): 2.0,
    ("cifar_resnet110", "cifar_resnet32"): 2.0,
    ("cifar_wrn_40_2", "cifar_wrn_16_2"): 6.0,
    ("cifar_wrn_40_2", "cifar_wrn_40_1"): 6.0,
    ("cifar_vgg13", "cifar_vgg8"): 6.0,
    ("cifar_vgg13", "cifar_mobilenetv2"): 6.0,  # mdistiller's vgg13 → MobileNetV2
}


def _target_split_log_probs(logits: torch.Tensor, labels: torch.Tensor, temperature: float):
    """log p_t, log(1 − p_t) and the non-target log-distribution log p̂ (target entry −inf), all from logsumexp
    (no log of a difference, stable at any T)."""
    z = logits.float() / temperature
    target = F.one_hot(labels, z.shape[1]).bool()
    lse_all = z.logsumexp(dim=1)
    z_non = z.masked_fill(target, float("-inf"))
    lse_non = z_non.logsumexp(dim=1)
    log_p_target = z.gather(1, labels[:, None]).squeeze(1) - lse_all
    log_p_other = lse_non - lse_all
    log_p_hat = z_non - lse_non[:, None]
    return log_p_target, log_p_other, log_p_hat, target


def tckd_nckd(
    logits_student: torch.Tensor, logits_teacher: torch.Tensor, labels: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (TCKD, NCKD), each already scaled by T² (formulas in the module docstring), shape (B,)."""
    s_t, s_o, s_hat, target = _target_split_log_probs(logits_student, labels, temperature)
    t_t, t_o, t_hat, _ = _target_split_log_probs(logits_teacher, labels, temperature)
    tckd = t_t.exp() * (t_t - s_t) + t_o.exp() * (t_o - s_o)
    diff = (t_hat - s_hat).masked_fill(target, 0.0)  # −inf − (−inf) at the target: excluded
    nckd = (t_hat.exp() * diff).sum(dim=1)
    t2 = temperature * temperature
    return tckd * t2, nckd * t2


def dkd_loss(
    logits_student: torch.Tensor,
    logits_teacher: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    """α · TCKD + β · NCKD, batch mean (Zhao et al. 2022), both KLs scaled by T²; no warm-up factor.

    TCKD = T² · KL(b^T ‖ b^S) with b = [p_t, 1 − p_t] the binary target/non-target probabilities at temperature
    T; NCKD = T² · KL(p̂^T ‖ p̂^S) over the non-target classes, p̂_i = p_i / (1 − p_t). Per sample the vanilla KD
    loss decomposes exactly as

        T² · KL(p^T ‖ p^S) = TCKD + (1 − p_t^T) · NCKD

    so α = β = 1 is *not* vanilla KD: KD weights NCKD by the teacher's non-target mass 1 − p_t^T (small when the
    teacher is confident, which is what DKD's β lifts), while DKD gives it a constant weight β. Computed in
    float32 (mdistiller masks with −1000 logits; here the masks are exact, via logsumexp).
    """
    tckd, nckd = tckd_nckd(logits_student, logits_teacher, labels, temperature)
    return (alpha * tckd + beta * nckd).mean()


@dataclass(frozen=True)
class DKDParams:
    w_ce: float = 1.0
    w_tckd: float = 1.0  # α: weight of TCKD
    w_nckd: float | None = None  # β: weight of NCKD; None: from nckd_preset (published table for the pair, else 8)
    temperature: float = 4.0
    # Epochs over which the KD terms ramp up linearly (0: none); None: the published 20 of 240 epochs, rescaled
    # to the run's epochs (resolve_params; :func:`resolved_warmup`).
    warmup: int | None = None
    nckd_preset: str = "published"
    logit_std: bool = False  # standardize both models' logits first (Sun et al. 2024; _logit_standardization.py)

    def __post_init__(self) -> None:
        check_range("dkd.w_ce", self.w_ce, 0.0, None)
        check_range("dkd.w_tckd", self.w_tckd, 0.0, None)
        if self.w_nckd is not None:
            check_range("dkd.w_nckd", self.w_nckd, 0.0, None)
        check_range("dkd.temperature", self.temperature, 0.0, 100.0, low_open=True)
        if self.warmup is not None:
            check_range("dkd.warmup", self.warmup, 0, None)
        if self.nckd_preset not in BETA_PRESETS:
            raise UserError(f"unknown dkd.nckd_preset '{self.nckd_preset}'. Valid: {', '.join(BETA_PRESETS)}")

    @property
    def resolved_w_nckd(self) -> float:
        return DEFAULT_BETA if self.w_nckd is None else self.w_nckd


def published_beta(teacher: str | None, student: str) -> float:
    """β of the DKD paper for this pair (:data:`PUBLISHED_BETA`), else the default 8."""
    return PUBLISHED_BETA.get((teacher or "", student), DEFAULT_BETA)


def resolved_warmup(params: DKDParams, epochs: int) -> int:
    """The warm-up a run of `epochs` epochs uses: `dkd.warmup` when set, else the published 20 of 240 epochs
    rescaled to `epochs` (:func:`kdbench.spec.recipe.rescale_epochs`)."""
    if params.warmup is not None:
        return params.warmup
    return rescale_epochs(PUBLISHED_WARMUP, PUBLISHED_EPOCHS, epochs)


def warmup_factor(epoch: int, warmup: int) -> float:
    """min(epoch / warmup, 1) for the 1-based epoch (mdistiller); 1 without warm-up."""
    return 1.0 if warmup <= 0 else min(epoch / warmup, 1.0)


@register_method("dkd", paper="Zhao et al. 2022, Decoupled Knowledge Distillation (CVPR)", params=DKDParams())
class DKD(Distiller):
    def __init__(self, student, teacher, params: DKDParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self.warmup = resolved_warmup(params, ctx.epochs)  # already resolved in a run's config
        self._warmup = warmup_factor(1, self.warmup)  # set again by the engine before every epoch

    @classmethod
    def resolve_params(cls, params: DKDParams, *, teacher: str | None, student: str, epochs: int) -> DKDParams:
        """Fill `w_nckd` (β) from the preset for this pair and `warmup` rescaled to the run's `epochs` (explicit
        values are kept): the run config, and so the run id, holds the β and the warm-up actually used."""
        if params.w_nckd is None:
            beta = published_beta(teacher, student) if params.nckd_preset == "published" else DEFAULT_BETA
            params = replace(params, w_nckd=beta)
        return replace(params, warmup=resolved_warmup(params, epochs))

    def on_epoch_start(self, epoch: int) -> None:
        self._warmup = warmup_factor(epoch, self.warmup)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        logits = self.student(batch.images)
        s, t = standardized_pair(logits, self.teacher_logits(batch), p.logit_std)
        dkd = dkd_loss(s, t, batch.labels, p.w_tckd, p.resolved_w_nckd, p.temperature)
        return logits, {"ce": p.w_ce * self.cross_entropy(logits, batch.labels), "dkd": self._warmup * dkd}

    def describe(self) -> dict[str, Any]:
        return {"w_nckd": self.params.resolved_w_nckd, "nckd_preset": self.params.nckd_preset, "warmup": self.warmup}
