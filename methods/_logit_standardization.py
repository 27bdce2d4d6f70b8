"""Logit standardization (Sun, Ren, Li, Wang, Cao, CVPR 2024, "Logit Standardization in Knowledge
Distillation", arXiv:2403.01427), the authors' code sunshangquan/logit-standardization-KD (`normalize` in its
mdistiller/distillers/KD.py):

    Z(z) = (z − mean(z)) / (std(z) + ε),   per sample, over the classes; std with Bessel's correction; ε = 1e-7

applied to the student's and the teacher's logits alike *before* the temperature (softmax(Z(z) / T)): each model
keeps its own logit range, and the KD term compares logit relations rather than magnitudes.

A shared switch, not a method: the file's name starts with "_" so kdbench.train.method._load_methods does not load
it as one. A logit method takes it as a `logit_std: bool = False` field of its params (in the run config and id only
when on: kdbench.spec.config.ADDED_METHOD_PARAMS leaves it out at its default): kd, dkd, dist, ctkd, crd / crd+kd and
hkd / hkd+kd (their KD term), cnn2gnn (its KD term), fitnet (its second stage's KD term), each with one line

    logits_s, logits_t = standardized_pair(logits_s, logits_t, p.logit_std)

before its KD loss (the reference code standardizes at the entry of its kd_loss / dkd_loss in the same way).
The paper's CIFAR-100 runs pair it with a base temperature of 2 and a KD weight of 9 (w_ce 0.1), its README's
`--logit-stand --base-temp 2 --kd-weight 9`: set those with `--set`, the switch does not change other defaults.
"""

from __future__ import annotations

import torch

LS_EPS = 1e-7  # the reference's `1e-7 + stdv`


def standardize_logits(logits: torch.Tensor, eps: float = LS_EPS) -> torch.Tensor:
    """(z − mean(z)) / (std(z) + ε) over the last dimension (the classes), per sample, in float32.

    std is the unbiased one (torch's default, as the reference's `logit.std(dim=-1)`); a constant row gives 0.
    """
    z = logits.float()
    return (z - z.mean(dim=-1, keepdim=True)) / (z.std(dim=-1, keepdim=True) + eps)


def standardized_pair(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      on: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Both models' logits standardized when `on` (the methods' `logit_std` switch), else unchanged."""
    if not on:
        return student_logits, teacher_logits
    return standardize_logits(student_logits), standardize_logits(teacher_logits)
