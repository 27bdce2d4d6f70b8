"""Figures from run records (matplotlib, Agg backend: no display needed on a cluster node).

- accuracy vs inference time per image (log x), one point per model / method, error bars = std over seeds, one
  figure per dataset · recipe (times are only comparable within one device, which the title states);
- training curves: test top-1 and training loss per epoch, read from each run's `metrics.jsonl`.
"""

from __future__ import annotations

import hashlib
import math
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from kdbench.core.errors import UserError
from kdbench.report.leaderboard import METRICS, is_missing, ladder_table, pair_label, prepare_runs
from kdbench.store.records import RunStore, UnreadableHistory

FORMATS = ("png", "pdf")


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: headless, deterministic
    import matplotlib.pyplot as plt

    return plt


def _slug(text: str, max_len: int = 80) -> str:
    """A file-name-safe stem; long labels (many differing recipe fields) are cut and keep a short hash of the
    whole label, so names stay unique and under the file-system limit."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "plot"
    if len(slug) > max_len:
        slug = f"{slug[:max_len].rstrip('-')}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"
    return slug


def _save(fig: Any, out_dir: Path, stem: str, formats: Sequence[str]) -> list[Path]:
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise UserError(f"unknown plot format '{bad[0]}'. Valid: {', '.join(FORMATS)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        path = out_dir / f"{stem}.{fmt}"
        fig.savefig(path, bbox_inches="tight", dpi=150)
        paths.append(path)
    return paths


def accuracy_vs_time(
    runs: pd.DataFrame, out_dir: str | Path, metric: str = "top1_last", formats: Sequence[str] = FORMATS
) -> list[Path]:
    """One figure per dataset · recipe name: mean `metric` against inference time per image (log scale), one point
    per model and method, error bars = std over seeds. Returns the files written (none without completed runs)."""
    if metric not in METRICS:
        raise UserError(f"unknown metric '{metric}'. Valid: {', '.join(METRICS)}")
    df = prepare_runs(runs)
    methods = sorted({str(m) for m in df["method"] if not is_missing(m)})
    data = ladder_table(df, metric, distilled=methods).data
    data = data[~data["infer_ms_per_image"].map(is_missing).astype(bool)]
    plt = _pyplot()
    written: list[Path] = []
    # One figure per dataset · recipe *name*: the light students' scaled lr (a recipe variant) must not split
    # the GNN from the CNNs it is compared with; the tables keep the variants apart.
    data = data.assign(recipe_name=data["recipe"].astype(str).str.split(" [", regex=False).str[0])
    for (dataset, recipe), g in data.groupby(["dataset", "recipe_name"], sort=True):
        fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
        for trained, h in g.groupby("trained", sort=True):
            yerr = [0.0 if is_missing(s) else s for s in h["std"]]
            ax.errorbar(h["infer_ms_per_image"], h["mean"], yerr=yerr, fmt="o" if trained == "alone (ce)" else "*",
                        markersize=7 if trained == "alone (ce)" else 11, capsize=3, label=trained)
            for x, y, model in zip(h["infer_ms_per_image"], h["mean"], h["model"], strict=True):
                ax.annotate(model, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set_xscale("log")
        devices = sorted({str(d) for d in g["infer_device"] if not is_missing(d)})
        batches = sorted({int(b) for b in g["infer_batch_size"] if not is_missing(b)})
        ax.set_xlabel(f"inference time per image (ms, batch {'/'.join(map(str, batches)) or '?'}, "
                      f"{'/'.join(devices) or '?'})")
        ax.set_ylabel(f"{metric} (%)")
        ax.set_title(f"{dataset} · {recipe}: accuracy vs inference time")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, title="trained", title_fontsize=8)
        written += _save(fig, Path(out_dir), _slug(f"accuracy_vs_time_{dataset}_{recipe}"), formats)
        plt.close(fig)
    return written


def select_runs(runs: pd.DataFrame, ids: Sequence[str]) -> pd.DataFrame:
    """The runs whose id starts with each of `ids` (a unique prefix is enough, as with git)."""
    picked = []
    for rid in ids:
        hits = runs[runs["run_id"].astype(str).str.startswith(rid)]
        if len(hits) == 0:
            raise UserError(f"no run with id '{rid}' (see `kdbench leaderboard --table runs`)")
        if len(hits) > 1:
            raise UserError(f"run id prefix '{rid}' is ambiguous: {', '.join(hits['run_id'].head(5))}")
        picked.append(hits)
    return pd.concat(picked).drop_duplicates("run_id") if picked else runs.iloc[:0]


def read_history(results_dir: str | Path | None, run_id: str, *, strict: bool = False) -> list[dict[str, Any]]:
    """A run's per-epoch records (`metrics.jsonl`); [] when the run has none yet. A file that cannot be read (a
    line that is not an epoch's record, a link out of the results folder) is a warning line and [] — with
    `strict`, a UserError."""
    try:
        return RunStore(results_dir).read_history(run_id)
    except UnreadableHistory as e:
        if strict:
            raise UserError(f"{e} (fix or delete it, or drop --strict)") from None
        print(f"warning: {e}; its curve is skipped", file=sys.stderr)
        return []


def training_curves(
    runs: pd.DataFrame, results_dir: str | Path | None, out_dir: str | Path, formats: Sequence[str] = FORMATS,
    stem: str = "training_curves", *, strict: bool = False,
) -> list[Path]:
    """Test top-1 and training loss per epoch of every run in `runs` (its `metrics.jsonl`), one line per run; a
    run whose file cannot be read is left out with a warning line (`strict`: a UserError, see read_history)."""
    curves = [(r, read_history(results_dir, r["run_id"], strict=strict)) for r in runs.to_dict("records")]
    curves = [(r, h) for r, h in curves if h]
    if not curves:
        return []
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, (acc_ax, loss_ax) = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    for r, history in curves:
        epochs = [e["epoch"] for e in history]
        label = f"{r['method']} {pair_label(r.get('teacher'), r.get('student'))} s{r.get('seed')} ({r['run_id'][:8]})"
        (line,) = acc_ax.plot(epochs, [e["top1"] for e in history], marker=".", label=label)
        losses = [(e.get("losses") or {}).get("total", math.nan) for e in history]
        loss_ax.plot(epochs, losses, marker=".", color=line.get_color(), label=label)
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("test top-1 (%)")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss (total)")
    if all(v > 0 for line in loss_ax.get_lines() for v in line.get_ydata() if not math.isnan(v)):
        loss_ax.set_yscale("log")  # losses span decades; a method whose loss can go negative keeps a linear axis
    for ax in (acc_ax, loss_ax):
        ax.grid(True, alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    acc_ax.legend(fontsize=7)
    fig.suptitle("training curves")
    written = _save(fig, Path(out_dir), stem, formats)
    plt.close(fig)
    return written
