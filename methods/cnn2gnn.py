"""`cnn2gnn`: a CNN teacher distilled into a two-layer GNN student over a learned sparse graph (Jiao, Zhang, Li,
"CNN2GNN: How to Bridge CNN with GNN", arXiv:2404.14822, IEEE TPAMI 2025).

    L = w_ce · CE(z_s, y) + w_kd · T² · KL( softmax(z_t / T) ‖ softmax(z_s / T) )

Response-based transfer (the vanilla KD loss, `kdbench.methods.kd.kd_loss`); what is new is the student, `gnn2`
(`kdbench.models.gnn`): flattened images → differentiable sparse graph head → two graph convolutions. The graph
is the closed-form sparse conditional probability graph

    p(j | i) = max(d_i(k+1) − d_ij, 0) / ( k · d_i(k+1) − Σ_{v=1..k} d_i(v) ),   Â = D^{-1/2}((P + Pᵀ)/2 + I)D^{-1/2}

public here as :func:`sparse_conditional_probs` and :class:`SparseGraphLearner`. The paper's code and exact
settings are not public: k, the graph mode ('batch': nodes are the batch's samples; 'anchor': m learned anchors,
inductive; 'memory': each sample's k nearest in a momentum memory of the training samples, inductive), widths,
dropout, T and the weights are our reconstruction's defaults, all options (`--set cnn2gnn.KEY=VALUE`; see
docs/cnn2gnn.md). `--set cnn2gnn.k=0` is the no-graph ablation.

Where the graph is built (`graph_features`): on the student's own projection of its input ('student'), or on the
teacher's pre-logits embedding through a learned linear projection z = W_g t + b_g owned by this method
('teacher'; batch and memory modes). The teacher then runs at evaluation too: the student's predictions need the
teacher, so it is no longer a standalone model (the run record says so: `inference_needs_teacher`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from kdbench.core import distributed
from kdbench.core.errors import UserError, check_range
from kdbench.methods._logit_standardization import standardized_pair
from kdbench.methods.kd import KD, kd_loss
from kdbench.models.graph import GRAPH_MODES, SparseGraphLearner, sparse_conditional_probs
from kdbench.models.taps import IntermediateTap
from kdbench.train.method import Batch, MethodContext, register_method

__all__ = ["CNN2GNN", "CNN2GNNParams", "SparseGraphLearner", "sparse_conditional_probs"]

_GRAPH_OPTIONS = ("graph", "k", "hidden", "proj_dim", "anchors", "dropout", "pool", "memory_momentum")
GRAPH_FEATURES = ("student", "teacher")


@dataclass(frozen=True)
class CNN2GNNParams:
    temperature: float = 4.0
    w_ce: float = 0.1
    w_kd: float = 0.9
    logit_std: bool = False  # standardize both models' logits in the KD term (Sun et al. 2024)
    # The GNN student's graph and widths, passed to `gnn2` (an explicit `--set student.KEY=...` wins).
    graph: str = "batch"
    k: int = 10
    hidden: int = 256
    proj_dim: int = 256
    anchors: int = 256
    dropout: float = 0.5
    pool: int = 0  # average-pool the image to this side before flattening; 0 = off
    memory_momentum: float = 0.5  # graph=memory: μ of m_i ← μ·m_i + (1 − μ)·z_i (CRD's memory momentum)
    # What the graph's distances are computed on: the student's projection of its input, or the teacher's
    # embedding (projected by this method; the teacher then runs at evaluation too).
    graph_features: str = "student"
    # Data-parallel training (kdbench.core.distributed): the training graph is built over each rank's own batch
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
        check_range("cnn2gnn.memory_momentum", self.memory_momentum, 0.0, 1.0)
        if self.graph_features not in GRAPH_FEATURES:
            raise UserError(f"unknown cnn2gnn.graph_features '{self.graph_features}'. Valid: "
                            f"{', '.join(GRAPH_FEATURES)}")
        if self.graph_features == "teacher" and self.graph == "anchor":
            raise UserError("cnn2gnn.graph_features=teacher needs graph=batch or graph=memory: anchor mode's "
                            "learned anchors live in the student's input space")


@register_method("cnn2gnn", paper="Jiao, Zhang, Li 2024, CNN2GNN: How to Bridge CNN with GNN", params=CNN2GNNParams())
class CNN2GNN(KD):
    """Response distillation into the GNN student: exactly vanilla KD's loss (w_ce·CE + w_kd·T²·KL, as
    :class:`KD`); what CNN2GNN adds is the student, the graph options it passes to it, and what the student's
    graph head is handed per batch: the samples' indices (memory mode) and, with graph_features=teacher, the
    projected teacher embedding to build the graph on."""

    default_student = "gnn2"
    param_group_modules = {"graph": "student.graph"}  # `--set group.graph.lr_scale=...` (gnn2 only)

    def __init__(self, student: nn.Module, teacher: nn.Module | None, params: CNN2GNNParams,
                 ctx: MethodContext) -> None:
        super().__init__(student, teacher, params, ctx)
        learner = getattr(student, "graph", None)
        self._graph_head = isinstance(learner, SparseGraphLearner) and learner.k > 0
        self._teacher_tap: IntermediateTap | None = None
        if self._graph_head and learner.mode == "memory" and params.graph_scope == "rank" \
                and distributed.world_size() > 1:
            # Each rank would write only its own samples' memory rows, and the ranks' memories would drift apart.
            raise UserError("cnn2gnn.graph=memory across processes needs cnn2gnn.graph_scope=global (every rank "
                            "then updates the memory from the whole global batch)")
        if self._graph_head and params.graph_features == "teacher":
            assert teacher is not None
            self._teacher_tap = IntermediateTap(teacher, embedding=True)
            example = torch.zeros(2, ctx.in_chans, ctx.image_size, ctx.image_size)
            width = self._teacher_tap.probe(example).embedding.shape[1]
            self.graph_proj = nn.Linear(width, params.proj_dim)  # z = W_g t + b_g, trained through P's weights

    def _student(self, images: torch.Tensor, index: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The student's logits, and the teacher's when computing the graph features already ran the teacher."""
        if not self._graph_head:
            return self.student(images), None
        extra: dict[str, torch.Tensor] = {}
        teacher_logits = None
        if self.student.graph.mode == "memory" and index is not None:
            extra["index"] = index
        if self._teacher_tap is not None:
            with torch.no_grad():
                t = self._teacher_tap(images)
            extra["graph_z"] = self.graph_proj(t.embedding)
            teacher_logits = t.logits
        return self.student(images, **extra), teacher_logits

    def forward_train(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        if p.graph_scope == "global" and distributed.world_size() > 1:
            # Images need no gradient: gather them (and their indices), and the student's graph spans the global
            # batch. The W ranks' mean losses over their own rows, averaged by DDP, have the gradient of the
            # global batch's mean loss.
            rows = distributed.own_rows(len(batch.images))
            logits, teacher_logits = self._student(distributed.all_gather_cat(batch.images),
                                                   distributed.all_gather_cat(batch.index))
            logits = logits[rows]
            teacher_logits = None if teacher_logits is None else teacher_logits[rows]
        else:
            logits, teacher_logits = self._student(batch.images, batch.index)
        if teacher_logits is None:
            teacher_logits = self.teacher_logits(batch)  # the Batch: the teacher-output cache may hold them
        return logits, {
            "ce": p.w_ce * self.cross_entropy(logits, batch.labels),
            "kd": p.w_kd * kd_loss(*standardized_pair(logits, teacher_logits, p.logit_std), p.temperature),
        }

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Evaluation: the student, its graph built on the teacher's features when graph_features=teacher."""
        return self._student(images, None)[0]

    @classmethod
    def student_options(cls, params: CNN2GNNParams, student: str) -> dict[str, Any]:
        if student != "gnn2":  # any other student (e.g. a CNN baseline) is built with its own defaults
            return {}
        return {key: getattr(params, key) for key in _GRAPH_OPTIONS}

    def describe(self) -> dict[str, Any]:
        learner = getattr(self.student, "graph", None)
        if not isinstance(learner, SparseGraphLearner):
            return {}
        return {"graph": learner.describe(), "graph_features": self.params.graph_features,
                "inference_needs_teacher": self._teacher_tap is not None}
