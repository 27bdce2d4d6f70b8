"""Engine overhead: kdbench's engine vs a hand-written PyTorch loop doing the same work, per student.

Task: one epoch of `ce` on digits (training + evaluation of the test split), with the same loaders (kdbench's
keyed in-memory batches), the same optimizer and the same per-step learning-rate schedule, in one process. For
each student — resnet18, cifar_resnet8, gnn2, and `tiny` (one linear layer: almost nothing but harness) — the
printed engine/bare is the median over repetitions of each one's ratio (a repetition runs engine, bare, bare,
engine and averages the pairs, so that order and drift cancel). Target: engine/bare <= 1.02 on resnet18,
cifar_resnet8 and gnn2. µs/step is the engine's extra cost per training step
(training parts only: the median of (engine − bare) / steps); for `tiny` it is nearly all there is. It includes
the engine's per-epoch costs spread over the epoch's steps (22 at the default batch): reseeding the RNGs
(`torch.manual_seed` alone takes ~0.13 ms here, ~6 µs a step) and the epoch's bookkeeping.

    python benchmarks/engine_overhead.py [--reps 5] [--students resnet18,cifar_resnet8,gnn2,tiny] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from kdbench.data import build_dataset, get_dataset_spec
from kdbench.data.loaders import make_eval_loader, make_train_loader
from kdbench.models import create_model
from kdbench.train.engine import Engine, EngineSettings
from kdbench.train.method import MethodContext, get_method
from kdbench.train.optim import build_optimizer
from kdbench.train.schedule import build_scheduler


def build_student(name: str, image_size: int) -> nn.Module:
    if name == "tiny":  # a near-empty model: what is left of an epoch is the harness's per-step cost
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * image_size * image_size, 10))
    return create_model(name, num_classes=10, image_size=image_size)


def bare_epoch(student, train_loader, eval_loader, recipe, device) -> float:
    """What a researcher would write by hand: no registry, no records, no progress, no divergence check.
    Returns the seconds of its training part."""
    t0 = time.perf_counter()
    optimizer, _ = build_optimizer(student, recipe)  # the engine's optimizer, over the bare student
    scheduler = build_scheduler(optimizer, recipe, len(train_loader), 0)
    train_loader.sampler.set_epoch(1)
    student.train()
    for images, labels, _ in train_loader:
        loss = F.cross_entropy(student(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    _sync(device)
    train_s = time.perf_counter() - t0
    student.eval()
    correct = torch.zeros((), device=device)
    with torch.no_grad():
        for images, labels, _ in eval_loader:
            correct += (student(images).argmax(1) == labels).sum()
    float(correct)
    return train_s


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(name: str, reps: int, image_size: int, device: torch.device) -> dict[str, list[float] | int]:
    """Per repetition: engine and bare seconds for the whole epoch (training + evaluation) and for training alone
    (the engine's own `epoch_s`), each the mean of two runs in the order engine, bare, bare, engine; repetition 0
    warms up and is not counted."""
    spec = get_method("ce")
    digits = get_dataset_spec("digits")
    data = build_dataset("digits", digits.params.__class__(image_size=image_size), augment=digits.recipe.augment)
    recipe = digits.recipe.replace(epochs=1, warmup_epochs=0)
    ctx = MethodContext(10, 3, image_size, len(data.train), data.train_targets, 1, 0)
    train_loader = make_train_loader(data.train, recipe.batch_size, 0, device)
    eval_loader = make_eval_loader(data.test, recipe.eval_batch_size, 0, device)

    def engine() -> tuple[float, float]:
        torch.manual_seed(0)
        distiller = spec.cls(build_student(name, image_size), None, spec.params, ctx)
        _sync(device)
        t0 = time.perf_counter()
        fit = Engine(EngineSettings(device)).fit(distiller, train_loader, eval_loader, recipe, seed=0)
        _sync(device)
        return time.perf_counter() - t0, fit.last.epoch_s

    def bare() -> tuple[float, float]:
        torch.manual_seed(0)
        student = build_student(name, image_size).to(device)
        _sync(device)
        t0 = time.perf_counter()
        train_s = bare_epoch(student, train_loader, eval_loader, recipe, device)
        _sync(device)
        return time.perf_counter() - t0, train_s

    out: dict[str, list[float] | int] = {"engine": [], "bare": [], "engine_train": [], "bare_train": [],
                                         "steps": len(train_loader)}
    for rep in range(reps + 1):
        # engine, bare, bare, engine: whichever runs second in a pair runs on the first one's leftovers (freed
        # memory, caches), and the machine drifts; the ABBA order cancels both to first order.
        e1, b1, b2, e2 = engine(), bare(), bare(), engine()
        e, e_train = (e1[0] + e2[0]) / 2, (e1[1] + e2[1]) / 2
        b, b_train = (b1[0] + b2[0]) / 2, (b1[1] + b2[1]) / 2
        if rep > 0:
            for key, value in (("engine", e), ("bare", b), ("engine_train", e_train), ("bare_train", b_train)):
                out[key].append(value)  # type: ignore[union-attr]
        print(f"  {name} rep {rep}: engine {e:.3f}s  bare {b:.3f}s{'  (warm-up)' if rep == 0 else ''}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--students", default="resnet18,cifar_resnet8,gnn2,tiny")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for name in args.students.split(","):
        runs = measure(name, args.reps, args.image_size, device)
        m = {k: v if isinstance(v, int) else statistics.median(v) for k, v in runs.items()}
        # The ratio is the median of each repetition's own ratio: a shared machine's load changes between
        # repetitions more than within one.
        ratio = statistics.median(e / b for e, b in zip(runs["engine"], runs["bare"], strict=True))  # type: ignore
        per_step = statistics.median(e - b for e, b in zip(runs["engine_train"], runs["bare_train"],  # type: ignore
                                                             strict=True)) / m["steps"] * 1e6
        rows.append((name, m["engine"], m["bare"], ratio, per_step))
    print(f"\nce on digits, 1 epoch + evaluation, {device}, torch threads {torch.get_num_threads()}, "
          f"median of {args.reps}")
    print(f"{'student':<14} {'engine s':>9} {'bare s':>9} {'engine/bare':>11} {'µs/step':>8}")
    for name, e, b, ratio, per_step in rows:
        print(f"{name:<14} {e:>9.3f} {b:>9.3f} {ratio:>11.3f} {per_step:>8.0f}")
    print("target: engine/bare <= 1.02 for resnet18, cifar_resnet8, gnn2")


if __name__ == "__main__":
    main()
