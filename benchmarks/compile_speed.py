"""`--compile` against eager on CPU: one epoch of training per case, eager and through torch.compile (inductor), with
the compile overhead and the number of epochs that repay it (issue #40).

Cases, at the README's defaults (digits at 16 px: 1,437 training samples, batch 64, 23 steps an epoch; 1 channel,
10 classes; SGD with momentum):
- `resnet152-teacher`: the README's first command's teacher training (ResNet-152 at 16 px);
- `resnet18`, `cifar_resnet8`, `gnn2`: a student's training (`ce`);
- `kd-resnet152`: the kd step: ResNet-152's forward in inference mode (what the teacher-output cache's first epoch
  computes) plus resnet18's training step.

Each case runs in its own process (dynamo's caches and counters start empty), with inductor's cache in a fresh
temporary folder (a cold cache: the compile time a first run pays; a sweep's later runs read it warm). Per case:
the eager epoch's seconds (median of `--epochs` epochs after one warm-up epoch), the compiled first epoch (compile
included) and the compiled steady epoch (median as eager), their ratio, the overhead (first − steady) and the
epochs that repay it: overhead / (eager − steady), "never" when compiled is not faster.

    python benchmarks/compile_speed.py [--cases resnet152-teacher,resnet18,cifar_resnet8,gnn2,kd-resnet152]
                                       [--threads 1] [--epochs 2] [--device cpu] [--out compile_speed.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

CASES = ("cifar_resnet8", "resnet18", "gnn2", "resnet152-teacher", "kd-resnet152")
SAMPLES, BATCH, SIZE, CLASSES = 1437, 64, 16, 10


def _models(case: str) -> tuple[Any, Any | None]:
    """(the trained model, the frozen teacher or None) of a case, built as kdbench builds them."""
    import torch

    from kdbench.models.zoo import create_model

    torch.manual_seed(0)
    make = lambda name: create_model(name, num_classes=CLASSES, in_chans=1, image_size=SIZE)  # noqa: E731
    if case == "resnet152-teacher":
        return make("resnet152"), None
    if case == "kd-resnet152":
        return make("resnet18"), make("resnet152").eval().requires_grad_(False)
    return make(case), None


def _epoch(step: Any, images: Any, labels: Any) -> float:
    import torch

    t0 = time.perf_counter()
    for i in range(0, SAMPLES, BATCH):
        step(images[i:i + BATCH], labels[i:i + BATCH])
    if images.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(case: str, compiled: bool, epochs: int, device: str = "cpu") -> dict[str, Any]:
    """One case, eager or compiled, in this process: the first epoch's seconds and the steady ones'."""
    import torch
    import torch.nn.functional as F

    student, teacher = _models(case)
    student.to(device)
    if teacher is not None:
        teacher.to(device)
    if compiled:  # as a --compile run sets it up (kdbench.train.compile, kdbench.train.engine)
        from kdbench.train.compile import configure_inductor

        configure_inductor(torch.device(device))
        student.compile()
        if teacher is not None:
            teacher.compile()
    # kdbench's one optimizer builder, as a run calls it: the recipe's SGD (momentum 0.9, weight decay 5e-4), the
    # fused kernel when compiled, torch's default (foreach) when eager.
    from kdbench.spec.recipe import Recipe
    from kdbench.train.optim import build_optimizer

    recipe = Recipe(name="compile-speed", epochs=1, batch_size=BATCH, lr=0.01)
    opt, _ = build_optimizer(student, recipe, fused=compiled)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(SAMPLES, 1, SIZE, SIZE, generator=gen).to(device)
    labels = torch.randint(0, CLASSES, (SAMPLES,), generator=gen).to(device)

    def step(x: Any, y: Any) -> None:
        logits = student(x)
        loss = F.cross_entropy(logits, y)
        if teacher is not None:
            with torch.inference_mode():
                t_logits = teacher(x)
            loss = loss + F.kl_div(F.log_softmax(logits / 4, 1), F.softmax(t_logits.clone() / 4, 1),
                                   reduction="batchmean") * 16
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    student.train()
    first = _epoch(step, images, labels)  # the ragged last batch (1437 = 22 × 64 + 29) is in every epoch
    steady = [_epoch(step, images, labels) for _ in range(epochs)]
    return {"first_s": first, "epoch_s": statistics.median(steady)}


def run_case(case: str, threads: int, epochs: int, device: str = "cpu") -> dict[str, Any]:
    """Eager and compiled in two fresh processes (a cold inductor cache each time)."""
    out: dict[str, Any] = {"case": case}
    for mode in ("eager", "compiled"):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": str(threads)}
            command = [sys.executable, __file__, "--one", case, "--mode", mode, "--epochs", str(epochs),
                       "--threads", str(threads), "--device", device]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            out[mode] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
            return out
        out[mode] = json.loads(done.stdout.strip().splitlines()[-1])
    eager, comp = out["eager"]["epoch_s"], out["compiled"]["epoch_s"]
    overhead = out["compiled"]["first_s"] - comp
    gain = eager - comp
    out.update(speedup=eager / comp, overhead_s=overhead,
               repaid_after_epochs=math.ceil(overhead / gain) if gain > 0 else "never")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=2, help="steady epochs measured after the first")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (benchmarks/gpu_check.sh's compiled runs)")
    ap.add_argument("--out", default=None, help="also write the results here as JSON (after each case)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="eager", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(measure(args.one, args.mode == "compiled", args.epochs, args.device)))
        return
    results = []
    print(f"{'case':<20}{'eager s/ep':>11}{'compiled s/ep':>14}{'speedup':>9}{'overhead s':>11}{'repaid after':>14}")
    for case in args.cases.split(","):
        r = run_case(case, args.threads, args.epochs, args.device)
        results.append(r)
        if "speedup" in r:
            print(f"{case:<20}{r['eager']['epoch_s']:>11.2f}{r['compiled']['epoch_s']:>14.2f}{r['speedup']:>8.2f}x"
                  f"{r['overhead_s']:>11.1f}{str(r['repaid_after_epochs']):>14}", flush=True)
        else:
            print(f"{case:<20} failed: {r}", flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"threads": args.threads, "device": args.device, "torch": torch.__version__,
                           "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
