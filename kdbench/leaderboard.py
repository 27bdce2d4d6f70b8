"""Leaderboards: pure functions from the runs DataFrame (`kdbench.results.load_runs`) to paper-like tables.

Tables (the kinds of comparison the CNN2GNN paper makes):
- `methods`: rows = teacher, student alone (`ce`), each KD method; columns = dataset · teacher → student · recipe;
  cells = mean ± std over seeds (seed count), best student per column marked.
- `ladder`: the models of the depth ladder trained alone (`ce`) and the distilled GNN side by side: layers,
  parameters, accuracy, inference time per image at a stated batch size, training time.
- `runs`: one row per run record, whatever its status.
- `ablation`: one method's hyperparameter variants (e.g. CNN2GNN's k and graph mode) beside the student alone.

Rules every table keeps, because they are where published comparisons go wrong:
- only completed runs are averaged; failed, diverged and running ones are counted in the footer;
- runs that differ in anything but their seeds never share a cell: recipe (all its fields, not just its name),
  data parameters, teacher source and numerics (AMP, channels_last) split columns; method and student
  hyperparameters split rows, labelled by the values that differ;
- the footer says which metric is shown (last-epoch as in the CRD tables, best-epoch as in the DKD tables).
"""

from __future__ import annotations

import html
import io
import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from .errors import UserError, unknown_name

TABLES = ("methods", "ladder", "runs", "ablation")
METRICS = ("top1_last", "top1_best", "top5_last", "top5_best")
FORMATS = ("rich", "markdown", "csv", "latex", "html")
SUFFIX_FORMATS = {".md": "markdown", ".markdown": "markdown", ".csv": "csv", ".tex": "latex", ".html": "html",
                  ".htm": "html", ".txt": "rich"}
# The teacher's own accuracy, as the run record's teacher_metrics (flattened with a `teacher_` prefix) holds it.
TEACHER_METRIC = {"top1_last": "teacher_top1", "top1_best": "teacher_top1_best", "top5_last": "teacher_top5",
                  "top5_best": "teacher_top5_best"}
METRIC_WORDS = {
    "top1_last": "top-1 (%) at the last epoch (as the CRD tables report)",
    "top1_best": "top-1 (%) at the best epoch (as the DKD tables report)",
    "top5_last": "top-5 (%) at the last epoch",
    "top5_best": "top-5 (%) at the best epoch",
}
# Paper-like row order; methods not listed follow alphabetically.
METHOD_ORDER = ("teacher", "ce", "kd", "fitnet", "at", "sp", "pkt", "rkd", "crd", "crd+kd", "crd_kd", "dkd", "hkd",
                "hkd+kd", "hkd_kd", "cnn2gnn")
TEACHER_ROW = "teacher"
FEWER_SEEDS = "†"
EXCLUDED_STATUSES = ("failed", "diverged", "running")
# Columns that load_runs may not provide (older records); filled with None so every table still builds.
OPTIONAL_COLUMNS = (
    "teacher", "recipe", "seed", "method_params", "student_params", "data_params", "recipe_params",
    "teacher_recipe_params", "teacher_params", "teacher_ckpt_sha256", "teacher_seed", "amp", "channels_last",
    "teacher_sha256", "timing.train_s", "inference.s_per_image", "inference.batch_size", "inference.device",
    "student_info.params", "student_info.layers", "best_epoch", "epochs", "finished_at", *METRICS,
    *TEACHER_METRIC.values(),
)
DECIMALS = 2


@dataclass
class Leaderboard:
    """One rendered-to-be table: display cells, the numbers behind them, the marked cells and the footer."""

    kind: str
    title: str
    table: pd.DataFrame  # display strings; the index (when named) is the row label column
    data: pd.DataFrame  # tidy numbers behind the cells (what CSV writes)
    footer: list[str] = field(default_factory=list)
    bold: set[tuple[str, str]] = field(default_factory=set)  # (row label, column label) of the best cells

    def render(self, fmt: str = "markdown") -> str:
        return render(self, fmt)


# ---------------------------------------------------------------------------------------------------------
# Public entry points


def leaderboard(
    runs: pd.DataFrame | str | Path | None = None,
    table: str = "methods",
    metric: str = "top1_last",
    where: str | None = None,
    *,
    distilled: Sequence[str] = ("cnn2gnn",),
    method: str = "cnn2gnn",
) -> pd.DataFrame:
    """A leaderboard as a DataFrame of display cells (`df.attrs` holds title, footer and best cells).

    `runs` is the DataFrame of `kdbench.load_runs()` or a results folder (default ./results or
    $KDBENCH_RESULTS). `where` filters runs first (`"method=kd,dataset=digits"`). For the numbers behind the
    cells, or to render markdown / LaTeX / HTML / CSV, use :func:`build` and :func:`render`.

    >>> import kdbench
    >>> kdbench.leaderboard("results", table="methods", metric="top1_best")
    """
    board = build(runs, table, metric, where, distilled=distilled, method=method)
    out = board.table.copy()
    out.attrs = {"title": board.title, "footer": list(board.footer), "best": sorted(board.bold)}
    return out


def build(
    runs: pd.DataFrame | str | Path | None = None,
    table: str = "methods",
    metric: str = "top1_last",
    where: str | None = None,
    *,
    distilled: Sequence[str] = ("cnn2gnn",),
    method: str = "cnn2gnn",
) -> Leaderboard:
    """Build one table from the runs DataFrame (or a results folder); see the module docstring."""
    if table not in TABLES:
        raise unknown_name("table", table, TABLES)
    if metric not in METRICS:
        raise unknown_name("metric", metric, METRICS)
    # An ablation compares evaluation batch sizes (CNN2GNN's batch graph depends on them) as rows, not columns.
    row_fields = ("eval_batch_size",) if table == "ablation" else ()
    df = filter_runs(prepare_runs(_as_runs(runs), row_recipe_fields=row_fields), where)
    if table == "methods":
        return methods_table(df, metric)
    if table == "ladder":
        return ladder_table(df, metric, distilled)
    if table == "runs":
        return runs_table(df)
    return ablation_table(df, metric, method)


def _as_runs(runs: pd.DataFrame | str | Path | None) -> pd.DataFrame:
    if isinstance(runs, pd.DataFrame):
        return runs
    from .results import load_runs

    return load_runs(runs)


# ---------------------------------------------------------------------------------------------------------
# Preparing and filtering runs


def is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # dicts, lists
        return False


def _clean(value: Any) -> Any:
    return None if is_missing(value) else value


def _canon(value: Any) -> str:
    return json.dumps(_clean(value), sort_keys=True, default=str)


def pair_label(teacher: Any, student: Any) -> str:
    """"resnet152 → gnn2" for a distilled run; just the student for one trained alone."""
    return str(student) if is_missing(teacher) else f"{teacher} → {student}"


def prepare_runs(runs: pd.DataFrame, row_recipe_fields: Sequence[str] = ()) -> pd.DataFrame:
    """The runs with every column a table reads (missing ones as None) plus derived ones: `pair`, the
    setting keys that decide which runs may share a cell, and `variant` (hyperparameters as a dict).

    `row_recipe_fields` moves those recipe fields from the column setting to the row variant (`recipe.KEY`)."""
    df = runs.copy().reset_index(drop=True)
    for col in ("run_id", "status", "method", "student", "dataset", *OPTIONAL_COLUMNS):
        if col not in df.columns:
            df[col] = None
    df = df.astype({c: object for c in df.columns})
    df["pair"] = [pair_label(t, s) for t, s in zip(df["teacher"], df["student"], strict=True)]
    records = df.to_dict("records")
    settings = [_setting(r) for r in records]
    variants = [_variant(r) for r in records]
    for s, v in zip(settings, variants, strict=True):
        for key in row_recipe_fields:
            if key in s["recipe"]:
                v[f"recipe.{key}"] = s["recipe"].pop(key)
    df["_setting"] = settings
    # Which runs may share a cell: everything that changes numbers except the seeds.
    df["_student_key"] = [
        _canon([r["dataset"], r["student"], s["data"], s["recipe"], s["amp"], s["channels_last"]])
        for r, s in zip(df.to_dict("records"), settings, strict=True)
    ]
    df["_col_key"] = [
        _canon([sk, r["teacher"], s["teacher_recipe"], s["teacher_ckpt"], s["teacher_params"]])
        for sk, r, s in zip(df["_student_key"], df.to_dict("records"), settings, strict=True)
    ]
    df["variant"] = variants
    df["_row_key"] = [_canon([m, v]) for m, v in zip(df["method"], df["variant"], strict=True)]
    return df


def _setting(r: dict[str, Any]) -> dict[str, Any]:
    recipe = dict(_clean(r.get("recipe_params")) or {"name": _clean(r.get("recipe"))})  # a copy: may be edited
    return {
        "data": _clean(r.get("data_params")) or {},
        "recipe": recipe,
        "teacher_recipe": _clean(r.get("teacher_recipe_params")),
        "teacher_ckpt": _clean(r.get("teacher_ckpt_sha256")),
        "teacher_params": _clean(r.get("teacher_params")) or {},
        "amp": bool(_clean(r.get("amp")) or False),
        "channels_last": bool(_clean(r.get("channels_last")) or False),
    }


def _variant(r: dict[str, Any]) -> dict[str, Any]:
    out = dict(_clean(r.get("method_params")) or {})
    out.update({f"student.{k}": v for k, v in (_clean(r.get("student_params")) or {}).items()})
    return out


def parse_where(text: str | None) -> list[tuple[str, bool, list[str]]]:
    """`"method=kd|crd,dataset!=fake"` → [(column, equal?, values)]; comma = AND, `|` = OR within a column."""
    out = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        m = re.fullmatch(r"([^=!]+?)\s*(!=|=)\s*(.*)", part)
        if not m:
            raise UserError(f"--where expects COLUMN=VALUE[,COLUMN=VALUE…] (e.g. method=kd,dataset=digits), "
                            f"got '{part}'")
        out.append((m.group(1).strip(), m.group(2) == "=", [v.strip() for v in m.group(3).split("|")]))
    return out


def _matches(cell: Any, values: list[str]) -> bool:
    for v in values:
        if is_missing(cell):
            if v.lower() in ("", "none", "null"):
                return True
            continue
        if str(cell) == v:
            return True
        if isinstance(cell, int | float) and not isinstance(cell, bool):
            try:
                if float(v) == float(cell):
                    return True
            except ValueError:
                pass
    return False


def filter_runs(runs: pd.DataFrame, where: str | None) -> pd.DataFrame:
    """The runs matching every `COLUMN=VALUE` clause of `where` (any column of the runs DataFrame)."""
    clauses = parse_where(where)
    if not clauses:
        return runs
    columns = [c for c in runs.columns if not c.startswith("_")]
    keep = pd.Series(True, index=runs.index)
    for col, equal, values in clauses:
        if col not in columns:
            raise unknown_name("--where column", col, columns, max_listed=60)
        hit = runs[col].map(lambda cell, values=values: _matches(cell, values)).astype(bool)
        keep &= hit if equal else ~hit
    return runs[keep]


# ---------------------------------------------------------------------------------------------------------
# Labels that tell apart settings which differ in more than a name


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix.rstrip("."): d} if prefix else {"": d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _fmt_value(v: Any) -> str:
    if isinstance(v, list | tuple):
        return "(" + ",".join(_fmt_value(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def distinguish(dicts: Sequence[dict[str, Any]]) -> list[str]:
    """For each dict, `k=v, …` over the (flattened) keys whose values differ among `dicts`; "" when all equal."""
    flats = [_flat(d) for d in dicts]
    keys = sorted({k for f in flats for k in f})
    differing = [k for k in keys if len({_canon(f.get(k, "—")) for f in flats}) > 1]
    return [", ".join(f"{k}={_fmt_value(f.get(k, '—'))}" for k in differing) for f in flats]


def _with_suffix(base: str, extra: str) -> str:
    return f"{base} [{extra}]" if extra else base


def _method_rank(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def _row_labels(groups: pd.DataFrame) -> dict[str, str]:
    """Row key → label: the method name, plus the hyperparameters that differ when a method has variants."""
    labels: dict[str, str] = {}
    for method, g in groups.groupby("method", sort=False):
        firsts = g.drop_duplicates("_row_key")
        extras = distinguish(list(firsts["variant"])) if len(firsts) > 1 else [""] * len(firsts)
        for key, extra in zip(firsts["_row_key"], extras, strict=True):
            labels[key] = _with_suffix(str(method), extra)
    return labels


def _column_labels(columns: pd.DataFrame, with_pair: bool = True) -> dict[str, str]:
    """Column key → "dataset · teacher → student · recipe", plus the settings that differ under one name."""
    labels: dict[str, str] = {}
    by_base: dict[str, dict[str, dict[str, Any]]] = {}
    for r in columns.to_dict("records"):
        recipe = r["_setting"]["recipe"].get("name") or "?"
        base = " · ".join([str(r["dataset"]), *([r["pair"]] if with_pair else []), str(recipe)])
        by_base.setdefault(base, {})[r["_col_key"]] = r["_setting"]
    for base, settings in by_base.items():
        extras = distinguish(list(settings.values())) if len(settings) > 1 else [""]
        for key, extra in zip(settings, extras, strict=True):
            labels[key] = _with_suffix(base, extra)
    return labels


# ---------------------------------------------------------------------------------------------------------
# Cells


def _stats(values: Iterable[float]) -> tuple[float, float, int]:
    vals = [float(v) for v in values if not is_missing(v)]
    n = len(vals)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(vals) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1)) if n > 1 else math.nan
    return mean, std, n


def format_cell(mean: float, std: float, n: int, flag: str = "") -> str:
    """`97.12 ± 0.31 (3)`; one seed has no std: `97.12 (1)`; no run: `—`."""
    if n == 0 or is_missing(mean):
        return "—"
    spread = "" if is_missing(std) else f" ± {std:.{DECIMALS}f}"
    return f"{mean:.{DECIMALS}f}{spread} ({n}){flag}"


def _completed(df: pd.DataFrame, metric: str) -> pd.DataFrame:
    done = df[df["status"] == "completed"]
    return done[~done[metric].map(is_missing).astype(bool)]


def _caveats_footer(df: pd.DataFrame, metric: str) -> list[str]:
    lines = []
    if len(df) and df["recipe_params"].map(is_missing).all():
        # Runs loaded without their full recipe (older load_runs): say so rather than mix recipes silently.
        lines.append("warning: the runs carry no recipe fields, so runs are told apart by recipe name only")
    counts = {s: int((df["status"] == s).sum()) for s in EXCLUDED_STATUSES}
    parts = [f"{n} {s}" for s, n in counts.items() if n]
    if parts:
        lines.append(f"not averaged: {', '.join(parts)} run(s) (`kdbench leaderboard --table runs` lists them)")
    done = df[df["status"] == "completed"]
    no_metric = int(done[metric].map(is_missing).sum()) if len(done) else 0
    if no_metric:
        lines.append(f"{no_metric} completed run(s) have no {metric} and are left out")
    return lines


def _mark_best_and_flags(data: pd.DataFrame) -> pd.DataFrame:
    """Adds `best` (highest mean among students in its column, ties all marked; needs ≥ 2 candidates) and
    `fewer_seeds` (fewer runs than the table's most-seeded student cell)."""
    data = data.copy()
    students = data[(data["row"] != TEACHER_ROW) & (data["n"] > 0)]
    max_n = int(students["n"].max()) if len(students) else 0
    data["fewer_seeds"] = (data["row"] != TEACHER_ROW) & (data["n"] > 0) & (data["n"] < max_n)
    data["best"] = False
    for _, g in students.groupby("column", sort=False):
        if len(g) < 2:
            continue
        top = g["mean"].round(DECIMALS).max()
        data.loc[g.index[g["mean"].round(DECIMALS) == top], "best"] = True
    data.attrs["max_n"] = max_n
    return data


# ---------------------------------------------------------------------------------------------------------
# methods / ablation


def methods_table(df: pd.DataFrame, metric: str = "top1_last", methods: Sequence[str] | None = None,
                  title: str | None = None) -> Leaderboard:
    """The KD-method comparison: teacher, student alone (ce) and every method, per dataset · pair · recipe."""
    scope = df if methods is None else df[df["method"].isin(list(methods))]
    done = _completed(scope, metric)
    kd_cols = done[~done["teacher"].map(is_missing).astype(bool)].drop_duplicates("_col_key")
    ce_only = done[done["teacher"].map(is_missing).astype(bool)]
    # A run without a teacher joins every pair column with the same student setting; else a column of its own.
    attach: dict[str, list[str]] = {}
    for r in kd_cols.to_dict("records"):
        attach.setdefault(r["_student_key"], []).append(r["_col_key"])
    lone = ce_only[~ce_only["_student_key"].isin(list(attach))].drop_duplicates("_student_key")
    for key in lone["_student_key"]:
        attach[key] = [key]
    columns = pd.concat([kd_cols, lone.assign(_col_key=lone["_student_key"])], ignore_index=True)
    col_labels = _column_labels(columns) if len(columns) else {}
    row_labels = _row_labels(done) if len(done) else {}

    records = []
    for r in columns.to_dict("records"):
        label = col_labels[r["_col_key"]]
        info = {"column": label, "dataset": r["dataset"], "teacher": _clean(r["teacher"]), "student": r["student"],
                "recipe": r["_setting"]["recipe"].get("name")}
        if not is_missing(r["teacher"]):
            records.append({"row": TEACHER_ROW, "method": TEACHER_ROW, **info,
                            **_teacher_stats(scope[scope["_col_key"] == r["_col_key"]], metric)})
        members = done[done["_student_key"].map(lambda k, c=r["_col_key"]: c in attach.get(k, [])).astype(bool)
                       & ((done["_col_key"] == r["_col_key"]) | done["teacher"].map(is_missing).astype(bool))]
        for key, g in members.groupby("_row_key", sort=False):
            mean, std, n = _stats(g[metric])
            records.append({"row": row_labels[key], "method": g["method"].iloc[0], **info, "mean": mean, "std": std,
                            "n": n, "run_ids": " ".join(sorted(g["run_id"]))})
    data = pd.DataFrame.from_records(
        records, columns=["row", "method", "column", "dataset", "teacher", "student", "recipe", "mean", "std", "n",
                          "run_ids"])
    data = _mark_best_and_flags(data) if len(data) else data.assign(best=False, fewer_seeds=False)
    data.insert(7, "metric", metric)

    rows = sorted(data["row"].unique(), key=lambda r: (*_method_rank(data.loc[data["row"] == r, "method"].iloc[0]),
                                                       r))
    # Teacher → student pairs first, then students that were only trained alone.
    lone_cols = set(data.loc[data["teacher"].map(is_missing).astype(bool), "column"])
    cols = sorted(data["column"].unique(), key=lambda c: (c in lone_cols, c))
    table = pd.DataFrame("—", index=pd.Index(rows, name="method"), columns=cols, dtype=object)
    bold = set()
    for r in data.to_dict("records"):
        flag = FEWER_SEEDS if r["fewer_seeds"] else ""
        table.loc[r["row"], r["column"]] = format_cell(r["mean"], r["std"], r["n"], flag)
        if r["best"]:
            bold.add((r["row"], r["column"]))

    footer = [f"cells: {METRIC_WORDS[metric]}, mean ± std over seeds (number of seeds); bold = best student in "
              "its column"]
    if TEACHER_ROW in rows:
        footer.append("teacher: the teacher's own test accuracy (number = distinct teacher checkpoints)")
    if "ce" in set(data["method"]):
        footer.append("ce: the student trained alone, without a teacher (for gnn2: the GNN alone)")
    if data["fewer_seeds"].any():
        footer.append(f"{FEWER_SEEDS} fewer seeds than the table's most-seeded cell ({data.attrs.get('max_n')})")
    if any("[" in r for r in rows) or any("[" in c for c in cols):
        footer.append("[k=v]: settings that differ between rows or columns of the same name; never averaged together")
    footer += _caveats_footer(scope, metric)
    if not len(data):
        footer.append("no completed runs to show")
    return Leaderboard("methods", title or f"KD methods ({metric})", table, data, footer, bold)


def _teacher_stats(runs: pd.DataFrame, metric: str) -> dict[str, Any]:
    col = TEACHER_METRIC[metric]
    have = runs[~runs[col].map(is_missing).astype(bool)]
    # One value per teacher checkpoint: many students share one teacher, which must count once.
    ident = [sha if not is_missing(sha) else f"seed:{seed}"
             for sha, seed in zip(have["teacher_sha256"], have["teacher_seed"], strict=True)]
    per_teacher = have.assign(_teacher=ident).drop_duplicates("_teacher")
    mean, std, n = _stats(per_teacher[col])
    return {"mean": mean, "std": std, "n": n, "run_ids": ""}


def ablation_table(df: pd.DataFrame, metric: str = "top1_last", method: str = "cnn2gnn") -> Leaderboard:
    """One method's variants (rows labelled by the hyperparameters that differ) beside the student alone."""
    if method not in set(df["method"]):
        present = sorted({str(m) for m in df["method"] if not is_missing(m)})
        raise UserError(f"no runs of method '{method}' to ablate; methods with runs: {', '.join(present) or 'none'}")
    students = set(df.loc[df["method"] == method, "student"])
    scope = df[(df["method"] == method) | ((df["method"] == "ce") & df["student"].isin(list(students)))]
    board = methods_table(scope, metric, title=f"{method} ablation ({metric})")
    board.kind = "ablation"
    return board


# ---------------------------------------------------------------------------------------------------------
# ladder


def ladder_table(df: pd.DataFrame, metric: str = "top1_last", distilled: Sequence[str] = ("cnn2gnn",)) -> Leaderboard:
    """Every model trained alone (`ce`) and the runs of the `distilled` methods, per dataset and recipe: layers,
    parameters, accuracy, inference time per image (at the recorded batch size), training time."""
    scope = df[df["method"].isin(["ce", *distilled])]
    done = _completed(scope, metric)
    row_labels = _row_labels(done) if len(done) else {}
    # Sections: dataset · recipe (plus data / recipe fields that differ under one recipe name).
    sections = done.assign(_col_key=[_canon([d, s["data"], s["recipe"], s["amp"], s["channels_last"]])
                                     for d, s in zip(done["dataset"], done["_setting"], strict=True)])
    section_of = dict(zip(done["run_id"], sections["_col_key"], strict=True))
    section_labels = _column_labels(sections, with_pair=False) if len(done) else {}
    records = []
    for (_, _, _), g in done.groupby(["_student_key", "_col_key", "_row_key"], sort=False):
        r = g.iloc[0]
        mean, std, n = _stats(g[metric])
        batch = {int(b) for b in g["inference.batch_size"] if not is_missing(b)}
        devices = {str(d) for d in g["inference.device"] if not is_missing(d)}
        label = row_labels[r["_row_key"]]
        model = f"{r['student']}{label[len(str(r['method'])):]}"  # the student plus its variant, if any
        records.append({
            "dataset": r["dataset"], "recipe": section_labels[section_of[r["run_id"]]].split(" · ", 1)[-1],
            "model": model, "trained": "alone (ce)" if r["method"] == "ce" else f"{r['method']} ← {r['teacher']}",
            "layers": _first(g["student_info.layers"]), "params": _first(g["student_info.params"]),
            "mean": mean, "std": std, "n": n,
            "infer_ms_per_image": _mean(g["inference.s_per_image"]) * 1e3,
            "infer_batch_size": batch.pop() if len(batch) == 1 else None,
            "infer_device": devices.pop() if len(devices) == 1 else ("mixed" if devices else None),
            "train_s": _mean(g["timing.train_s"]), "run_ids": " ".join(sorted(g["run_id"])),
        })
    cols = ["dataset", "recipe", "model", "trained", "layers", "params", "mean", "std", "n", "infer_ms_per_image",
            "infer_batch_size", "infer_device", "train_s", "run_ids"]
    data = pd.DataFrame.from_records(records, columns=cols)
    data = data.sort_values(["dataset", "recipe", "layers", "params", "model", "trained"], na_position="last",
                            ignore_index=True)
    data.insert(6, "metric", metric)
    max_n = int(data["n"].max()) if len(data) else 0
    data["fewer_seeds"] = data["n"] < max_n
    data["best"] = False
    for _, g in data.groupby(["dataset", "recipe"], sort=False):
        if len(g) > 1:
            data.loc[g.index[g["mean"].round(DECIMALS) == g["mean"].round(DECIMALS).max()], "best"] = True

    acc = metric
    display = pd.DataFrame({
        "dataset": data["dataset"], "recipe": data["recipe"], "model": data["model"], "trained": data["trained"],
        "layers": data["layers"].map(lambda v: "—" if is_missing(v) else str(int(v))),
        "params": data["params"].map(_fmt_params),
        acc: [format_cell(m, s, n, FEWER_SEEDS if f else "")
              for m, s, n, f in zip(data["mean"], data["std"], data["n"], data["fewer_seeds"], strict=True)],
        "ms/image": [_fmt_infer(t, b, d) for t, b, d in
                                       zip(data["infer_ms_per_image"], data["infer_batch_size"], data["infer_device"],
                                           strict=True)],
        "train time": data["train_s"].map(_fmt_seconds),
    }, dtype=object)
    bold = {(str(i), acc) for i in data.index[data["best"]]}
    display.index = display.index.map(str)
    footer = [f"{metric}: {METRIC_WORDS[metric]}, mean ± std over seeds (n); bold = best in its dataset · recipe",
              "layers: weight layers (conv + linear) of the student; params: the student's parameters",
              "ms/image: inference wall time per image at the stated batch size (b) on the stated device (compare "
              "only within one device); train time: mean wall time of the student's training"]
    if data["fewer_seeds"].any():
        footer.append(f"{FEWER_SEEDS} fewer seeds than the table's most-seeded row ({max_n})")
    footer += _caveats_footer(scope, metric)
    if not len(data):
        footer.append(f"no completed runs of ce or {', '.join(distilled)} to show")
    return Leaderboard("ladder", f"depth ladder ({metric})", display, data, footer, bold)


def _first(values: pd.Series) -> Any:
    vals = [v for v in values if not is_missing(v)]
    return vals[0] if vals else None


def _mean(values: pd.Series) -> float:
    return _stats(values)[0]


def _fmt_params(v: Any) -> str:
    if is_missing(v):
        return "—"
    v = float(v)
    return f"{v / 1e6:.2f}M" if v >= 1e5 else f"{v / 1e3:.1f}k"


def _fmt_infer(ms: Any, batch: Any, device: Any) -> str:
    if is_missing(ms):
        return "—"
    ms = f"{ms:.2f}" if ms >= 0.1 else f"{ms:.3g}"
    where = ", ".join(str(x) for x in (f"b={int(batch)}" if not is_missing(batch) else "b=mixed", device)
                      if not is_missing(x))
    return f"{ms} ({where})"


def _fmt_seconds(v: Any) -> str:
    if is_missing(v):
        return "—"
    v = float(v)
    if v < 120:
        return f"{v:.1f} s"
    return f"{v / 60:.1f} min" if v < 7200 else f"{v / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------------------
# runs


RUN_COLUMNS = ("run_id", "status", "method", "variant", "pair", "dataset", "recipe", "seed", "top1_last", "top1_best",
               "top5_last", "best_epoch", "epochs", "timing.train_s", "finished_at")


def runs_table(df: pd.DataFrame) -> Leaderboard:
    """One row per run record, any status, sorted by dataset, pair, method (paper order) and seed."""
    data = df.copy()
    labels = _row_labels(data) if len(data) else {}
    data["variant"] = [labels[k][len(str(m)):].strip(" []") for k, m in zip(data["_row_key"], data["method"],
                                                                          strict=True)]
    data["_rank"] = data["method"].map(lambda m: _method_rank(str(m)))
    data = data.sort_values(["dataset", "pair", "_rank", "variant", "seed"], key=_sortable, ignore_index=True)
    data = data[list(RUN_COLUMNS)]
    for col in ("seed", "best_epoch", "epochs"):  # integers that NaN (runs without metrics) turned into floats
        data[col] = pd.array([None if is_missing(v) else int(v) for v in data[col]], dtype="Int64")
    display = data.astype(object).map(_fmt_any)
    display.index = display.index.map(str)
    counts = data["status"].value_counts()
    footer = ["runs: " + ", ".join(f"{int(n)} {s}" for s, n in counts.items()) if len(data) else "no runs",
              "variant: the hyperparameters in which runs of the same method differ"]
    return Leaderboard("runs", "runs", display, data.reset_index(drop=True), footer, set())


def _sortable(col: pd.Series) -> pd.Series:
    if col.name == "_rank":
        return col
    return col.map(lambda v: "" if is_missing(v) else (f"{v:012.3f}" if isinstance(v, int | float) else str(v)))


def _fmt_any(v: Any) -> str:
    if is_missing(v):
        return "—"
    if isinstance(v, float):
        return f"{v:.{DECIMALS}f}"
    return str(v)


# ---------------------------------------------------------------------------------------------------------
# Rendering


def format_for_path(path: str | Path) -> str:
    """The output format a file name implies (`.md`, `.csv`, `.tex`, `.html`, `.txt`)."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIX_FORMATS:
        raise UserError(f"cannot tell the format of '{path}' from its suffix: pass --format "
                        f"({', '.join(FORMATS)}) or use one of {', '.join(SUFFIX_FORMATS)}")
    return SUFFIX_FORMATS[suffix]


def _grid(board: Leaderboard) -> tuple[list[str], list[list[str]], set[tuple[int, int]]]:
    """Header, rows of strings and the (row, column) positions to emphasise, index included when named."""
    t = board.table
    with_index = t.index.name is not None
    header = ([str(t.index.name)] if with_index else []) + [str(c) for c in t.columns]
    rows, bold = [], set()
    for i, (label, values) in enumerate(t.iterrows()):
        cells = [str(v) for v in values]
        rows.append(([str(label)] if with_index else []) + cells)
        for j, col in enumerate(t.columns):
            if (str(label), str(col)) in board.bold:
                bold.add((i, j + int(with_index)))
    return header, rows, bold


def render(board: Leaderboard, fmt: str = "markdown") -> str:
    """The table as text in `fmt` (rich renders plain text, no colours; print `rich_table()` for colours)."""
    if fmt not in FORMATS:
        raise unknown_name("format", fmt, FORMATS)
    if fmt == "csv":
        return board.data.to_csv(index=False)
    if fmt == "markdown":
        return to_markdown(board)
    if fmt == "latex":
        return to_latex(board)
    if fmt == "html":
        return to_html(board)
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=250, color_system=None, force_terminal=False).print(rich_table(board))
    return buf.getvalue()


def rich_table(board: Leaderboard) -> Any:
    from rich.table import Table
    from rich.text import Text

    header, rows, bold = _grid(board)
    table = Table(title=board.title, caption="\n".join(board.footer), caption_justify="left")
    for j, h in enumerate(header):
        table.add_column(h, justify="left" if j == 0 else "right")
    for i, row in enumerate(rows):
        # A trailing marker as well as bold, so the best cell survives copy-paste and colourless terminals.
        table.add_row(*[Text(c + " *", style="bold green") if (i, j) in bold else Text(c)
                        for j, c in enumerate(row)])
    return table


def to_markdown(board: Leaderboard) -> str:
    header, rows, bold = _grid(board)

    def cell(text: str, strong: bool) -> str:
        text = text.replace("|", "\\|")
        return f"**{text}**" if strong else text

    lines = [f"**{board.title}**", "", "| " + " | ".join(cell(h, False) for h in header) + " |",
             "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(cell(c, (i, j) in bold) for j, c in enumerate(row)) + " |"
              for i, row in enumerate(rows)]
    lines.append("")
    lines += [f"- {line}" for line in board.footer]
    return "\n".join(lines) + "\n"


_LATEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
                  "±": r"$\pm$", "→": r"$\rightarrow$", "←": r"$\leftarrow$", "†": r"$^\dagger$", "·": r"$\cdot$",
                  "—": "--"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(ch, ch) for ch in text)


def to_latex(board: Leaderboard) -> str:
    header, rows, bold = _grid(board)

    def cell(text: str, strong: bool) -> str:
        text = latex_escape(text)
        return rf"\textbf{{{text}}}" if strong else text

    spec = "l" + "r" * (len(header) - 1)
    lines = [r"% kdbench leaderboard; needs \usepackage{booktabs}", r"\begin{table}[t]", r"\centering",
             rf"\caption{{{latex_escape(board.title)}}}", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(cell(h, False) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(cell(c, (i, j) in bold) for j, c in enumerate(row)) + r" \\" for i, row in enumerate(rows)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if board.footer:
        lines.append(r"\par\smallskip{\footnotesize " + r" \\ ".join(latex_escape(f) for f in board.footer) + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def to_html(board: Leaderboard) -> str:
    header, rows, bold = _grid(board)
    esc = html.escape
    out = ['<table class="kdbench-leaderboard">', f"<caption>{esc(board.title)}</caption>", "<thead><tr>"]
    out += [f"<th>{esc(h)}</th>" for h in header]
    out += ["</tr></thead>", "<tbody>"]
    for i, row in enumerate(rows):
        cells = [f"<td><strong>{esc(c)}</strong></td>" if (i, j) in bold else f"<td>{esc(c)}</td>"
                 for j, c in enumerate(row)]
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody>")
    if board.footer:
        out.append(f'<tfoot><tr><td colspan="{len(header)}">'
                   + "<br/>".join(esc(f) for f in board.footer) + "</td></tr></tfoot>")
    out.append("</table>")
    return "\n".join(out) + "\n"
