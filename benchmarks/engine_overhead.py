"""Engine overhead: kdbench's engine vs a plain hand-written PyTorch loop doing the same work.

Task: one epoch of `kd` (resnet50 → resnet18) on digits, training + evaluation of the test split, same data
pipeline, same optimizer, in one process. Repetitions alternate engine / plain so that machine noise hits
both alike; the ratio of medians is printed. Target: ≤ 1.05.

    python benchmarks/engine_overhead.py [--reps 5] [--image-size 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from kdbench.data import build_dataset, get_dataset_spec
from kdbench.data.loaders import make_eval_loader, make_train_loader
from kdbench.engine import Engine, EngineSettings
from kdbench.method import MethodContext, get_method
from kdbench.methods.kd import kd_loss
from kdbench.models import create_model
from kdbench.schedule import build_optimizer


def plain_epoch(student, teacher, train_loader, eval_loader, recipe, params) -> None:
    """What a researcher would write by hand: no registry, no records, no progress, no divergence check."""
    optimizer = build_optimizer(student.parameters(), recipe)
    student.train()
    for images, labels, _ in train_loader:
        logits = student(images)
        with torch.no_grad():
            t_logits = teacher(images)
        ce = F.cross_entropy(logits, labels)
        loss = params.w_ce * ce + params.w_kd * kd_loss(logits, t_logits, params.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    student.eval()
    with torch.no_grad():
        correct = 0
        for images, labels, _ in eval_loader:
            correct += (student(images).argmax(1) == labels).sum().item()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--image-size", type=int, default=16)
    args = parser.parse_args()

    spec = get_method("kd")
    digits = get_dataset_spec("digits")
    ds_params = digits.params.__class__(image_size=args.image_size)
    data = build_dataset("digits", ds_params, augment="crop-pad2")
    recipe = digits.recipe.replace(epochs=1, warmup_epochs=0)
    device = torch.device("cpu")
    ctx = MethodContext(10, 3, args.image_size, len(data.train), data.train_targets, 1, 0)
    teacher = create_model("resnet50", num_classes=10).eval().requires_grad_(False)
    train_loader = make_train_loader(data.train, recipe.batch_size, 0, device)
    eval_loader = make_eval_loader(data.test, recipe.eval_batch_size, 0, device)

    engine_times, plain_times = [], []
    for rep in range(args.reps + 1):  # the first round warms up allocators and thread pools; not counted
        torch.manual_seed(0)
        distiller = spec.cls(create_model("resnet18", num_classes=10), teacher, spec.params, ctx)
        t0 = time.perf_counter()
        Engine(EngineSettings(device)).fit(distiller, train_loader, eval_loader, recipe, seed=0)
        t_engine = time.perf_counter() - t0

        torch.manual_seed(0)
        student = create_model("resnet18", num_classes=10)
        t0 = time.perf_counter()
        plain_epoch(student, teacher, train_loader, eval_loader, recipe, spec.params)
        t_plain = time.perf_counter() - t0
        if rep > 0:
            engine_times.append(t_engine)
            plain_times.append(t_plain)
        print(f"rep {rep}: engine {t_engine:.2f}s  plain {t_plain:.2f}s{'  (warm-up)' if rep == 0 else ''}")

    e, p = statistics.median(engine_times), statistics.median(plain_times)
    print(f"median epoch: engine {e:.2f}s, plain loop {p:.2f}s -> ratio {e / p:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
