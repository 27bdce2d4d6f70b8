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
from kdbench.report.leaderboard.board import FEWER_SEEDS, METRIC_WORDS, TEACHER_AT_INFERENCE, Leaderboard
from kdbench.report.leaderboard.footers import caveats_footer
from kdbench.report.leaderboard.labels import _flat, _fmt_value
from kdbench.report.leaderboard.layout import GridOptions, cell_numbers, layout
from kdbench.report.leaderboard.marks import teacher_at_inference_footer
from kdbench.report.leaderboard.runs import canon, clean, is_missing
from kdbench.report.leaderboard.stats import best_in_groups, completed

# `SCOPE.KEY` scopes that are not a method's, and the runs-DataFrame column holding their settings.
SECTIONS = {"recipe": "recipe_params", "teacher_recipe": "teacher_recipe_params", "data": "data_params",
            "student": "student_params", "teacher": "teacher_params", "teacher_data": "teacher_data"}
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
                       "teacher": "teacher_params", "teacher_data": "teacher_data"}[scope]
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
    keys = _checked_keys(rows, cols)
    scope, points = _keyed(df, keys)
    done = completed(scope, metric)
    _check_one_setting(done, keys)
    data = _pivot_data(done, points, keys, metric)
    row_labels = {p: _label(rows, p, with_names=False) for p in _sorted_points(data["_point"], slice(len(rows)))}
    col_labels = {p: _label(cols, p, with_names=True) if cols else metric
                  for p in _sorted_points(data["_point"], slice(len(rows), None))}
    data = data.drop(columns="_point")
    data.insert(len(keys), "metric", metric)
    data["best"] = best_in_groups(data)
    max_n = int(data["n"].max()) if len(data) else 0
    title = f"{' × '.join([', '.join(rows), *([', '.join(cols)] if cols else [])])} ({metric})"
    options = GridOptions(
        "pivot", title, ", ".join(rows), list(row_labels.values()), list(col_labels.values()),
        place=lambda cell: (row_labels[tuple(cell[k] for k in rows)], col_labels[tuple(cell[k] for k in cols)]),
        marks=lambda cell: (FEWER_SEEDS if cell["n"] < max_n else "")
        + (f" {TEACHER_AT_INFERENCE}" if cell["teacher_at_inference"] else ""))
    return layout(data, options, _pivot_footer(scope, done, data, max_n, metric))


def _checked_keys(rows: list[str], cols: list[str]) -> list[str]:
    keys = [*rows, *cols]
    if not rows:
        raise UserError("--table pivot needs --rows KEY[,KEY] (e.g. --rows kd.temperature --cols kd.w_kd)")
    if len(set(keys)) < len(keys):
        raise UserError(f"a pivot key appears twice in --rows / --cols: {', '.join(keys)}")
    return keys


def _keyed(df: pd.DataFrame, keys: Sequence[str]) -> tuple[pd.DataFrame, pd.Series]:
    """The runs that have every key, and each one's values of the keys (its point of the grid)."""
    values = [[key_value(r, k) for k in keys] for r in df.to_dict("records")]
    keep = [all(v is not _ABSENT for v in vs) for vs in values]
    if not any(keep):
        absent = [k for i, k in enumerate(keys) if all(vs[i] is _ABSENT for vs in values)]
        what = absent[0] if absent else f"all of {', '.join(keys)}"
        raise UserError(f"no run has {what} (keys are SCOPE.KEY as --set takes them, e.g. kd.temperature, "
                        "recipe.lr); `kdbench leaderboard --table runs` lists the runs")
    scope = df[keep]
    points = pd.Series([tuple(vs) for vs, k in zip(values, keep, strict=True) if k], index=scope.index)
    return scope, points


def _pivot_data(done: pd.DataFrame, points: pd.Series, keys: Sequence[str], metric: str) -> pd.DataFrame:
    """One cell per point of the grid, in the keys' order (numbers by value, then other values as text)."""
    cells = [{**dict(zip(keys, point, strict=True)), "_point": point, **cell_numbers(g, metric)}
             for point, g in done.groupby(points.loc[done.index], sort=False)]
    cells.sort(key=lambda r: [_sort_key(v) for v in r["_point"]])
    return pd.DataFrame.from_records(cells, columns=[*keys, "_point", "mean", "std", "n", "teacher_at_inference",
                                                     "run_ids"])


def _sorted_points(points: pd.Series, part: slice) -> list[tuple]:
    return sorted({p[part] for p in points}, key=lambda p: [_sort_key(v) for v in p])


def _pivot_footer(scope: pd.DataFrame, done: pd.DataFrame, data: pd.DataFrame, max_n: int,
                  metric: str) -> list[str]:
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
    return footer


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
