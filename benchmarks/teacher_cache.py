"""What the teacher-output cache saves: per-epoch training time of a KD run from a ResNet-152 teacher on digits.

    OMP_NUM_THREADS=1 python benchmarks/teacher_cache.py [--epochs 2] [--teacher-ckpt FILE] [--student resnet18]

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
from pathlib import Path

import torch

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--student", default="resnet18")
    ap.add_argument("--teacher-ckpt", type=Path, default=None)
    args = ap.parse_args()
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
