"""The differentiable sparse graph head of the CNN2GNN student: a graph over images learned from their features.

Sparse conditional probabilities ("adaptive neighbours", the closed form of the AdaGAE/AnchorGAE line of work
that CNN2GNN builds on). For node i with squared distances d_ij to its candidate neighbours (self excluded),
sorted d_i(1) ≤ d_i(2) ≤ …, and sparsity k:

    p(j | i) = max(d_i(k+1) − d_ij, 0) / ( k · d_i(k+1) − Σ_{v=1..k} d_i(v) )

the solution of  min_p Σ_j p_j d_ij + γ_i p_j²  on the simplex with γ_i = (k·d_i(k+1) − Σ_v d_i(v)) / 2, the γ
that leaves exactly k non-zero weights (barring ties). Choosing the k+1 smallest is the only non-smooth step;
the weights are ordinary tensor algebra of the selected distances, so gradients reach the projection that
produced them.

:class:`SparseGraphLearner` turns a batch of feature vectors into a normalised graph operator
Â = D^{-1/2} (A + I) D^{-1/2} with A = (P + Pᵀ)/2, in one of two modes:

- `batch`: the nodes are the samples of the batch (O(B²) distances); a prediction depends on the batch.
- `anchor`: m learnable anchors in the input space; a sample links to its k nearest anchors, anchors link to
  anchors; samples never send messages, so a sample's output depends only on itself and the anchors (O(B·m)).
- `memory`: a memory of every training sample's projection z (momentum-updated by sample index, as CRD's
  memory bank: m_i ← μ·m_i + (1 − μ)·z_i, the first visit stores z_i) and of its latest graph-layer input; a
  sample links to its k nearest memory entries (in training never to its own), which send it their features
  through the layers and read nothing back. The graph sees the training set's topology, not only the batch's;
  evaluation reads the memory built in training and never writes it, and test images never link to each other
  (inductive, like `anchor`). O(B·N) distances for N training samples.

k = 0 means no graph: Â = I and the graph layers reduce to an MLP on the same input (the "no graph" ablation).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
import torch.nn as nn

GRAPH_MODES = ("batch", "anchor", "memory")

# Up to this many nodes Â is built dense and applied by one matmul, faster on CPU than a sparse CSR product for
# small graphs; above it Â is sparse (n·(2k+1) entries). benchmarks/graph_head_cost.py measures the crossover
# (CPU, 1 thread: dense 6.6 ms vs sparse 13 ms at B=256; sparse 17 ms vs dense 21 ms at B=512).
DENSE_MAX_NODES = 256


def _closed_form_weights(sorted_d: torch.Tensor, k: int, eps: float) -> torch.Tensor:
    """Weights of the k nearest from the k+1 smallest distances of each row, sorted ascending."""
    d_next = sorted_d[..., k : k + 1]  # d_i(k+1)
    gaps = (d_next - sorted_d[..., :k]).clamp_min(0.0)  # max(d_i(k+1) − d_ij, 0)
    denom = gaps.sum(-1, keepdim=True)  # = k·d_i(k+1) − Σ_{v≤k} d_i(v)
    # All k+1 distances equal: γ = 0, any point of the simplex on the chosen k is optimal and the closed form is
    # 0/0; take the uniform weights 1/k (still k non-zeros summing to 1, and a finite gradient).
    uniform = torch.full_like(gaps, 1.0 / k)
    return torch.where(denom > eps, gaps / denom.clamp_min(eps), uniform)


def sparse_conditional_neighbors(
    distances: torch.Tensor, k: int, eps: float = 1e-12
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest candidates of each row and their weights p(j|i): `(indices, weights)`, both (B, k).

    `distances` is (B, N) squared distances with the self-pairs already excluded by the caller (e.g. +inf);
    each row needs at least k+1 finite entries. Weights are non-negative, sum to 1 per row, and are
    differentiable w.r.t. `distances`. Only the k+1 smallest are selected (`topk`), never a full sort.
    """
    if k < 0 or k + 1 > distances.shape[-1]:
        raise ValueError(f"k={k} needs 0 ≤ k < N={distances.shape[-1]} candidates per row")
    if k == 0:
        empty = distances.new_zeros(distances.shape[:-1] + (0,))
        return empty.long(), empty
    values, indices = distances.topk(k + 1, dim=-1, largest=False, sorted=True)
    return indices[..., :k], _closed_form_weights(values, k, eps)


def sparse_conditional_probs(distances: torch.Tensor, k: int, eps: float = 1e-12) -> torch.Tensor:
    """Dense P (B, N): exactly k non-zeros per row (barring ties), rows summing to 1 (all zeros for k = 0).

    p(j|i) = max(d_i(k+1) − d_ij, 0) / (k·d_i(k+1) − Σ_{v≤k} d_i(v)); see :func:`sparse_conditional_neighbors`.
    """
    indices, weights = sparse_conditional_neighbors(distances, k, eps)
    return torch.zeros_like(distances).scatter(-1, indices, weights)


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """‖a_i − b_j‖² for all pairs, (A, B). By the expansion, not cdist: its sqrt has no gradient at 0."""
    sq = a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T
    return sq.clamp_min(0.0)


# ---------------------------------------------------------------------------------------------------------
# Graph operators: what a graph layer multiplies by. Each is built fresh per forward pass.


class IdentityGraph:
    """Â = I: no neighbours (k = 0, or too few nodes to pick any)."""

    anchor_x: torch.Tensor | None = None

    def propagate(self, y: torch.Tensor, anchor_y: torch.Tensor | None = None) -> torch.Tensor:
        return y


class NeighbourGraph:
    """Â = D^{-1/2} (A + I) D^{-1/2} with A = (P + Pᵀ)/2 and P given as k weighted neighbours per node.

    `propagate(y)` returns Â y. Above `dense_max_nodes` nodes Â is a sparse CSR matrix with n·(2k+1) entries
    (self-loops, P/2, Pᵀ/2; duplicates summed) and Â y one sparse-dense product, O(n·k·F), never a B×B matrix;
    at or below it a dense matmul, faster for small graphs. Gradients reach P's weights either way.
    """

    anchor_x: torch.Tensor | None = None

    def __init__(self, indices: torch.Tensor, weights: torch.Tensor, dense_max_nodes: int = DENSE_MAX_NODES):
        n, k = indices.shape
        in_weight = weights.new_zeros(n).index_add(0, indices.reshape(-1), weights.reshape(-1))
        degree = 1.0 + 0.5 * (weights.sum(1) + in_weight)  # row sums of A + I
        self.scale = degree.rsqrt()  # D^{-1/2}
        if n <= dense_max_nodes:
            p = weights.new_zeros(n, n).scatter(1, indices, weights)
            a = 0.5 * (p + p.T) + torch.eye(n, dtype=weights.dtype, device=weights.device)
            self.operator = self.scale[:, None] * a * self.scale[None, :]
        else:
            nodes = torch.arange(n, device=indices.device)
            src, dst = nodes.repeat_interleave(k), indices.reshape(-1)
            rows, cols = torch.cat([nodes, src, dst]), torch.cat([nodes, dst, src])
            half = 0.5 * weights.reshape(-1)
            values = torch.cat([torch.ones_like(self.scale), half, half]) * self.scale[rows] * self.scale[cols]
            coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (n, n), check_invariants=False)
            with warnings.catch_warnings():  # "sparse CSR support is in beta": we rely on spmm and its backward
                warnings.simplefilter("ignore", UserWarning)
                self.operator = coo.coalesce().to_sparse_csr()

    @property
    def is_dense(self) -> bool:
        return self.operator.layout == torch.strided

    def propagate(self, y: torch.Tensor, anchor_y: torch.Tensor | None = None) -> torch.Tensor:
        if self.is_dense:
            return self.operator @ y
        # Sparse products have no half-precision kernels on CPU: run in Â's dtype, hand back the caller's.
        with torch.autocast(device_type=y.device.type, enabled=False):
            return torch.sparse.mm(self.operator, y.to(self.operator.dtype)).to(y.dtype)


class AnchorGraph:
    """Samples read from their k nearest anchors; anchors read from anchors (a :class:`NeighbourGraph`).

    Sample row of Â: self-loop 1 and p(j|i) to anchor j (A_ij = (p_ij + p_ij)/2, as if the anchor returned the
    link), degree d_i = 2, normalised by d_i^{-1/2} d_j^{-1/2} with the anchor's degree taken from the anchor
    graph alone. Samples send nothing, so anchors — and hence every sample's output — do not depend on the batch.

    `anchor_x` carries the anchors' features from layer to layer: each graph layer reads it as the anchors'
    input and replaces it with their output.
    """

    def __init__(self, indices: torch.Tensor, weights: torch.Tensor, anchors: NeighbourGraph | IdentityGraph,
                 anchor_x: torch.Tensor) -> None:
        # P as a dense (B, m) matrix: O(B·m) like the distances it came from, and one matmul per layer.
        self.p = weights.new_zeros(indices.shape[0], anchor_x.shape[0]).scatter(1, indices, weights)
        self.anchors = anchors
        self.anchor_scale = anchors.scale if isinstance(anchors, NeighbourGraph) else None
        self.anchor_x: torch.Tensor | None = anchor_x

    def propagate(self, y: torch.Tensor, anchor_y: torch.Tensor | None = None) -> torch.Tensor:
        assert anchor_y is not None, "anchor mode propagates the anchors' features alongside the samples'"
        src = anchor_y if self.anchor_scale is None else anchor_y * self.anchor_scale[:, None]
        s = 1.0 / math.sqrt(2.0)
        return s * (s * y + self.p.to(src.dtype) @ src)


Graph = IdentityGraph | NeighbourGraph | AnchorGraph


class WeightsCache:
    """A value computed from a module's weights alone, reused by later forward passes until a weight changes.

    In anchor mode the anchors' side of every layer (their projection, their graph, their features) depends on
    the weights only, not on the batch: an evaluation pass computes it once instead of once per batch. Reuse
    needs all of: eval mode (no dropout draws), autograd off (no graph kept alive across passes), the same inputs
    (compared by identity), the same autocast state, and no parameter or buffer changed since — an optimizer step
    or `load_state_dict` updates tensors in place, which bumps their version counter; `.to()` swaps their storage.
    The cached value is exactly what `compute()` would return again (same operations on the same tensors).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._inputs: tuple = ()
        self._value: Any = None

    def get(self, module: nn.Module, inputs: tuple, compute: Any) -> Any:
        if module.training or torch.is_grad_enabled():
            self._key, self._inputs, self._value = None, (), None  # release what an earlier pass kept
            return compute()
        key = (
            tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (*module.parameters(), *module.buffers())),
            tuple((d, torch.is_autocast_enabled(d), torch.get_autocast_dtype(d)) for d in ("cpu", "cuda")),
        )
        fresh = key == self._key and len(inputs) == len(self._inputs) and all(
            a is b for a, b in zip(inputs, self._inputs, strict=True))
        if not fresh:
            self._value, self._key, self._inputs = compute(), key, inputs
        return self._value


# ---------------------------------------------------------------------------------------------------------


class SparseGraphLearner(nn.Module):
    """Learns a sparse graph over the samples of a batch (or over learnable anchors) from their features.

    z = W_p x + b_p (a learnable projection, `proj_dim` wide); d_ij = ‖z_i − z_j‖²; P = the sparse conditional
    probabilities of :func:`sparse_conditional_probs` with sparsity k; A = (P + Pᵀ)/2; Â = D^{-1/2}(A + I)D^{-1/2}.
    The projection is trained through the weights of P (the top-k choice itself passes no gradient). The forward
    pass returns a graph operator (`propagate(y) = Â y`): a dense Â up to `dense_max_nodes` (256) nodes, a sparse
    CSR Â with n·(2k+1) entries above, so large batches never build a B×B operator (the distances still are B×B).

    `mode="anchor"`: `num_anchors` learnable anchors in the input space, initialised from the first training
    samples seen (the batches of the first steps in train mode fill them in order; `anchors_filled` is a buffer,
    so the state is checkpointed). Until then only the filled anchors are used; an untrained module uses its
    random anchors.
    """

    def __init__(self, in_features: int, k: int = 10, proj_dim: int = 256, mode: str = "batch",
                 num_anchors: int = 256, dense_max_nodes: int = DENSE_MAX_NODES, memory_momentum: float = 0.5
                 ) -> None:
        super().__init__()
        if mode not in GRAPH_MODES:
            raise ValueError(f"graph mode '{mode}': valid modes are {', '.join(GRAPH_MODES)}")
        if k < 0:
            raise ValueError(f"k={k} must be ≥ 0")
        self.k = k
        self.mode = mode
        self.dense_max_nodes = dense_max_nodes
        self.proj = nn.Linear(in_features, proj_dim) if k > 0 else None
        if mode == "anchor" and k > 0:
            if num_anchors < k + 1:
                raise ValueError(f"anchor mode needs more anchors than neighbours: anchors={num_anchors}, k={k}")
            self.anchors = nn.Parameter(torch.randn(num_anchors, in_features))
            self.register_buffer("anchors_filled", torch.zeros((), dtype=torch.long))
            self._all_filled = False  # host-side mirror of anchors_filled == m: no device sync once it holds
            self._anchor_cache = WeightsCache()  # evaluation: the anchors' projection and graph, once per pass
        if mode == "memory" and k > 0:
            self.memory_momentum = memory_momentum
            # One row per training sample, grown to the largest index seen (the learner is built before the
            # training split's size is known); persistent, so checkpoints and exports carry the memory.
            self.register_buffer("memory_z", torch.zeros(0, proj_dim))
            self.register_buffer("memory_x", torch.zeros(0, in_features))
            self.register_buffer("memory_seen", torch.zeros(0, dtype=torch.bool))

    def describe(self) -> dict[str, Any]:
        """Facts about the learner's state for a run record."""
        filled = int(self.anchors_filled) if hasattr(self, "anchors_filled") else 0
        anchors = self.anchors.shape[0] if hasattr(self, "anchors_filled") else 0
        facts = {"mode": self.mode, "k": self.k, "anchors": anchors, "anchors_filled": filled}
        if hasattr(self, "memory_seen"):
            facts["memory_filled"] = int(self.memory_seen.sum())
        return facts

    def extra_repr(self) -> str:
        return f"mode={self.mode}, k={self.k}"

    @torch.no_grad()
    def init_anchors_from(self, x: torch.Tensor) -> None:
        """Copy samples into the anchors not yet initialised (called on each training batch until all are)."""
        start = int(self.anchors_filled)
        take = min(self.anchors.shape[0] - start, x.shape[0])
        if take > 0:
            self.anchors[start : start + take] = x[:take].detach().to(self.anchors.dtype)
            self.anchors_filled += take

    def _active_anchors(self, x: torch.Tensor) -> torch.Tensor:
        """The anchors in use, first filling the uninitialised ones from the batch `x` in train mode."""
        if self._all_filled:
            return self.anchors
        if self.training:
            self.init_anchors_from(x)
        filled = int(self.anchors_filled)
        self._all_filled = filled == self.anchors.shape[0]
        return self.anchors if filled == 0 else self.anchors[:filled]  # 0: never trained, random anchors

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        if hasattr(self, "memory_seen"):  # a saved memory has the training split's size: take its shape
            for name in ("memory_z", "memory_x", "memory_seen"):
                saved = state_dict.get(prefix + name)
                if saved is not None:
                    mine = getattr(self, name)
                    setattr(self, name, mine.new_zeros(saved.shape))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if hasattr(self, "anchors_filled"):
            self._all_filled = False  # re-read the loaded count on the next forward

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None, index: torch.Tensor | None = None) -> Graph:
        """The graph over `x` (B, in_features). `z`: the samples' graph-space projections computed elsewhere
        (e.g. from the teacher's features) in place of `proj(x)` (batch and memory modes). `index`: the
        samples' positions in the training split, which memory mode needs in training (to update the memory
        and never link a sample to itself)."""
        if self.k == 0:
            return IdentityGraph()
        # Distances and weights in float32 even under AMP: half-precision distances tie, and ties change the
        # top-k choice; the graph layers still run in the autocast dtype.
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self._graph(x.float(), None if z is None else z.float(), index)

    def _graph(self, x: torch.Tensor, z: torch.Tensor | None = None, index: torch.Tensor | None = None) -> Graph:
        if z is not None and self.mode == "anchor":
            raise ValueError("anchor mode projects its learned anchors with its own projection: it takes no "
                             "outside projection z (use graph mode batch or memory)")
        if self.mode == "batch":
            return self._batch_graph(self.proj(x) if z is None else z)
        if self.mode == "memory":
            return self._memory_graph(x, self.proj(x) if z is None else z, index)
        z = self.proj(x)
        anchors, za, anchor_graph = self._anchor_cache.get(self, (), lambda: self._anchor_side(x))
        k = min(self.k, anchors.shape[0] - 1)  # the closed form needs k+1 candidates
        if k < 1:
            return IdentityGraph()
        indices, weights = sparse_conditional_neighbors(squared_distances(z, za), k)
        return AnchorGraph(indices, weights, anchor_graph, anchors)

    def _memory_graph(self, x: torch.Tensor, z: torch.Tensor, index: torch.Tensor | None) -> Graph:
        """Each sample's k nearest memory entries (never itself), as an :class:`AnchorGraph` over the distinct
        neighbours of the batch (they read only themselves); then, in training, the batch is written to memory."""
        if self.training and index is None:
            raise ValueError("graph mode 'memory' needs each training sample's index (the method passes it: "
                             "cnn2gnn does)")
        candidates = torch.nonzero(self.memory_seen).flatten()
        graph: Graph = IdentityGraph()  # the first batch of training: an empty memory, no neighbours yet
        own = None if index is None else candidates[None, :] == index[:, None]
        k = min(self.k, candidates.numel() - 1 - (0 if own is None else int(own.any(1).max())))
        if k >= 1:
            d = squared_distances(z, self.memory_z[candidates])
            if own is not None:
                d = d.masked_fill(own, float("inf"))
            indices, weights = sparse_conditional_neighbors(d, k)
            rows, local = torch.unique(indices, return_inverse=True)
            graph = AnchorGraph(local, weights, IdentityGraph(), self.memory_x[candidates[rows]])
        if self.training:
            self._remember(index, z.detach(), x.detach())
        return graph

    @torch.no_grad()
    def _remember(self, index: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> None:
        """m_i ← μ·m_i + (1 − μ)·z_i for samples seen before, m_i ← z_i on the first visit; x_i ← x_i."""
        size = int(index.max()) + 1
        if size > self.memory_seen.numel():
            grow = size - self.memory_seen.numel()
            self.memory_z = torch.cat([self.memory_z, self.memory_z.new_zeros(grow, self.memory_z.shape[1])])
            self.memory_x = torch.cat([self.memory_x, self.memory_x.new_zeros(grow, self.memory_x.shape[1])])
            self.memory_seen = torch.cat([self.memory_seen, self.memory_seen.new_zeros(grow)])
        mu = torch.where(self.memory_seen[index], self.memory_momentum, 0.0)[:, None].to(z.dtype)
        self.memory_z[index] = mu * self.memory_z[index] + (1.0 - mu) * z.to(self.memory_z.dtype)
        self.memory_x[index] = x.to(self.memory_x.dtype)
        self.memory_seen[index] = True

    def _anchor_side(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, NeighbourGraph | IdentityGraph]:
        """The anchors in use, their projection and their graph: functions of the weights alone (in eval mode)."""
        anchors = self._active_anchors(x)
        za = self.proj(anchors)
        return anchors, za, self._batch_graph(za)

    def _batch_graph(self, z: torch.Tensor) -> NeighbourGraph | IdentityGraph:
        n = z.shape[0]
        k = min(self.k, n - 2)  # n − 1 candidates (self excluded), and the closed form needs k+1 of them
        if k < 1:
            return IdentityGraph()  # a batch of 1 or 2 samples: no neighbours, each node keeps its own features
        d = squared_distances(z, z)
        d = d.masked_fill(torch.eye(n, dtype=torch.bool, device=d.device), float("inf"))
        indices, weights = sparse_conditional_neighbors(d, k)
        return NeighbourGraph(indices, weights, self.dense_max_nodes)
