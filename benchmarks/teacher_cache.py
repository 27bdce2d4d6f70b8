"""What the teacher-output cache saves: per-epoch training time of a KD run from a ResNet-152 teacher on digits,
and the teacher forwards a sweep of kd, dkd, pkt and at pays.

    OMP_NUM_THREADS=1 python benchmarks/teacher_cache.py [--epochs 2] [--teacher-ckpt FILE] [--student resnet18]
    OMP_NUM_THREADS=1 python benchmarks/teacher_cache.py --sweep [--epochs 1] [--methods kd,dkd,pkt,at]

`--sweep`: the methods run in turn on one teacher and seed from a cold cache, each counted by
:class:`TeacherForwards` (every call of the frozen teacher on a batch: a real forward, hooked, not the cache's
own counters); the table gives per run the teacher calls and images, and the cache's hits and misses. A run that
reads every batch still makes one 2-image call (the probe that checks the stored entries against the shapes its
teacher gives). torchdistill, which has no such cache, pays the teacher in every run.

Four runs in one process, each from scratch with the dataset's recipe (batch 64, crop-pad2), on CPU:
(a) ce, (b) kd without the cache, (c) kd filling an empty cache, (d) kd reading it (another temperature: a
sweep's second KD variant); ce runs first and again last (a different seed, so that it trains again) and (a) is
the mean of the two, so that neither a cold start nor a drift of the shared machine favours one side. Reports
the mean per-epoch training time of each (the record's `epoch_s_mean`, evaluation excluded) and the ratios
(d)/(a) and (b)/(a). The teacher is `--teacher-ckpt` when given, else the newest digits ResNet-152 in the teacher
zoo ($KDBENCH_ZOO), else an untrained ResNet-152 (the same forward cost: fine for timing; the table says which).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

from kdbench.execute.api import run


def zoo_teacher() -> Path | None:
    from kdbench.teachers.zoo import default_zoo_dir

    found = sorted((default_zoo_dir() / "digits" / "resnet152").glob("*/model.safetensors"),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def untrained_teacher(folder: Path) -> Path:
    from safetensors.torch import save_file

    from kdbench.models.zoo import create_model

    torch.manual_seed(0)
    model = create_model("resnet152", num_classes=10, in_chans=3)
    path = folder / "resnet152-untrained.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


SWEEP = ("kd", "dkd", "pkt", "at")


class TeacherForwards:
    """Counts the calls of a frozen model (every parameter with requires_grad False: the Distiller's teacher,
    never a trained student) made outside any other module's call, and the images they carry, while active.
    `batches` are the calls on more than PROBE images; `probes` the others (the cache's check of its entries, a
    method sizing its modules on two blank images: kdbench.models.features.stage_shapes).

    >>> with TeacherForwards() as counted:
    ...     run("kd", ...)
    >>> counted.batches, counted.images
    """

    PROBE = 2

    def __init__(self) -> None:
        self.batches = 0
        self.probes = 0
        self.images = 0
        self._depth = 0

    def _enter(self, module: torch.nn.Module, inputs: tuple) -> None:
        if self._depth == 0 and _frozen(module) and inputs and isinstance(inputs[0], torch.Tensor):
            n = inputs[0].shape[0]
            self.images += n
            if n > self.PROBE:
                self.batches += 1
            else:
                self.probes += 1
        self._depth += 1

    def _leave(self, module: torch.nn.Module, inputs: tuple, output: Any) -> None:
        self._depth -= 1

    def __enter__(self) -> TeacherForwards:
        self._handles = [register_module_forward_pre_hook(self._enter), register_module_forward_hook(self._leave)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()


def _frozen(module: torch.nn.Module) -> bool:
    params = list(module.parameters())
    return bool(params) and not any(p.requires_grad for p in params)


def sweep_forwards(results: Path, methods: Sequence[str] = SWEEP, **common: Any) -> list[dict[str, Any]]:
    """Run `methods` in turn with the same `common` run options (one teacher, seed and cache folder); per run the
    method, its record and its :class:`TeacherForwards`."""
    rows = []
    for method in methods:
        with TeacherForwards() as counted:
            record = run(method, results_dir=results / method, **common)
        rows.append({"method": method, "record": record, "batches": counted.batches, "probes": counted.probes,
                     "images": counted.images})
    return rows


def print_sweep(rows: list[dict[str, Any]]) -> None:
    print("| run | teacher forwards: batches + 2-image probes | teacher images | cache hits / misses (batches) "
          "| s / epoch |")
    print("|---|---:|---:|---|---:|")
    for r in rows:
        tc = r["record"].get("teacher_cache") or {}
        cache = f"{tc['hits']} / {tc['misses']}" if tc.get("mode") == "on" else "—"
        print(f"| {r['method']} | {r['batches']} + {r['probes']} | {r['images']} | {cache} | "
              f"{r['record']['timing']['epoch_s_mean']:.2f} |")
    paid = sum(1 for r in rows if r["batches"])
    print(f"\nruns that paid the teacher's forward on the training batches: {paid} of {len(rows)}")


def sweep_main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ckpt = args.teacher_ckpt or zoo_teacher()
        which = f"trained ({ckpt})" if ckpt else "untrained (random weights; counting only)"
        ckpt = ckpt or untrained_teacher(tmp_path)
        rows = sweep_forwards(tmp_path / "results", args.methods.split(","), teacher="resnet152",
                              teacher_ckpt=str(ckpt), student=args.student, dataset="digits", epochs=args.epochs,
                              device="cpu", cache_dir=tmp_path / "cache", zoo_dir=tmp_path / "zoo")
    print(f"digits, {args.student} student, ResNet-152 teacher {which}, {args.epochs} epoch(s), cold cache, "
          f"{torch.get_num_threads()} torch thread(s)\n")
    print_sweep(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--student", default="resnet18")
    ap.add_argument("--teacher-ckpt", type=Path, default=None)
    ap.add_argument("--sweep", action="store_true", help="count the teacher forwards of a sweep instead of timing")
    ap.add_argument("--methods", default=",".join(SWEEP), help="the sweep's methods, in order")
    args = ap.parse_args()
    if args.sweep:
        return sweep_main(args)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ckpt = args.teacher_ckpt or zoo_teacher()
        which = f"trained ({ckpt})" if ckpt else "untrained (random weights; timing only)"
        ckpt = ckpt or untrained_teacher(tmp_path)
        common = dict(student=args.student, dataset="digits", epochs=args.epochs, device="cpu",
                      cache_dir=tmp_path / "cache", zoo_dir=tmp_path / "zoo")
        kd = dict(teacher="resnet152", teacher_ckpt=str(ckpt), **common)
        rows = {
            "(a) ce, first": run("ce", results_dir=tmp_path / "a", **common),
            "(b) kd, no cache": run("kd", results_dir=tmp_path / "b", teacher_cache="off", **kd),
            "(c) kd, filling the cache": run("kd", results_dir=tmp_path / "c", **kd),
            "(d) kd, reading it (T=2)": run("kd", results_dir=tmp_path / "d", sets=["kd.temperature=2"], **kd),
        }
        rows["(a) ce, last"] = run("ce", results_dir=tmp_path / "a2", seed=1, **common)
    epoch_s = {name: r["timing"]["epoch_s_mean"] for name, r in rows.items()}
    base = (epoch_s["(a) ce, first"] + epoch_s["(a) ce, last"]) / 2
    print(f"digits, {args.student} student, ResNet-152 teacher {which}, {args.epochs} epochs, "
          f"{torch.get_num_threads()} torch thread(s)\n")
    print("| run | s / epoch | × (a) | cache hits / misses |")
    print("|---|---:|---:|---|")
    for name, r in rows.items():
        tc = r.get("teacher_cache") or {}
        cache = f"{tc['hits']} / {tc['misses']}" if tc.get("mode") == "on" else "—"
        print(f"| {name} | {epoch_s[name]:.2f} | {epoch_s[name] / base:.2f} | {cache} |")
    d, b = epoch_s["(d) kd, reading it (T=2)"] / base, epoch_s["(b) kd, no cache"] / base
    print(f"\n(d)/(a) = {d:.2f} (target ≤ 1.15); (b)/(a) = {b:.2f}")
    same = rows["(b) kd, no cache"]["metrics"]["top1_last"] == rows["(c) kd, filling the cache"]["metrics"]["top1_last"]
    print(f"kd with and without the cache: the same top-1 ({'yes' if same else 'NO'})")


if __name__ == "__main__":
    main()
