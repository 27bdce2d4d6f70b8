"""`gnn2`: the two-layer GNN student of CNN2GNN (Jiao, Zhang, Li, arXiv:2404.14822) — no convolution anywhere.

    x = flatten(image)                         (optionally average-pooled to a `pool`×`pool` side first)
    Â = SparseGraphLearner(x)                  (kdbench.models.graph: learned sparse graph, batch, anchor or memory)
    H = ReLU(Â X W1 + b1)                      (`conv1`, the hidden layer: the student's embedding)
    logits = Â dropout(H) W2 + b2              (`head`, the classifier: its input is H)

A student like any other: `feature_info` lists `conv1` (output H), `get_classifier()` is `head`, whose forward
pre-hook input is H, so `FeatureTap(embedding=True)` and RKD/CRD read the hidden layer. `num_layers = 2`.
Every default is an option (`--set student.KEY=VALUE`, or the `cnn2gnn.*` parameters): see :func:`gnn2`.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from kdbench.core.errors import UserError, check_range
from kdbench.models.graph import GRAPH_MODES, Graph, IdentityGraph, NeighbourGraph, SparseGraphLearner, WeightsCache
from kdbench.models.zoo import register_model


class GraphConv(nn.Module):
    """One graph convolution: out = Â · dropout(x) W + b (then ReLU if `activation`).

    Â is applied after W (fewer features to move when out < in); the bias is added after Â, so each node gets it
    once. In anchor mode the layer also advances the anchors' features (`graph.anchor_x`) through the same W;
    in evaluation that anchor step is computed once per pass (:class:`WeightsCache`), not once per batch.
    """

    def __init__(self, in_features: int, out_features: int, dropout: float = 0.0, activation: bool = False):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(in_features, out_features, bias=False)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.activation = activation
        self._anchor_cache = WeightsCache()

    def _finish(self, y: torch.Tensor) -> torch.Tensor:
        y = y + self.bias
        return F.relu(y) if self.activation else y

    def forward(self, x: torch.Tensor, graph: Graph) -> torch.Tensor:
        y = self.linear(self.drop(x))
        anchor_y = None
        if graph.anchor_x is not None:
            anchor_x, anchors = graph.anchor_x, graph.anchors
            anchor_y, graph.anchor_x = self._anchor_cache.get(
                self, (anchor_x, anchors), lambda: self._anchor_step(anchor_x, anchors))
        return self._finish(graph.propagate(y, anchor_y))

    def _anchor_step(self, anchor_x: torch.Tensor, anchors: NeighbourGraph | IdentityGraph
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """The anchors' transformed features (what samples read) and their output (the next layer's input)."""
        anchor_y = self.linear(self.drop(anchor_x))
        return anchor_y, self._finish(anchors.propagate(anchor_y))


class GNN2(nn.Module):
    """Two graph-convolution layers over a learned sparse graph of flattened images."""

    num_layers = 2  # the depth counted in the tables (two graph layers; the graph head's projection aside)

    def __init__(self, num_classes: int, in_chans: int, image_size: int, *, k: int = 10, graph: str = "batch",
                 hidden: int = 256, proj_dim: int = 256, anchors: int = 256, dropout: float = 0.5,
                 pool: int = 0, memory_momentum: float = 0.5) -> None:
        super().__init__()
        self.pool = pool
        side = pool if pool else image_size
        in_features = in_chans * side * side
        self.num_classes = num_classes
        self.num_features = hidden
        self.graph = SparseGraphLearner(in_features, k=k, proj_dim=proj_dim, mode=graph, num_anchors=anchors,
                                        memory_momentum=memory_momentum)
        self.conv1 = GraphConv(in_features, hidden, activation=True)
        self.head = GraphConv(hidden, num_classes, dropout=dropout)
        # timm convention; the hidden layer is a vector per image, i.e. the whole image reduced to 1×1.
        self.feature_info = [{"module": "conv1", "num_chs": hidden, "reduction": image_size}]

    def get_classifier(self) -> nn.Module:
        return self.head

    def flatten_input(self, images: torch.Tensor) -> torch.Tensor:
        if self.pool:
            images = F.adaptive_avg_pool2d(images, self.pool)
        return images.flatten(1)

    def forward(self, images: torch.Tensor, graph_z: torch.Tensor | None = None,
                index: torch.Tensor | None = None) -> torch.Tensor:
        """Logits; `graph_z` and `index` go to the graph head (:meth:`SparseGraphLearner.forward`): a
        projection to build the graph on in place of the student's own, and the samples' training indices
        (memory mode)."""
        x = self.flatten_input(images)
        graph = self.graph(x, graph_z, index)
        h = self.conv1(x, graph)
        return self.head(h, graph)


_OPTIONS = ("k", "graph", "hidden", "proj_dim", "anchors", "dropout", "pool", "memory_momentum")


def _batch_graph(options: dict[str, Any]) -> bool:
    """gnn2 over the batch's own samples (graph 'batch', k > 0) predicts each test image from its evaluation batch;
    'anchor' mode (learned anchors), 'memory' mode (the training set's memory) and k = 0 (no graph) judge each
    image alone."""
    defaults = inspect.signature(gnn2).parameters
    k = options.get("k", defaults["k"].default)
    return options.get("graph", defaults["graph"].default) == "batch" and int(k) > 0


@register_model("gnn2", lr_scale=0.2, transductive=_batch_graph)
def gnn2(num_classes: int, in_chans: int = 3, image_size: int = 16, *, k: int = 10, graph: str = "batch",
         hidden: int = 256, proj_dim: int = 256, anchors: int = 256, dropout: float = 0.5, pool: int = 0,
         memory_momentum: float = 0.5, **unknown: Any) -> GNN2:
    """The CNN2GNN student. Options: k (neighbours, 0 = no graph: an MLP on the same input), graph ('batch' |
    'anchor'), hidden (width of H), proj_dim (graph projection width), anchors (anchor mode's m), dropout (on H,
    before the second layer), pool (average-pool the image to this side first; 0 = off), memory_momentum ('memory'
    mode: μ of the memory update m_i ← μ·m_i + (1 − μ)·z_i)."""
    if unknown:
        raise UserError(f"gnn2 has no option '{next(iter(unknown))}'. Valid: {', '.join(_OPTIONS)}")
    for name, value in (("k", k), ("hidden", hidden), ("proj_dim", proj_dim), ("anchors", anchors), ("pool", pool)):
        if isinstance(value, bool) or not float(value).is_integer():
            raise UserError(f"gnn2.{name}={value} must be a whole number")
    if graph not in GRAPH_MODES:
        raise UserError(f"unknown graph mode '{graph}'. Valid: {', '.join(GRAPH_MODES)}")
    check_range("gnn2.k", k, 0, 1000)
    check_range("gnn2.hidden", hidden, 1, 65536)
    check_range("gnn2.proj_dim", proj_dim, 1, 65536)
    check_range("gnn2.dropout", dropout, 0.0, 1.0)
    check_range("gnn2.pool", pool, 0, image_size)
    check_range("gnn2.memory_momentum", memory_momentum, 0.0, 1.0)
    if graph == "anchor" and k > 0:
        check_range("gnn2.anchors", anchors, k + 1, 1_000_000)
    return GNN2(num_classes, in_chans, image_size, k=int(k), graph=graph, hidden=int(hidden),
                proj_dim=int(proj_dim), anchors=int(anchors), dropout=float(dropout), pool=int(pool),
                memory_momentum=float(memory_momentum))
