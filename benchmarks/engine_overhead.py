"""Engine overhead: kdbench's engine vs a hand-written PyTorch loop doing the same work, per student.

Task: one epoch of `ce` on digits (training + evaluation of the test split), with the same loaders (kdbench's
keyed in-memory batches), the same optimizer, the same per-step learning-rate schedule and the same random
draws, in one process. Both loops train the same weights, bit for bit on CPU (checked on the first repetition:
the benchmark stops if they differ), so a ratio compares the harness and nothing else.

Two hand-written loops:
- `bare`: what a KD codebase's own loop computes (RepDistiller's `train`/`validate`, mdistiller's trainer): the
  numbers the engine's epoch record holds, by hand — each step's loss read (the logged loss; what a divergence
  check reads), the training top-1 hits, and the test top-1, top-5 and loss. The target is on this one:
  engine/bare <= 1.02 for resnet18, cifar_resnet8 and gnn2.
- `minimal`: nothing but the steps and the test top-1 (no loss read, no training accuracy, no top-5 or test loss).
  engine/minimal is everything the engine costs beyond the bare arithmetic of training, its own metrics included.

Per student — resnet18, cifar_resnet8, gnn2, and `tiny` (one linear layer: almost nothing but harness) — a ratio
is the median over repetitions of each repetition's ratio; a repetition runs engine, bare, minimal, minimal,
bare, engine and averages the pairs, so that order and linear drift cancel. µs/step is the engine's extra cost
per training step over a loop (training parts only: the median of (engine − loop) / steps); for `tiny` it is
nearly all there is. It includes the engine's per-epoch costs spread over the epoch's steps (22 at the default
batch): reseeding the RNGs and the epoch's bookkeeping. One process carries a bias of its own (memory layout):
the same command run again moves gnn2's ratio by up to ±2 %, more than the repetitions inside one run do, so
`--processes N` runs it in N fresh processes and reports the median of each number over them.

    python benchmarks/engine_overhead.py [--reps 5] [--students resnet18,cifar_resnet8,gnn2,tiny] [--device cpu]
                                         [--processes 1]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.data import build_dataset, get_dataset_spec
from kdbench.data.loaders import make_eval_loader, make_train_loader
from kdbench.models import create_model
from kdbench.train.engine import Engine, EngineSettings, EpochRecord, epoch_seed
from kdbench.train.method import MethodContext, get_method
from kdbench.train.optim import build_optimizer
from kdbench.train.schedule import build_scheduler


def build_student(name: str, image_size: int) -> nn.Module:
    if name == "tiny":  # a near-empty model: what is left of an epoch is the harness's per-step cost
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, 10))
    return create_model(name, num_classes=10, image_size=image_size)


def bare_epoch(student: nn.Module, train_loader, eval_loader, recipe, device: torch.device, *,
               outputs: bool = True) -> tuple[float, dict[str, float]]:
    """One epoch by hand (no registry, records, progress, checkpoints). With `outputs` it computes what the
    engine's record holds: the mean training loss (read each step: `.item()` on CPU, where reading is free; kept
    on the device on a GPU, as the engine does), the training top-1, and the test top-1, top-5 and loss; without,
    only the test top-1. Returns the seconds of its training part and the numbers it computed."""
    t0 = time.perf_counter()
    optimizer, _ = build_optimizer(student, recipe)  # the engine's optimizer, over the bare student
    scheduler = build_scheduler(optimizer, recipe, len(train_loader), 0)
    train_loader.sampler.set_epoch(1)
    # The generator state the engine starts epoch 1 of seed 0 from: both loops draw the same dropout masks and
    # so do the same arithmetic (`check_same_work`).
    torch.default_generator.manual_seed(epoch_seed(0, 1))
    read_each_step = device.type != "cuda"
    loss_sum: float | torch.Tensor = 0.0
    train_correct = torch.zeros((), device=device)
    steps = seen = 0
    student.train()
    for images, labels, _ in train_loader:
        logits = student(images)
        loss = F.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if outputs:
            loss_sum += loss.item() if read_each_step else loss.detach()
            train_correct += (logits.detach().argmax(1) == labels).sum()
            steps, seen = steps + 1, seen + labels.numel()
    numbers = {"loss": float(loss_sum) / steps, "train_top1": 100.0 * float(train_correct) / seen} if outputs else {}
    _sync(device)
    train_s = time.perf_counter() - t0
    student.eval()
    correct1 = torch.zeros((), device=device)
    correct5, test_loss = torch.zeros((), device=device), torch.zeros((), device=device)
    count = 0
    with torch.no_grad():
        for images, labels, _ in eval_loader:
            logits = student(images)
            count += labels.numel()
            if outputs:
                test_loss += F.cross_entropy(logits, labels, reduction="sum")
                hits = logits.topk(5, dim=1).indices.eq(labels[:, None])
                correct1 += hits[:, 0].sum()
                correct5 += hits.any(dim=1).sum()
            else:
                correct1 += (logits.argmax(1) == labels).sum()
    numbers["top1"] = 100.0 * float(correct1) / count
    if outputs:
        numbers.update(top5=100.0 * float(correct5) / count, eval_loss=float(test_loss) / count)
    return train_s, numbers


def check_same_work(name: str, loop: str, engine: tuple[float, float, nn.Module, EpochRecord],
                    by_hand: tuple[float, float, nn.Module, dict[str, float]], device: torch.device) -> None:
    """Both loops must have trained the same weights and computed the same numbers, or the ratio compares
    different work. On CPU the weights after the epoch are equal bit for bit (same draws, same ops in the same
    order; `ce`'s product with w_ce = 1.0 changes no bit); on a GPU, kernels may be chosen per call, so only
    closeness is asked. The loop's numbers are the engine record's: accuracies exactly, losses to float32
    rounding (the engine sums in float32, the loop in float64)."""
    a, b = engine[2].state_dict(), by_hand[2].state_dict()
    same = all(torch.equal(a[k], b[k]) if device.type == "cpu" else torch.allclose(a[k].float(), b[k].float(),
                                                                                  rtol=1e-3, atol=1e-5)
               for k in a)
    record, numbers = engine[3], by_hand[3]
    ours = {"loss": record.losses["total"], "train_top1": record.train_top1, "top1": record.top1,
            "top5": record.top5, "eval_loss": record.eval_loss}
    differ = [k for k, v in numbers.items() if not math.isclose(v, ours[k], rel_tol=1e-5 if "loss" in k else 0)]
    if not same or differ:
        what = "weights" if not same else ", ".join(differ)
        raise SystemExit(f"{name}: the engine and the {loop} loop computed different {what}; the ratio would "
                         f"compare different work")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


LOOPS = ("engine", "bare", "minimal")


def measure(name: str, reps: int, image_size: int, device: torch.device) -> dict[str, list[float] | int]:
    """Per repetition and loop: seconds of the whole epoch (training + evaluation) and of training alone (the
    engine's own `epoch_s`), each the mean of two runs in the order engine, bare, minimal, minimal, bare, engine;
    repetition 0 warms up (and checks that the loops train the same weights and `bare` computes the engine
    record's numbers: `check_same_work`) and is not counted."""
    spec = get_method("ce")
    digits = get_dataset_spec("digits")
    data = build_dataset("digits", digits.params.__class__(image_size=image_size), augment=digits.recipe.augment)
    recipe = digits.recipe.replace(epochs=1, warmup_epochs=0)
    ctx = MethodContext(10, 3, image_size, len(data.train), data.train_targets, 1, 0)
    train_loader = make_train_loader(data.train, recipe.batch_size, 0, device)
    eval_loader = make_eval_loader(data.test, recipe.eval_batch_size, 0, device)

    def engine() -> tuple[float, float, nn.Module, EpochRecord]:
        torch.manual_seed(0)
        distiller = spec.cls(build_student(name, image_size), None, spec.params, ctx)
        _sync(device)
        t0 = time.perf_counter()
        fit = Engine(EngineSettings(device)).fit(distiller, train_loader, eval_loader, recipe, seed=0)
        _sync(device)
        return time.perf_counter() - t0, fit.last.epoch_s, distiller.student, fit.last

    def by_hand(outputs: bool) -> tuple[float, float, nn.Module, dict[str, float]]:
        torch.manual_seed(0)
        student = build_student(name, image_size).to(device)
        _sync(device)
        t0 = time.perf_counter()
        train_s, numbers = bare_epoch(student, train_loader, eval_loader, recipe, device, outputs=outputs)
        _sync(device)
        return time.perf_counter() - t0, train_s, student, numbers

    runs = {"engine": engine, "bare": lambda: by_hand(True), "minimal": lambda: by_hand(False)}
    out: dict[str, list[float] | int] = {f"{loop}{part}": [] for loop in LOOPS for part in ("", "_train")}
    out["steps"] = len(train_loader)
    for rep in range(reps + 1):
        # A palindrome: whichever runs second in a pair runs on the first one's leftovers (freed memory, caches),
        # and the machine drifts; the mirrored order cancels both to first order for every pair of loops.
        order = [*LOOPS, *reversed(LOOPS)]
        timed: dict[str, list[tuple[Any, ...]]] = {loop: [] for loop in LOOPS}
        for loop in order:
            timed[loop].append(runs[loop]())
        if rep == 0:
            for loop in LOOPS[1:]:
                check_same_work(name, loop, timed["engine"][0], timed[loop][0], device)
            print(f"  {name}: the engine and both loops trained the same weights and agree on their numbers",
                  flush=True)
            continue
        for loop, (first, second) in timed.items():
            out[loop].append((first[0] + second[0]) / 2)  # type: ignore[union-attr]
            out[f"{loop}_train"].append((first[1] + second[1]) / 2)  # type: ignore[union-attr]
        print(f"  {name} rep {rep}: " + "  ".join(f"{loop} {out[loop][-1]:.4f}s" for loop in LOOPS),  # type: ignore
              flush=True)
    return out


def ratios(runs: dict[str, list[float] | int], loop: str) -> tuple[float, float, float]:
    """engine/loop for the whole epoch and for training alone, and the engine's extra µs per training step. Each a
    median of the repetitions' own values: a shared machine's load changes between repetitions more than within
    one."""
    def median_of(f, a: str, b: str) -> float:
        return statistics.median(f(x, y) for x, y in zip(runs[a], runs[b], strict=True))  # type: ignore[arg-type]

    steps = runs["steps"]
    return (median_of(lambda e, b: e / b, "engine", loop),
            median_of(lambda e, b: e / b, "engine_train", f"{loop}_train"),
            median_of(lambda e, b: e - b, "engine_train", f"{loop}_train") / steps * 1e6)  # type: ignore[operator]


FIELDS = ("engine_s", "bare_s", "epoch", "training", "us_step", "min_epoch", "min_training", "min_us_step")


def one_process(students: list[str], reps: int, image_size: int, device: torch.device) -> list[dict[str, Any]]:
    rows = []
    for name in students:
        runs = measure(name, reps, image_size, device)
        numbers = (statistics.median(runs["engine"]), statistics.median(runs["bare"]),  # type: ignore[arg-type]
                   *ratios(runs, "bare"), *ratios(runs, "minimal"))
        rows.append({"student": name, **dict(zip(FIELDS, numbers, strict=True))})
    return rows


def in_processes(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the benchmark in `args.processes` fresh processes, one after the other; per student, the median of
    each number over them (and each process's epoch ratio, printed as it comes). A process's memory layout
    biases all its repetitions alike, so fresh processes are the samples that show the spread."""
    per_process = []
    for i in range(args.processes):
        command = [sys.executable, __file__, "--reps", str(args.reps), "--image-size", str(args.image_size),
                   "--students", args.students, "--device", args.device, "--json"]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        rows = json.loads(done.stdout.strip().splitlines()[-1])
        per_process.append(rows)
        print(f"process {i + 1}/{args.processes}: " + "  ".join(f"{r['student']} {r['epoch']:.3f}" for r in rows),
              flush=True)
    merged = []
    for j, row in enumerate(per_process[0]):
        merged.append({"student": row["student"], **{f: statistics.median(p[j][f] for p in per_process)
                                                      for f in FIELDS},
                       "epoch_range": (min(p[j]["epoch"] for p in per_process),
                                       max(p[j]["epoch"] for p in per_process))})
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--students", default="resnet18,cifar_resnet8,gnn2,tiny")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", type=int, default=1,
                        help="fresh processes to run it in; the table holds the medians over them")
    parser.add_argument("--json", action="store_true", help="print the rows as one JSON line (for --processes)")
    args = parser.parse_args()
    if args.processes > 1:
        rows = in_processes(args)
    else:
        rows = one_process(args.students.split(","), args.reps, args.image_size, torch.device(args.device))
        if args.json:
            print(json.dumps(rows))
            return
    spread = f", median over {args.processes} processes" if args.processes > 1 else ""
    print(f"\nce on digits, 1 epoch + evaluation, {args.device}, torch threads {torch.get_num_threads()}, "
          f"median of {args.reps} repetitions{spread}")
    print(f"{'':<14} {'':>9} {'':>9} {'---------- vs bare ----------':>30}  {'-------- vs minimal ---------':>30}")
    print(f"{'student':<14} {'engine s':>9} {'bare s':>9} {'epoch':>8} {'training':>9} {'µs/step':>9}  "
          f"{'epoch':>8} {'training':>9} {'µs/step':>9}" + ("  epoch over processes" if spread else ""))
    for r in rows:
        line = (f"{r['student']:<14} {r['engine_s']:>9.4f} {r['bare_s']:>9.4f} {r['epoch']:>8.3f} "
                f"{r['training']:>9.3f} {r['us_step']:>9.0f}  {r['min_epoch']:>8.3f} {r['min_training']:>9.3f} "
                f"{r['min_us_step']:>9.0f}")
        if spread:
            line += f"  {r['epoch_range'][0]:.3f}–{r['epoch_range'][1]:.3f}"
        print(line)
    print("target: engine/bare (epoch) <= 1.02 for resnet18, cifar_resnet8, gnn2")


if __name__ == "__main__":
    main()
