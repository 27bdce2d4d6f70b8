"""Size and speed of the CIFAR architectures (`cifar_*`, the CRD codebase's): parameters, FLOPs, and training and
inference images per second at batch 64 on 32 × 32 inputs, on CPU, and on the GPU when one is present.

    OMP_NUM_THREADS=1 python benchmarks/model_speed.py --threads 1 --out benchmarks/model_speed.md
    python benchmarks/model_speed.py --models cifar_resnet8x4,cifar_resnet32x4 --reps 5 --devices cpu,cuda

- Parameters: all of them, at 100 classes.
- FLOPs: `torch.utils.flop_counter.FlopCounterMode` over one eval forward of one image (a multiply-add counts
  2; convolutions and matrix products only — BN, ReLU, pooling are not counted). Papers that quote "FLOPs" for
  these networks usually mean multiply-adds: half this number.
- Train: one SGD step (forward, cross-entropy, backward, update) on a batch of 64 random images, train mode.
- Eval: one forward of 64 images, eval mode, no grad.
Each timing is the best of `--reps` timed passes after one warm-up pass (best-of suppresses other processes'
noise on a shared machine); images/s = 64 / that time. Weights are untrained: the cost does not depend on them.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import timm
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

import kdbench.models  # noqa: F401  (registers the cifar_ architectures in timm)


def count_flops(model: torch.nn.Module) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, 32, 32))
    return counter.get_total_flops()


def best_time(step: Callable[[], None], reps: int, device: torch.device) -> float:
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    step()  # warm-up (allocations, cuDNN autotuning, caches)
    sync()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    return min(times)


def images_per_s(name: str, device: torch.device, batch: int, reps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=100).to(device)
    images = torch.randn(batch, 3, 32, 32, device=device)
    labels = torch.randint(0, 100, (batch,), device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def train_step() -> None:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    @torch.no_grad()
    def eval_step() -> None:
        model(images)

    model.train()
    train = best_time(train_step, reps, device)
    model.eval()
    infer = best_time(eval_step, reps, device)
    return batch / train, batch / infer


def machine(devices: list[torch.device], threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    parts = [f"CPU: {cpu}, {threads} torch thread(s) of {os.cpu_count()} cores"]
    if hasattr(os, "getloadavg"):
        parts.append(f"load average at start {os.getloadavg()[0]:.1f}")
    for d in devices:
        if d.type == "cuda":
            parts.append(f"GPU: {torch.cuda.get_device_name(d)}")
    parts.append(f"torch {torch.__version__}, timm {timm.__version__}")
    return "; ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma-separated cifar_ names [default: all of them]")
    parser.add_argument("--reps", type=int, default=3, help="timed passes per measurement (best is kept)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    parser.add_argument("--devices", default="cpu,cuda", help="cpu and/or cuda; cuda is skipped when absent")
    parser.add_argument("--out", default=None, help="also write the markdown table to this file")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    names = [n for n in args.models.split(",") if n] or timm.list_models("cifar_*")
    devices = [torch.device(d) for d in args.devices.split(",")
               if d == "cpu" or (d.startswith("cuda") and torch.cuda.is_available())]
    header = ["model", "params", "GFLOPs/img"]
    for d in devices:
        header += [f"{d.type} train img/s", f"{d.type} eval img/s"]
    rows = []
    where = machine(devices, torch.get_num_threads())
    t_start = time.perf_counter()
    for name in names:
        model = timm.create_model(name, num_classes=100)
        row = [f"`{name}`", f"{sum(p.numel() for p in model.parameters()):,}", f"{count_flops(model) / 1e9:.3f}"]
        for d in devices:
            train, infer = images_per_s(name, d, args.batch_size, args.reps)
            row += [f"{train:,.0f}", f"{infer:,.0f}"]
        rows.append(row)
        print(" | ".join(row), flush=True)
    omp = os.environ.get("OMP_NUM_THREADS")
    command = " ".join([f"OMP_NUM_THREADS={omp}"] * bool(omp) + ["python benchmarks/model_speed.py", *sys.argv[1:]])
    lines = [
        "# CIFAR architectures: size and speed",
        "",
        f"Written by `{command}`.",
        "",
        f"Batch {args.batch_size}, 32 × 32 inputs, 100 classes, fp32; best of {args.reps} timed passes after one "
        f"warm-up. {where}. Total {time.perf_counter() - t_start:.0f} s.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
