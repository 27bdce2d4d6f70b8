"""`cnn2gnn`: a CNN teacher distilled into a two-layer GNN student over a learned sparse graph (Jiao, Zhang, Li,
"CNN2GNN: How to Bridge CNN with GNN", arXiv:2404.14822, IEEE TPAMI 2025).

    L = w_ce · CE(z_s, y) + w_kd · T² · KL( softmax(z_t / T) ‖ softmax(z_s / T) )

Response-based transfer (the vanilla KD loss, `kdbench.methods.kd.kd_loss`); what is new is the student, `gnn2`
(`kdbench.models.gnn`): flattened images → differentiable sparse graph head → two graph convolutions. The graph
is the closed-form sparse conditional probability graph

    p(j | i) = max(d_i(k+1) − d_ij, 0) / ( k · d_i(k+1) − Σ_{v=1..k} d_i(v) ),   Â = D^{-1/2}((P + Pᵀ)/2 + I)D^{-1/2}

public here as :func:`sparse_conditional_probs` and :class:`SparseGraphLearner`. The paper's code and exact
settings are not public: k, the graph mode ('batch': nodes are the batch's samples; 'anchor': m learned anchors,
inductive), widths, dropout, T and the weights are our reconstruction's defaults, all options
(`--set cnn2gnn.KEY=VALUE`; see docs/cnn2gnn.md). `--set cnn2gnn.k=0` is the no-graph ablation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from kdbench import distributed
from kdbench.errors import UserError, check_range
from kdbench.method import Batch, register_method
from kdbench.methods.kd import KD, kd_loss
from kdbench.models.graph import GRAPH_MODES, SparseGraphLearner, sparse_conditional_probs

__all__ = ["CNN2GNN", "CNN2GNNParams", "SparseGraphLearner", "sparse_conditional_probs"]

_GRAPH_OPTIONS = ("graph", "k", "hidden", "proj_dim", "anchors", "dropout", "pool")


@dataclass(frozen=True)
class CNN2GNNParams:
    temperature: float = 4.0
    w_ce: float = 0.1
    w_kd: float = 0.9
    # The GNN student's graph and widths, passed to `gnn2` (an explicit `--set student.KEY=...` wins).
    graph: str = "batch"
    k: int = 10
    hidden: int = 256
    proj_dim: int = 256
    anchors: int = 256
    dropout: float = 0.5
    pool: int = 0  # average-pool the image to this side before flattening; 0 = off
    # Data-parallel training (kdbench.distributed): the training graph is built over each rank's own batch
    # ('rank', the per-rank batch is the global batch / world size) or over the all-gathered global batch
    # ('global': every rank runs the student on the global batch and keeps its own rows; what one process does).
    graph_scope: str = "rank"

    def __post_init__(self) -> None:
        check_range("cnn2gnn.temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("cnn2gnn.w_ce", self.w_ce, 0.0, None)
        check_range("cnn2gnn.w_kd", self.w_kd, 0.0, None)
        if self.graph not in GRAPH_MODES:
            raise UserError(f"unknown cnn2gnn.graph '{self.graph}'. Valid: {', '.join(GRAPH_MODES)}")
        check_range("cnn2gnn.k", self.k, 0, 1000)
        check_range("cnn2gnn.hidden", self.hidden, 1, 65536)
        check_range("cnn2gnn.proj_dim", self.proj_dim, 1, 65536)
        check_range("cnn2gnn.dropout", self.dropout, 0.0, 1.0)
        check_range("cnn2gnn.pool", self.pool, 0, 224)
        if self.graph_scope not in ("rank", "global"):
            raise UserError(f"unknown cnn2gnn.graph_scope '{self.graph_scope}'. Valid: rank, global")
        if self.graph == "anchor" and self.k > 0:
            check_range("cnn2gnn.anchors", self.anchors, self.k + 1, 1_000_000)


@register_method("cnn2gnn", paper="Jiao, Zhang, Li 2024, CNN2GNN: How to Bridge CNN with GNN", params=CNN2GNNParams())
class CNN2GNN(KD):
    """Response distillation into the GNN student: exactly vanilla KD's loss (w_ce·CE + w_kd·T²·KL, inherited
    from :class:`KD`); what CNN2GNN adds is the student and the graph options it passes to it."""

    default_student = "gnn2"

    @classmethod
    def student_options(cls, params: CNN2GNNParams, student: str) -> dict[str, Any]:
        if student != "gnn2":  # any other student (e.g. a CNN baseline) is built with its own defaults
            return {}
        return {key: getattr(params, key) for key in _GRAPH_OPTIONS}

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.params.graph_scope == "rank" or distributed.world_size() == 1:
            return super().forward_train(batch)
        p = self.params
        # Images need no gradient: gather them, and the student's graph spans the global batch. The W ranks'
        # mean losses over their own rows, averaged by DDP, have the gradient of the global batch's mean loss.
        everyone = distributed.all_gather_cat(batch.images)
        logits = self.student(everyone)[distributed.own_rows(len(batch.images))]
        teacher_logits = self.teacher_logits(batch.images)
        return logits, {"ce": p.w_ce * self.cross_entropy(logits, batch.labels),
                        "kd": p.w_kd * kd_loss(logits, teacher_logits, p.temperature)}

    def describe(self) -> dict[str, Any]:
        learner = getattr(self.student, "graph", None)
        return {"graph": learner.describe()} if isinstance(learner, SparseGraphLearner) else {}
