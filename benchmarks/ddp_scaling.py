"""Training throughput of one run at world size 1, 2 (and 4 where the cores allow; on a GPU machine: 1 vs all
GPUs), data-parallel through `kdbench run --nproc N`, and the speed-up over one process.

    python benchmarks/ddp_scaling.py [--method ce] [--student cifar_resnet8] [--image-size 16] [--epochs 2]
                                     [--batch-size 64] [--worlds 1,2] [--device auto]

Each world size trains the same run (digits, the same global batch) from scratch in a temporary results folder;
throughput is training images per second over the training part of each epoch (`epoch_s` in the run's
metrics, evaluation excluded; the first epoch, which warms up, is dropped when there are two or more). On a CPU
every process gets cores / world intra-op threads, so all world sizes use the same cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

import torch

from kdbench.execute.api import run


def default_worlds(device: str) -> list[int]:
    if device == "cuda":
        return sorted({1, torch.cuda.device_count()})
    cores = os.cpu_count() or 1
    return [w for w in (1, 2, 4) if w <= cores]


def measure(world: int, args: argparse.Namespace, device: str, root: Path) -> dict[str, float]:
    threads = max(1, (os.cpu_count() or 1) // world)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # the launcher's workers read it at start
    torch.set_num_threads(threads)
    record = run(args.method, student=args.student, epochs=args.epochs, batch_size=args.batch_size,
                 sets=[f"data.image_size={args.image_size}"], device=device, results_dir=root / f"w{world}",
                 nproc=world, force=True)
    metrics = Path(root / f"w{world}" / "runs" / record["run_id"] / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line) for line in metrics]
    timed = epochs[1:] if len(epochs) > 1 else epochs
    images = record["data"]["num_train"]
    seconds = sum(e["epoch_s"] for e in timed) / len(timed)
    return {"world": world, "threads_per_process": threads, "epoch_s": seconds, "images_per_s": images / seconds,
            "top1_last": record["metrics"]["top1_last"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="ce")
    parser.add_argument("--student", default="cifar_resnet8")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--worlds", default="", help="comma-separated world sizes [default: 1,2,4 within cores]")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    worlds = [int(w) for w in args.worlds.split(",")] if args.worlds else default_worlds(device)
    machine = torch.cuda.get_device_name(0) if device == "cuda" else f"{platform.processor() or platform.machine()}"
    print(f"# {args.method} {args.student} on digits at {args.image_size} px, global batch {args.batch_size}, "
          f"{args.epochs} epochs, {device} ({machine}, {os.cpu_count()} cores), torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(w, args, device, Path(tmp)) for w in worlds]
    base = rows[0]["images_per_s"]
    print("| world size | threads / process | train s / epoch | images / s | speed-up | top-1 last |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['world']} | {r['threads_per_process']} | {r['epoch_s']:.2f} | {r['images_per_s']:.0f} | "
              f"{r['images_per_s'] / base:.2f}× | {r['top1_last']:.2f} |")


if __name__ == "__main__":
    main()
