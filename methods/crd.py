"""`crd` and `crd+kd`: contrastive representation distillation (Tian, Krishnan, Isola, ICLR 2020, "Contrastive
Representation Distillation", arXiv:1910.10699), as in the authors' RepDistiller code.

    L = w_ce · CE(z_s, y) + w_crd · L_crd(s, t, i)  [+ w_kd · T² · KL(p_t^T ‖ p_s^T)  for crd+kd]

s, t are the pooled penultimate embeddings (the classifier inputs), i the samples' training-set indices.
Defaults: feat_dim 128, nce_k 16384, nce_t 0.07, nce_m 0.5, w_ce 1, w_crd 0.8 (crd+kd: w_kd 1, T 4).

Memory: two N × feat_dim float32 banks (2 · N · 128 · 4 bytes: 51 MB for CIFAR's 50,000 images, 1.3 GB for
ImageNet), checkpointed with the run so that resume is exact; `describe()` puts the figure in the run record.
The memory pieces (:class:`Embed`, :func:`init_memory`, :func:`momentum_update_`, :func:`sample_other_class`)
are public because HKD (`kdbench.methods.hkd`) contrasts against the same kind of bank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core import distributed
from kdbench.core.errors import UserError, check_range
from kdbench.methods._logit_standardization import standardized_pair
from kdbench.methods.kd import kd_loss
from kdbench.models.taps import embedding_taps
from kdbench.train.method import Batch, Distiller, MethodContext, register_method

_NCE_EPS = 1e-7  # RepDistiller's ContrastLoss eps
_KEY_BUDGET = 1 << 24  # random keys drawn at once when sampling negatives (bounds memory for large N)


class Embed(nn.Module):
    """Linear(d → feat_dim) then L2 normalisation: CRD's embedding head (one per side, both trainable)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.linear(x.flatten(1)).float(), dim=1)


def init_memory(n_data: int, feat_dim: int) -> torch.Tensor:
    """An N × feat_dim bank, uniform in ±√(3/feat_dim) so that rows have unit expected norm (RepDistiller's init).

    Draws from the torch global RNG (the run's seed).
    """
    std = 1.0 / math.sqrt(feat_dim / 3)
    return torch.rand(n_data, feat_dim).mul_(2 * std).add_(-std)


@torch.no_grad()
def momentum_update_(memory: torch.Tensor, v: torch.Tensor, index: torch.Tensor, momentum: float) -> None:
    """In place: M[i] ← normalise(momentum · M[i] + (1 − momentum) · v_i) for the batch's rows i = index."""
    moved = memory[index] * momentum + v * (1 - momentum)
    memory.index_copy_(0, index, F.normalize(moved, dim=1))


def other_class_capacity(train_labels: torch.Tensor) -> int:
    """How many negatives every sample can draw from other classes: N minus the size of the largest class."""
    counts = torch.bincount(train_labels)
    return int(train_labels.numel() - counts[counts > 0].max())


@torch.no_grad()
def sample_other_class(train_labels: torch.Tensor, index: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) training-set indices: for each sample, k distinct samples of other classes ("exact" mode).

    The k smallest of uniform random keys, with the anchor's own class keyed out, are a uniform sample without
    replacement; rows are drawn in chunks so the keys never exceed _KEY_BUDGET numbers. Draws from the torch
    global RNG (reseeded per epoch by the engine). `k` must not exceed :func:`other_class_capacity`.
    """
    n_data = train_labels.numel()
    labels = train_labels[index]
    rows = max(1, _KEY_BUDGET // n_data)
    negatives = []
    for chunk in labels.split(rows):
        keys = torch.rand(len(chunk), n_data, device=labels.device)
        keys.masked_fill_(train_labels[None, :] == chunk[:, None], 2.0)
        negatives.append(keys.topk(k, dim=1, largest=False).indices)
    return torch.cat(negatives)


def nce_loss(scores: torch.Tensor, n_data: int) -> torch.Tensor:
    """−(1/B) Σ_b [ log h_b0 / (h_b0 + K·P_n) + Σ_{k=1..K} log K·P_n / (h_bk + K·P_n) ],  P_n = 1/N.

    Tian et al. 2020 (CRD), the NCE form of RepDistiller's ContrastLoss: column 0 of `scores` (B × (K+1)) holds
    the positive's h, the other K columns the negatives'; h = exp(⟨v, m⟩ / T) / Z. Eps 1e-7 in the
    denominators as in RepDistiller.
    """
    k = scores.shape[1] - 1
    noise = k / float(n_data)
    log_pos = torch.log(scores[:, 0] / (scores[:, 0] + noise + _NCE_EPS))
    log_neg = torch.log(noise / (scores[:, 1:] + noise + _NCE_EPS))
    return -(log_pos.sum() + log_neg.sum()) / scores.shape[0]


class CRDLoss(nn.Module):
    """L_crd = NCE(student anchor vs teacher memory) + NCE(teacher anchor vs student memory)  (Tian et al. 2020).

    For sample i with embeddings v_s = embed_s(s_i), v_t = embed_t(t_i) (Linear + L2-normalise):
        h_s(i, j) = exp(⟨v_s, M_t[j]⟩ / T) / Z_s,   h_t(i, j) = exp(⟨v_t, M_s[j]⟩ / T) / Z_t
    over j ∈ {i} ∪ K negatives drawn from other classes ("exact" mode), each side scored by :func:`nce_loss`.
    Z_s, Z_t = N · mean(exp(⟨v, m⟩/T)) on the first batch, then fixed. After scoring, the banks move towards the
    batch: M[i] ← normalise(nce_m · M[i] + (1 − nce_m) · v). Banks start uniform in ±√(3/feat_dim), so rows
    have unit expected norm. Negatives come from the torch global RNG (reseeded per epoch by the engine).

    Data-parallel (kdbench.core.distributed): each rank holds the whole banks and updates them from the global batch
    (indices and embeddings all-gathered), so every rank's banks equal the one-process banks; Z is the mean over
    the global batch; each rank draws its own rows' negatives from its own RNG stream.
    """

    def __init__(
        self,
        s_dim: int,
        t_dim: int,
        feat_dim: int,
        n_data: int,
        nce_k: int,
        nce_t: float,
        nce_m: float,
        train_labels: torch.Tensor,
    ) -> None:
        super().__init__()
        labels = torch.as_tensor(train_labels, dtype=torch.long).flatten()
        if labels.numel() != n_data:
            raise ValueError(f"train_labels has {labels.numel()} entries for n_data={n_data}")
        available = other_class_capacity(labels)
        if available < 1:
            raise UserError("crd needs at least two classes in the training set (negatives come from other classes)")
        self.n_data = n_data
        self.nce_k_requested = nce_k
        self.nce_k = min(nce_k, available)  # exact mode draws without replacement from the other classes
        self.nce_t = nce_t
        self.nce_m = nce_m
        self.embed_s = Embed(s_dim, feat_dim)
        self.embed_t = Embed(t_dim, feat_dim)
        self.register_buffer("memory_s", init_memory(n_data, feat_dim))
        self.register_buffer("memory_t", init_memory(n_data, feat_dim))
        self.register_buffer("z_s", torch.tensor(-1.0))  # < 0: not estimated yet
        self.register_buffer("z_t", torch.tensor(-1.0))
        # Derived from the data, not state: moves with .to() but stays out of checkpoints.
        self.register_buffer("train_labels", labels, persistent=False)

    @property
    def bank_bytes(self) -> int:
        return self.memory_s.numel() * self.memory_s.element_size() * 2

    @torch.no_grad()
    def sample_contrast_index(self, index: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K) training-set indices: the sample itself, then K distinct samples of other classes."""
        return torch.cat([index[:, None], sample_other_class(self.train_labels, index, self.nce_k)], dim=1)

    def forward(
        self,
        student_emb: torch.Tensor,
        teacher_emb: torch.Tensor,
        index: torch.Tensor,
        contrast_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Unweighted L_crd for a batch; updates the memory banks (and fixes Z on the first call)."""
        with torch.autocast(student_emb.device.type, enabled=False):
            v_s = self.embed_s(student_emb.float())
            v_t = self.embed_t(teacher_emb.float())
            idx = self.sample_contrast_index(index) if contrast_index is None else contrast_index
            # Student anchors meet the teacher's memory and vice versa; memories are constants here.
            h_s = torch.exp(torch.einsum("bkd,bd->bk", self.memory_t[idx], v_s) / self.nce_t)
            h_t = torch.exp(torch.einsum("bkd,bd->bk", self.memory_s[idx], v_t) / self.nce_t)
            with torch.no_grad():
                if self.z_s < 0:
                    self.z_s.fill_(distributed.all_reduce_mean(h_s.mean()).item() * self.n_data)
                    self.z_t.fill_(distributed.all_reduce_mean(h_t.mean()).item() * self.n_data)
            loss = nce_loss(h_s / self.z_s, self.n_data) + nce_loss(h_t / self.z_t, self.n_data)
            everyone = distributed.all_gather_cat(index)  # the global batch's rows, in rank order
            momentum_update_(self.memory_s, distributed.all_gather_cat(v_s.detach()), everyone, self.nce_m)
            momentum_update_(self.memory_t, distributed.all_gather_cat(v_t.detach()), everyone, self.nce_m)
        return loss


@dataclass(frozen=True)
class CRDParams:
    w_ce: float = 1.0
    w_crd: float = 0.8
    w_kd: float = 0.0  # crd+kd: 1
    temperature: float = 4.0  # for the KD term of crd+kd
    logit_std: bool = False  # standardize both models' logits in the KD term (Sun et al. 2024)
    feat_dim: int = 128
    nce_k: int = 16384  # negatives per sample, capped below the number of other-class samples
    nce_t: float = 0.07
    nce_m: float = 0.5

    def __post_init__(self) -> None:
        check_range("crd.w_ce", self.w_ce, 0.0, None)
        check_range("crd.w_crd", self.w_crd, 0.0, None)
        check_range("crd.w_kd", self.w_kd, 0.0, None)
        check_range("crd.temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("crd.feat_dim", self.feat_dim, 1, 65536)
        check_range("crd.nce_k", self.nce_k, 1, None)
        check_range("crd.nce_t", self.nce_t, 0.0, 100.0, low_open=True)
        check_range("crd.nce_m", self.nce_m, 0.0, 1.0)


_PAPER = "Tian et al. 2020, Contrastive Representation Distillation (ICLR)"


@register_method("crd+kd", paper=_PAPER, params=CRDParams(w_kd=1.0))
@register_method("crd", paper=_PAPER, params=CRDParams())
class CRD(Distiller):
    teacher_outputs = "logits + embedding (features: cached when they fit the cap)"
    param_group_modules = {"embed": "crd"}  # `--set group.embed.lr_scale=...` (kdbench.train.optim)

    def __init__(self, student: nn.Module, teacher: nn.Module, params: CRDParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self._s_tap, self._t_tap, s_dim, t_dim = embedding_taps(student, teacher, ctx.in_chans, ctx.image_size)
        self.crd = CRDLoss(s_dim, t_dim, params.feat_dim, ctx.num_train, params.nce_k, params.nce_t, params.nce_m,
                           ctx.train_targets)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        losses = {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels),
                  "crd": p.w_crd * self.crd(s.embedding, t.embedding, batch.index)}
        if p.w_kd > 0:
            losses["kd"] = p.w_kd * kd_loss(*standardized_pair(s.logits, t.logits, p.logit_std), p.temperature)
        return s.logits, losses

    def describe(self) -> dict[str, Any]:
        return {"memory_bank_bytes": self.crd.bank_bytes, "n_data": self.crd.n_data, "nce_k": self.crd.nce_k,
                "nce_k_requested": self.crd.nce_k_requested, "feat_dim": self.params.feat_dim,
                "z_s": float(self.crd.z_s), "z_t": float(self.crd.z_t)}
