"""Cost of the CNN2GNN graph head against the batch size: time and memory, batch mode (O(B²) distances) vs anchor
mode (O(B·m)), and in batch mode the dense Â matmul vs the sparse CSR product (where the
crossover sets `kdbench.models.graph.DENSE_MAX_NODES`).

    python benchmarks/graph_head_cost.py                        # B = 64 … 4096, 1 thread
    python benchmarks/graph_head_cost.py --max-batch 1024 --threads 2

One training step of the head alone: project → squared distances → closed-form sparse P → Â → one propagation of
a `--features`-wide signal (a graph layer's Â·XW), forward and backward. Input width 768 = digits 3×16×16.
Memory is what autograd keeps for the backward pass (sum of the distinct storages saved by the step), the part
that grows with B; with `--device cuda` the CUDA allocator's peak is shown as well.
"""

from __future__ import annotations

import argparse
import time

import torch

from kdbench.models.graph import AnchorGraph, SparseGraphLearner


def saved_bytes_and_time(learner: SparseGraphLearner, x: torch.Tensor, y: torch.Tensor, repeats: int,
                         device: torch.device) -> tuple[float, float, float]:
    """(best seconds per step, MB saved for backward, CUDA peak MB or nan)."""
    anchor_y = torch.randn(getattr(learner, "anchors", x).shape[0], y.shape[1], device=device)
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.layout == torch.sparse_coo:
            parts = [t._indices(), t._values()]
        elif t.layout == torch.sparse_csr:
            parts = [t.crow_indices(), t.col_indices(), t.values()]
        else:
            parts = [t]
        for part in parts:
            storage = part.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
        return t

    def step(record: bool) -> None:
        if record:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                graph = learner(x)
                out = graph.propagate(y, anchor_y if isinstance(graph, AnchorGraph) else None)
        else:
            graph = learner(x)
            out = graph.propagate(y, anchor_y if isinstance(graph, AnchorGraph) else None)
        out.square().mean().backward()
        learner.zero_grad(set_to_none=True)

    step(record=False)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    step(record=True)
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        step(record=False)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best, sum(storages.values()) / 2**20, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-batch", type=int, default=4096)
    ap.add_argument("--dense-max-batch", type=int, default=2048, help="largest B for the forced-dense column")
    ap.add_argument("--in-features", type=int, default=768)
    ap.add_argument("--features", type=int, default=256)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--anchors", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)

    def learner(mode: str, dense_max_nodes: int) -> SparseGraphLearner:
        m = SparseGraphLearner(args.in_features, k=args.k, mode=mode, num_anchors=args.anchors,
                               dense_max_nodes=dense_max_nodes).to(device).train()
        if mode == "anchor":
            m.init_anchors_from(torch.randn(args.anchors, args.in_features, device=device))
        return m

    variants = {
        "batch sparse": learner("batch", 0),  # sparse CSR Â at every B
        "batch dense": learner("batch", 1 << 30),  # dense Â matmul at every B
        f"anchor m={args.anchors}": learner("anchor", 1 << 30),
    }
    print(f"graph head, one training step (fwd+bwd), in={args.in_features}, proj=256, k={args.k}, "
          f"features={args.features}, {args.device}, {args.threads} thread(s), best of {args.repeats}")
    head = f"{'B':>6}" + "".join(f"{name + ' ms':>20}{'MB':>9}" for name in variants)
    if device.type == "cuda":
        head += f"{'cuda peak MB (batch sparse | anchor)':>40}"
    print(head)
    b = 64
    while b <= args.max_batch:
        x = torch.randn(b, args.in_features, device=device)
        y = torch.randn(b, args.features, device=device)
        line = f"{b:>6}"
        peaks = []
        for name, m in variants.items():
            if name == "batch dense" and b > args.dense_max_batch:
                line += f"{'—':>20}{'—':>9}"
                continue
            s, mb, peak = saved_bytes_and_time(m, x, y, args.repeats, device)
            line += f"{s * 1e3:>20.2f}{mb:>9.1f}"
            if name != "batch dense":
                peaks.append(peak)
        if device.type == "cuda":
            line += f"{peaks[0]:>28.1f} | {peaks[1]:.1f}"
        print(line, flush=True)
        b *= 2


if __name__ == "__main__":
    main()
