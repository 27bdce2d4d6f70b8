"""`pkt`: probabilistic knowledge transfer (Passalis & Tefas, ECCV 2018, "Learning Deep Representations with
Probabilistic Knowledge Transfer", arXiv:1803.10837).

    L = w_ce · CE(z_s, y) + w_pkt · pkt_loss(s, t)

on the pooled penultimate embeddings s, t (B × D, the input of each model's classifier; D may differ between
student and teacher, since only similarities within the batch are compared). Defaults are RepDistiller's CIFAR
values (the CRD paper's tables): w_ce 1, w_pkt 30000, ε 1e-7.

Scale and batch size: each row of P sums to 1, so the mean over the B² entries is (1/B) · mean_i KL(P^T_i ‖ P^S_i):
at a fixed w_pkt the term weighs more the smaller the batch. w_pkt = 30000 belongs to RepDistiller's batch of
64. A ragged last batch would carry a several times larger term (embedded-hard's 142 training images in
batches of 64 left a last batch of 14, whose PKT term was 6.2× a full batch's at initialisation, mean over
the 40 epochs' orders); the training loader drops it
(kdbench.data.loaders.train_batch_count), so every step sees B = the recipe's batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kdbench.core.errors import check_range
from kdbench.models.taps import IntermediateTap
from kdbench.train.method import Batch, Distiller, MethodContext, register_method

PKT_EPS = 1e-7


def conditional_probabilities(emb: torch.Tensor, eps: float = PKT_EPS) -> torch.Tensor:
    """P[i, j] = K(i, j) / Σ_j' K(i, j'),  K = (cos(e_i, e_j) + 1) / 2 (the cosine-similarity kernel, in [0, 1];
    its ½ cancels in the row normalisation).

    e_i / (‖e_i‖ + eps) as in the reference code (a zero embedding gives a zero row, K = ½ against everything).
    """
    e = emb.float().flatten(1)
    e = e / (e.norm(dim=1, keepdim=True) + eps)
    kernel = (e @ e.t() + 1.0) / 2.0
    return kernel / kernel.sum(dim=1, keepdim=True)


def pkt_loss(emb_student: torch.Tensor, emb_teacher: torch.Tensor, eps: float = PKT_EPS) -> torch.Tensor:
    """(1/B²) Σ_{i,j} P^T_ij · log( (P^T_ij + ε) / (P^S_ij + ε) ),  P from :func:`conditional_probabilities`.

    Passalis & Tefas 2018 (PKT): the KL divergence KL(P^T ‖ P^S) between the teacher's and the student's
    conditional probability distributions over the batch, with ε = 1e-7 inside the log, as a mean over the B²
    entries (RepDistiller's `cosine_similarity_loss`; the paper sums over j, which is B × this). The diagonal
    (each sample with itself) is included, as in the reference code. Unweighted; float32; the teacher side
    carries no gradient.
    """
    with torch.autocast(emb_student.device.type, enabled=False):
        p_s = conditional_probabilities(emb_student, eps)
        with torch.no_grad():
            p_t = conditional_probabilities(emb_teacher, eps)
        return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@dataclass(frozen=True)
class PKTParams:
    w_ce: float = 1.0
    w_pkt: float = 30000.0

    def __post_init__(self) -> None:
        check_range("pkt.w_ce", self.w_ce, 0.0, None)
        check_range("pkt.w_pkt", self.w_pkt, 0.0, None)


@register_method(
    "pkt", paper="Passalis & Tefas 2018, Learning Deep Representations with Probabilistic Knowledge Transfer "
    "(ECCV)", params=PKTParams()
)
class PKT(Distiller):
    teacher_outputs = "logits + embedding (features: cached when they fit the cap)"
    def __init__(self, student, teacher, params: PKTParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self._s_tap = IntermediateTap(self.student, embedding=True)
        self._t_tap = IntermediateTap(self.teacher, embedding=True)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        return s.logits, {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
                          "pkt": p.w_pkt * pkt_loss(s.embedding, t.embedding)}
