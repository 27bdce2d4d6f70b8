"""The `pivot` table: a hyperparameter grid as a grid of cells (`--rows kd.temperature --cols kd.w_kd`).

Keys are what `--set` / `--grid` take: `SCOPE.KEY` read from the run's config (a method's scope from its
`method_params`, `recipe.*`, `teacher_recipe.*`, `data.*`, `student.*`, `teacher.*`), or a plain column of the
runs DataFrame (`teacher`, `student`, `dataset`). Runs without every key (another method's) are left out. The
runs kept must agree on everything else but the seed, so a cell never averages two settings: otherwise the
table is refused, naming what differs, and `--where` narrows the runs. Cells are mean ± std over seeds (n).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import pandas as pd

from kdbench.core.errors import UserError
from kdbench.report.leaderboard.board import DECIMALS, FEWER_SEEDS, METRIC_WORDS, TEACHER_AT_INFERENCE, Leaderboard
from kdbench.report.leaderboard.cells import format_cell
from kdbench.report.leaderboard.labels import _flat, _fmt_value
from kdbench.report.leaderboard.runs import canon, clean, is_flag_set, is_missing
from kdbench.report.leaderboard.stats import completed, summarize
from kdbench.report.leaderboard.tables import caveats_footer, teacher_at_inference_footer

# `SCOPE.KEY` scopes that are not a method's, and the runs-DataFrame column holding their settings.
SECTIONS = {"recipe": "recipe_params", "teacher_recipe": "teacher_recipe_params", "data": "data_params",
            "student": "student_params", "teacher": "teacher_params"}
_ABSENT = object()


def _method_scopes(method: Any) -> set[str]:
    """A method's `--set` scopes (its name and its class's name); a method this checkout lacks: its name."""
    from kdbench.train.method import METHODS

    name = str(method)
    return {name, METHODS.get(name).cls.name} if name in METHODS else {name}


def key_value(run: dict[str, Any], key: str) -> Any:
    """The value of `key` in one run (a row of the runs DataFrame as a dict), `_ABSENT` when it has none."""
    scope, dot, name = key.partition(".")
    if not dot:
        value = run.get(key, _ABSENT)
        return _ABSENT if value is _ABSENT or is_missing(value) else value
    if scope in SECTIONS:
        section = clean(run.get(SECTIONS[scope]))
    elif scope in _method_scopes(run.get("method")):
        section = clean(run.get("method_params"))
    else:
        return _ABSENT
    return section.get(name, _ABSENT) if isinstance(section, dict) else _ABSENT


def _rest(run: dict[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Everything that sets a run's numbers apart, except its seed and the pivot keys."""
    setting = copy.deepcopy(run["_setting"])
    variant = dict(run["variant"])
    for key in keys:
        scope, dot, name = key.partition(".")
        if not dot:
            continue
        if scope == "student":
            variant.pop(f"student.{name}", None)
        elif scope in SECTIONS:
            section = {"recipe": "recipe", "teacher_recipe": "teacher_recipe", "data": "data",
                       "teacher": "teacher_params"}[scope]
            if isinstance(setting.get(section), dict):
                setting[section].pop(name, None)
        else:
            variant.pop(name, None)
    rest = {"method": run["method"], "teacher": clean(run["teacher"]), "student": run["student"],
            "dataset": run["dataset"], **setting, "params": variant}
    for key in keys:
        rest.pop(key, None)  # a plain-column key (teacher, student, dataset)
    return rest


def _sort_key(value: Any) -> tuple:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return (1, str(value))
    return (0, float(value))


def _label(keys: Sequence[str], values: Sequence[Any], with_names: bool) -> str:
    parts = [f"{k}={_fmt_value(v)}" if with_names else _fmt_value(v) for k, v in zip(keys, values, strict=True)]
    return ", ".join(parts)


def pivot_table(df: pd.DataFrame, metric: str = "top1_last", rows: Sequence[str] = (),
                cols: Sequence[str] = ()) -> Leaderboard:
    """Mean ± std over seeds of `metric` for each combination of the `rows` keys (one row each) and the
    `cols` keys (one column each; none: a single column)."""
    rows, cols = list(rows), list(cols)
    keys = [*rows, *cols]
    if not rows:
        raise UserError("--table pivot needs --rows KEY[,KEY] (e.g. --rows kd.temperature --cols kd.w_kd)")
    if len(set(keys)) < len(keys):
        raise UserError(f"a pivot key appears twice in --rows / --cols: {', '.join(keys)}")
    records = df.to_dict("records")
    values = [[key_value(r, k) for k in keys] for r in records]
    keep = [all(v is not _ABSENT for v in vs) for vs in values]
    if not any(keep):
        absent = [k for i, k in enumerate(keys) if all(vs[i] is _ABSENT for vs in values)]
        what = absent[0] if absent else f"all of {', '.join(keys)}"
        raise UserError(f"no run has {what} (keys are SCOPE.KEY as --set takes them, e.g. kd.temperature, "
                        "recipe.lr); `kdbench leaderboard --table runs` lists the runs")
    scope = df[keep]
    cells = pd.DataFrame({"_values": [tuple(vs) for vs, k in zip(values, keep, strict=True) if k]},
                         index=scope.index)
    done = completed(scope, metric)
    _check_one_setting(done, keys)

    data_rows = []
    for point, g in done.groupby(cells.loc[done.index, "_values"], sort=False):
        mean, std, n = summarize(g[metric])
        data_rows.append({**dict(zip(keys, point, strict=True)), "_point": point, "mean": mean, "std": std, "n": n,
                          "teacher_at_inference": bool(g["teacher_at_inference"].map(is_flag_set).any()),
                          "run_ids": " ".join(sorted(g["run_id"]))})
    data_rows.sort(key=lambda r: [_sort_key(v) for v in r["_point"]])
    data = pd.DataFrame.from_records(data_rows, columns=[*keys, "_point", "mean", "std", "n", "teacher_at_inference",
                                                         "run_ids"])

    row_points = sorted({p[:len(rows)] for p in data["_point"]}, key=lambda p: [_sort_key(v) for v in p])
    col_points = sorted({p[len(rows):] for p in data["_point"]}, key=lambda p: [_sort_key(v) for v in p])
    row_labels = {p: _label(rows, p, with_names=False) for p in row_points}
    col_labels = {p: _label(cols, p, with_names=True) if cols else metric for p in col_points}
    table = pd.DataFrame("—", index=pd.Index([row_labels[p] for p in row_points], name=", ".join(rows)),
                         columns=[col_labels[p] for p in col_points], dtype=object)
    max_n = int(data["n"].max()) if len(data) else 0
    top = data["mean"].round(DECIMALS).max() if len(data) else None
    bold = set()
    for r in data.to_dict("records"):
        row, col = row_labels[r["_point"][:len(rows)]], col_labels[r["_point"][len(rows):]]
        marks = (FEWER_SEEDS if r["n"] < max_n else "") + \
            (f" {TEACHER_AT_INFERENCE}" if r["teacher_at_inference"] else "")
        table.loc[row, col] = format_cell(r["mean"], r["std"], r["n"], marks)
        if len(data) > 1 and round(r["mean"], DECIMALS) == top:
            bold.add((row, col))
    data = data.drop(columns="_point")
    data.insert(len(keys), "metric", metric)
    data["best"] = [(row_labels[tuple(r[k] for k in rows)], col_labels[tuple(r[k] for k in cols)]) in bold
                    for r in data.to_dict("records")]

    footer = [f"cells: {METRIC_WORDS[metric]}, mean ± std over seeds (number of seeds); bold = best cell"]
    if len(done):
        first = done.iloc[0]
        recipe = first["_setting"]["recipe"].get("name")
        footer.append(f"runs: {first['method']}, {first['pair']} on {first['dataset']} ({recipe}); every other "
                      "setting equal")
    if (data["n"] < max_n).any():
        footer.append(f"{FEWER_SEEDS} fewer seeds than the table's most-seeded cell ({max_n})")
    footer += teacher_at_inference_footer(done)
    footer += caveats_footer(scope, metric)
    if not len(data):
        footer.append("no completed runs to show")
    title = f"{' × '.join([', '.join(rows), *([', '.join(cols)] if cols else [])])} ({metric})"
    return Leaderboard("pivot", title, table, data, footer, bold)


def _check_one_setting(done: pd.DataFrame, keys: Sequence[str]) -> None:
    """Refuse runs that differ in more than the pivot keys and the seed, naming what differs."""
    rests = {canon(r): r for r in (_rest(run, keys) for run in done.to_dict("records"))}
    if len(rests) <= 1:
        return
    flats = [_flat(r) for r in rests.values()]
    differ = sorted(k for k in {k for f in flats for k in f}
                    if len({canon(f.get(k)) for f in flats}) > 1)
    raise UserError(f"the runs with {', '.join(keys)} differ in more than those and the seed "
                    f"({', '.join(differ[:6])}{', …' if len(differ) > 6 else ''}): narrow them with --where, "
                    "e.g. --where method=kd,teacher=resnet18")
