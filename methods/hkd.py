"""`hkd` and `hkd+kd`: holistic knowledge distillation (Zhou, Wang, Chen, Chen, Wang, Wang, Bu, ICCV 2021,
"Distilling Holistic Knowledge with Graph Neural Networks", arXiv:2108.05507), as in the authors' code
(github.com/wyc-ruiker/HKD, `distiller_zoo/GNN.py`, run with `-a 1 -b 3 --mode hkd`).

    L = w_ce · CE(z_s, y) + w_hkd · (L_individual + L_holistic)  [+ w_kd · T² · KL(p_t^T ‖ p_s^T)  for hkd+kd]

Per batch and per side (student s, teacher t), from the pooled penultimate embedding e and the logits z:
  v = normalise(W e + b)                                         128-d individual embedding (CRD's :class:`Embed`)
  A = knn_graph(z, k)                                            k = 8 nearest by cosine distance of softmax(z)
  g = normalise(W₀ v + W₁ Â v + b),  Â = D^{-1/2} A D^{-1/2}      one-hop graph convolution: the holistic embedding
and for the student anchor (the teacher anchor mirrors it, s ↔ t):
  L_individual ∋ InfoNCE(v_s;  positive M_t[i],                                    negatives M_t[j], j ∈ J_i)
  L_holistic   ∋ InfoNCE(g_s;  positive normalise(0.75 · M_t[i] + 0.25 · g_t),      negatives M_t[j], j ∈ J_i)
with InfoNCE(a; p, {n}) = −log( e^{⟨a,p⟩/τ} / (e^{⟨a,p⟩/τ} + Σ_j e^{⟨a,n_j⟩/τ}) ), τ = 0.07, averaged over the
batch; J_i are nce_k = 16,384 samples of other classes (capped below N as CRD does); M_s, M_t are N × 128 banks
of the individual embeddings, moved after each batch by M[i] ← normalise(0.9 · M[i] + 0.1 · v_i) (CRD's memory,
imported from `kdbench.methods.crd`). Each side has its own trainable projection and graph convolution; the
teacher backbone is frozen. Defaults: w_ce 1, w_hkd 3 (the authors' `-b 3`), hkd+kd adds w_kd 1, T 4 (`-a 1`).

How this maps to the authors' code (DGL's `KNNGraph`/`TAGConv`, replaced by dense batch tensors here):
- `knn_graph` ↔ their `knn_graph`: distances 1 − cos(softmax(z_i), softmax(z_j)), the node itself forced to the
  front, so its k "neighbours" include itself (a self loop) and k − 1 others; edges point neighbour → node.
- `OneHopGraphConv` ↔ `TAGConv(128, 128, k=1)`: Linear over [X, Â X] with Â normalised by in-degrees (every
  node has in-degree k, so Â = A / k); then `Normalize(2)`.
- `NCEAverage.update` (momentum 0.9), `get_smooth` (0.75, detached positive of the holistic term), `get_pos`
  and `NCESoftmaxLoss` ↔ `momentum_update_`, `smoothed_positive`, `M[i]` and :func:`info_nce`.
- Negatives: the authors' dataset mode `hkd` draws K other-class indices without the positive (with
  replacement when K exceeds them); here without replacement, K capped, as CRD's exact mode.
Deviations, each an option: (1) the authors' code scores a student anchor against negatives from the
*student's* own bank (their `weight_t` is read from `memory_l`, the bank `update` fills with student
embeddings) while its positive comes from the teacher's bank; the paper and CRD contrast against the other
side's bank, our default (`negatives=opposite`; `negatives=own` reproduces the code). (2) The authors skip the
holistic term for a batch smaller than k; here k is capped at the batch size, so every batch has a graph.
`individual=false` drops L_individual (the paper's equation names only the holistic term; the code has both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core import distributed
from kdbench.core.errors import UserError, check_range
from kdbench.methods._logit_standardization import standardized_pair
from kdbench.methods.crd import Embed, init_memory, momentum_update_, other_class_capacity, sample_other_class
from kdbench.methods.kd import kd_loss
from kdbench.models.taps import embedding_taps
from kdbench.train.method import Batch, Distiller, MethodContext, register_method

_COS_EPS = 1e-7  # the authors' eps under the cosine's denominator
NEGATIVE_BANKS = ("opposite", "own")


@torch.no_grad()
def knn_graph(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, B) 0/1 adjacency A with A[i, j] = 1 iff j is among the k nearest samples of i, i itself included.

    Distance d(i, j) = 1 − ⟨p_i, p_j⟩ / (‖p_i‖ ‖p_j‖), p = softmax(z) of the *detached* logits (the HKD instance
    graph). The diagonal is set to −1 so that a sample is always its own first neighbour (self loop), as in the
    authors' code; k is capped at B. Ties are broken by `topk`.
    """
    p = F.softmax(logits.detach().float(), dim=1)
    norm = p.norm(dim=1, keepdim=True)
    dist = 1 - (p @ p.t()) / (norm @ norm.t()).clamp(min=_COS_EPS)
    dist.fill_diagonal_(-1.0)
    nearest = dist.topk(min(k, len(p)), dim=1, largest=False).indices
    return torch.zeros_like(dist).scatter_(1, nearest, 1.0)


def normalised_adjacency(adj: torch.Tensor) -> torch.Tensor:
    """Â = D^{-1/2} A D^{-1/2} with D = diag of each node's in-degree Σ_j A[i, j] (DGL's TAGConv norm)."""
    inv_sqrt = adj.sum(dim=1).clamp(min=1).pow(-0.5)
    return inv_sqrt[:, None] * adj * inv_sqrt[None, :]


class OneHopGraphConv(nn.Module):
    """g = normalise( Linear([x, Â x]) ): a one-hop TAG convolution (Du et al. 2017; DGL `TAGConv(k=1)`) and
    L2 normalisation, the holistic embedding of each node. Dense: the graph is one batch (a few hundred nodes)."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.linear = nn.Linear(2 * dim_in, dim_out)

    def forward(self, x: torch.Tensor, adj: torch.Tensor) -> torch.Tensor:
        hop = normalised_adjacency(adj.to(x.dtype)) @ x
        return F.normalize(self.linear(torch.cat([x, hop], dim=1)), dim=1)


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, negatives: torch.Tensor, temperature: float) -> torch.Tensor:
    """−(1/B) Σ_b log( e^{⟨a_b,p_b⟩/τ} / (e^{⟨a_b,p_b⟩/τ} + Σ_k e^{⟨a_b,n_bk⟩/τ}) ), unweighted.

    InfoNCE (van den Oord et al. 2018), the authors' `NCESoftmaxLoss`: cross-entropy with the positive in
    column 0. `anchor` and `positive` are (B, D), `negatives` (B, K, D). Gradient flows into all three inputs
    that require it (HKD passes constant positives and negatives).
    """
    pos = (anchor * positive).sum(dim=1, keepdim=True)
    neg = torch.einsum("bkd,bd->bk", negatives, anchor)
    scores = torch.cat([pos, neg], dim=1) / temperature
    return F.cross_entropy(scores, torch.zeros(len(scores), dtype=torch.long, device=scores.device))


@torch.no_grad()
def smoothed_positive(memory_rows: torch.Tensor, current: torch.Tensor, momentum: float) -> torch.Tensor:
    """normalise(momentum · M[i] + (1 − momentum) · g_i), detached: the holistic term's positive (authors'
    `get_smooth`, momentum 0.75); the bank itself is not changed."""
    return F.normalize(memory_rows * momentum + current * (1 - momentum), dim=1)


class HKDLoss(nn.Module):
    """The two InfoNCE terms of HKD for a batch, with both sides' heads, graph convolutions and memory banks.

    Banks `memory_s`, `memory_t` (N × feat_dim buffers, checkpointed: a resumed run continues exactly) hold the
    *individual* embeddings v; they are read before and moved after each batch (momentum `nce_m`).
    """

    def __init__(
        self,
        s_dim: int,
        t_dim: int,
        feat_dim: int,
        n_data: int,
        k: int,
        nce_k: int,
        nce_t: float,
        nce_m: float,
        smooth_m: float,
        negatives: str,
        train_labels: torch.Tensor,
    ) -> None:
        super().__init__()
        labels = torch.as_tensor(train_labels, dtype=torch.long).flatten()
        if labels.numel() != n_data:
            raise ValueError(f"train_labels has {labels.numel()} entries for n_data={n_data}")
        available = other_class_capacity(labels)
        if available < 1:
            raise UserError("hkd needs at least two classes in the training set (negatives come from other classes)")
        self.n_data = n_data
        self.k = k
        self.nce_k_requested = nce_k
        self.nce_k = min(nce_k, available)
        self.nce_t = nce_t
        self.nce_m = nce_m
        self.smooth_m = smooth_m
        self.negatives = negatives
        self.embed_s = Embed(s_dim, feat_dim)
        self.embed_t = Embed(t_dim, feat_dim)
        self.gnn_s = OneHopGraphConv(feat_dim, feat_dim)
        self.gnn_t = OneHopGraphConv(feat_dim, feat_dim)
        self.register_buffer("memory_s", init_memory(n_data, feat_dim))
        self.register_buffer("memory_t", init_memory(n_data, feat_dim))
        self.register_buffer("train_labels", labels, persistent=False)

    @property
    def bank_bytes(self) -> int:
        return self.memory_s.numel() * self.memory_s.element_size() * 2

    def forward(
        self,
        student_emb: torch.Tensor,
        teacher_emb: torch.Tensor,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        index: torch.Tensor,
        negative_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Unweighted (L_individual, L_holistic), each summed over the student and teacher anchors; then the
        banks move towards this batch's individual embeddings.

        Data-parallel (kdbench.core.distributed): the banks move towards the global batch (indices and embeddings
        all-gathered); negatives and the k-NN graph of the holistic term are each rank's own."""
        with torch.autocast(student_emb.device.type, enabled=False):
            v_s = self.embed_s(student_emb.float())
            v_t = self.embed_t(teacher_emb.float())
            neg = sample_other_class(self.train_labels, index, self.nce_k) if negative_index is None \
                else negative_index
            pos_s, pos_t = self.memory_t[index], self.memory_s[index]  # each anchor's positive: the other side
            if self.negatives == "opposite":
                neg_s, neg_t = self.memory_t[neg], self.memory_s[neg]
            else:  # "own": as the authors' code reads its banks
                neg_s, neg_t = self.memory_s[neg], self.memory_t[neg]
            individual = info_nce(v_s, pos_s, neg_s, self.nce_t) + info_nce(v_t, pos_t, neg_t, self.nce_t)
            g_s = self.gnn_s(v_s, knn_graph(student_logits, self.k))
            g_t = self.gnn_t(v_t, knn_graph(teacher_logits, self.k))
            holistic = (info_nce(g_s, smoothed_positive(pos_s, g_t.detach(), self.smooth_m), neg_s, self.nce_t)
                        + info_nce(g_t, smoothed_positive(pos_t, g_s.detach(), self.smooth_m), neg_t, self.nce_t))
            everyone = distributed.all_gather_cat(index)
            momentum_update_(self.memory_s, distributed.all_gather_cat(v_s.detach()), everyone, self.nce_m)
            momentum_update_(self.memory_t, distributed.all_gather_cat(v_t.detach()), everyone, self.nce_m)
        return individual, holistic


@dataclass(frozen=True)
class HKDParams:
    w_ce: float = 1.0  # the authors' -r (gamma)
    w_hkd: float = 3.0  # the authors' -b (beta)
    w_kd: float = 0.0  # the authors' -a (alpha); hkd+kd: 1
    temperature: float = 4.0  # for the KD term of hkd+kd (the authors' kd_T)
    logit_std: bool = False  # standardize both models' logits in the KD term (Sun et al. 2024)
    feat_dim: int = 128
    k: int = 8  # neighbours in the instance graph, the sample itself included
    nce_k: int = 16384  # negatives per sample, capped below the number of other-class samples
    nce_t: float = 0.07
    nce_m: float = 0.9  # bank momentum
    smooth_m: float = 0.75  # momentum of the holistic term's smoothed positive
    individual: bool = True  # also contrast the individual (pre-graph) embeddings, as the authors' code
    negatives: str = "opposite"  # bank the negatives come from: the other side's ("opposite") or the anchor's ("own")

    def __post_init__(self) -> None:
        check_range("hkd.w_ce", self.w_ce, 0.0, None)
        check_range("hkd.w_hkd", self.w_hkd, 0.0, None)
        check_range("hkd.w_kd", self.w_kd, 0.0, None)
        check_range("hkd.temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("hkd.feat_dim", self.feat_dim, 1, 65536)
        check_range("hkd.k", self.k, 1, 100_000)
        check_range("hkd.nce_k", self.nce_k, 1, None)
        check_range("hkd.nce_t", self.nce_t, 0.0, 100.0, low_open=True)
        check_range("hkd.nce_m", self.nce_m, 0.0, 1.0)
        check_range("hkd.smooth_m", self.smooth_m, 0.0, 1.0)
        if self.negatives not in NEGATIVE_BANKS:
            raise UserError(f"unknown hkd.negatives '{self.negatives}'. Valid: {', '.join(NEGATIVE_BANKS)}")


_PAPER = "Zhou et al. 2021, Distilling Holistic Knowledge with Graph Neural Networks (ICCV)"


@register_method("hkd+kd", paper=_PAPER, params=HKDParams(w_kd=1.0))
@register_method("hkd", paper=_PAPER, params=HKDParams())
class HKD(Distiller):
    teacher_outputs = "logits + embedding (features: cached when they fit the cap)"
    param_group_modules = {"embed": "hkd"}  # `--set group.embed.lr_scale=...` (kdbench.train.optim)

    def __init__(self, student: nn.Module, teacher: nn.Module, params: HKDParams, ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        self._s_tap, self._t_tap, s_dim, t_dim = embedding_taps(student, teacher, ctx.in_chans, ctx.image_size)
        p = params
        self.hkd = HKDLoss(s_dim, t_dim, p.feat_dim, ctx.num_train, p.k, p.nce_k, p.nce_t, p.nce_m, p.smooth_m,
                           p.negatives, ctx.train_targets)

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self._s_tap(batch.images)
        t = self.teacher_features(batch, self._t_tap)
        individual, holistic = self.hkd(s.embedding, t.embedding, s.logits, t.logits, batch.index)
        losses = {"ce": p.w_ce * self.cross_entropy(s.logits, batch.labels)}
        if p.individual:
            losses["hkd_individual"] = p.w_hkd * individual
        losses["hkd_holistic"] = p.w_hkd * holistic
        if p.w_kd > 0:
            losses["kd"] = p.w_kd * kd_loss(*standardized_pair(s.logits, t.logits, p.logit_std), p.temperature)
        return s.logits, losses

    def describe(self) -> dict[str, Any]:
        return {"memory_bank_bytes": self.hkd.bank_bytes, "n_data": self.hkd.n_data, "nce_k": self.hkd.nce_k,
                "nce_k_requested": self.hkd.nce_k_requested, "feat_dim": self.params.feat_dim, "k": self.params.k}
