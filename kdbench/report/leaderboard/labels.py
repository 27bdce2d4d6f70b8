"""Row and column labels that tell apart settings which differ in more than a name, and the paper-like row order."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import pandas as pd

from kdbench.core.errors import UserError
from kdbench.data.splits import SUBSET_SEED_KEY
from kdbench.report.leaderboard.board import selection_label
from kdbench.report.leaderboard.runs import canon, clean
from kdbench.spec.config import ADDED_METHOD_PARAMS

# Paper-like row order; methods not listed follow alphabetically.
METHOD_ORDER = ("teacher", "ce", "kd", "fitnet", "at", "sp", "pkt", "rkd", "rkd+kd", "crd", "crd+kd", "crd_kd",
                "dkd", "hkd", "hkd+kd", "hkd_kd", "cnn2gnn")


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


def distinguish(dicts: Sequence[dict[str, Any]], defaults: Sequence[dict[str, Any] | None] = ()) -> list[str]:
    """For each dict, `k=v, …` over the (flattened) keys whose values differ among `dicts`; "" when all equal.

    With `defaults` (one per dict, None where unknown) a key is shown too where any dict sets it away from its
    own default, so a setting that every dict shares (or a single dict) still shows when it is not the
    default: `kd [temperature=2]` even when no default `kd` run sits beside it."""
    row_defaults = list(defaults) + [None] * (len(dicts) - len(defaults))
    flats = [_with_added_defaults(_flat(d), default) for d, default in zip(dicts, row_defaults, strict=True)]
    keys = sorted({k for f in flats for k in f})
    differing = {k for k in keys if len({canon(f.get(k, "—")) for f in flats}) > 1}
    for f, default in zip(flats, defaults, strict=False):
        if default is None:
            continue
        base = _flat(default)
        differing |= {k for k, v in f.items() if _is_set_away(k, v, base)}
    shown = [k for k in keys if k in differing]
    return [", ".join(f"{k}={_fmt_value(f.get(k, '—'))}" for k in shown) for f in flats]


def _with_added_defaults(flat: dict[str, Any], defaults: dict[str, Any] | None) -> dict[str, Any]:
    """A row's settings with those its record leaves out at their default (a method setting added after the first
    records, :data:`kdbench.spec.config.ADDED_METHOD_PARAMS`) shown at that default, not as "—"."""
    if defaults is None:
        return flat
    return {**{k: defaults[k] for k in ADDED_METHOD_PARAMS if k in defaults}, **flat}


def _is_set_away(key: str, value: Any, defaults: dict[str, Any]) -> bool:
    """Whether `key=value` of a row's variant departs from the method's defaults. `student.*` options are in a
    record only when given explicitly (`--set student.KEY=…`), so they always show; `recipe.*` row keys (the
    ablation's evaluation batch size) have no method default and show only where rows differ."""
    if key.startswith("student."):
        return True
    if key not in defaults:
        return not key.startswith("recipe.")
    return canon(defaults[key]) != canon(value)


def method_defaults(method: Any, teacher: Any, student: Any, epochs: Any) -> dict[str, Any] | None:
    """The hyperparameters `method` runs with by default for this teacher → student pair and epoch count (its
    registered defaults after `resolve_params`: DKD's per-pair β, its warm-up rescaled to the run's epochs);
    None for a method this checkout does not know."""
    import dataclasses

    from kdbench.train.method import METHODS

    name = str(method)
    if name not in METHODS:
        return None
    spec = METHODS.get(name)
    try:
        params = spec.cls.resolve_params(spec.params, teacher=clean(teacher), student=str(student),
                                         epochs=int(epochs))
    except UserError:  # a pair the method refuses: compare with its plain defaults
        params = spec.params
    return dataclasses.asdict(params) if dataclasses.is_dataclass(params) else {}


def _with_suffix(base: str, extra: str) -> str:
    return f"{base} [{extra}]" if extra else base


def natural_key(label: str) -> tuple[tuple[int, float, str], ...]:
    """A row label's sort key with its numbers compared as numbers: `at [w_at=3.90625]` < `at [w_at=15.625]` <
    `at [w_at=1000]` (as text, 1000 came first)."""
    parts = re.split(r"(-?\d+(?:\.\d+)?(?:e-?\d+)?)", str(label))
    return tuple((0, float(p), "") if i % 2 else (1, 0.0, p) for i, p in enumerate(parts) if p)


def method_rank(method: str) -> tuple[int, str]:
    """Sort key: METHOD_ORDER first, other methods after it alphabetically."""
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def label_rows(groups: pd.DataFrame) -> dict[str, str]:
    """Row key → label: the method name, plus the hyperparameters that differ when a method has variants."""
    labels: dict[str, str] = {}
    for method, g in groups.groupby("method", sort=False):
        firsts = g.drop_duplicates("_row_key")
        # Every non-default setting shows, even on a method's only variant (`kd [temperature=2]`).
        defaults = [method_defaults(method, t, s, (r or {}).get("epochs", 0)) for t, s, r in
                    zip(firsts["teacher"], firsts["student"], firsts["recipe_params"], strict=True)]
        extras = distinguish(list(firsts["variant"]), defaults)
        marks = firsts["_code_mark"] if "_code_mark" in firsts.columns else [""] * len(firsts)
        for key, extra, mark in zip(firsts["_row_key"], extras, marks, strict=True):
            # Older code's rows (`kdbench leaderboard --all-code`) carry its fingerprint: `kd @3f2a1c`.
            labels[key] = _with_suffix(f"{method} {mark}" if mark else str(method), extra)
    return labels


def setting_text(run: dict[str, Any]) -> str:
    """What sets one run's method away from its registered defaults, as its row label's bracket shows it
    (`w_at=250`, `logit_std=True`); "" at the defaults (and for a method this checkout does not know)."""
    defaults = method_defaults(run["method"], run["teacher"], run["student"],
                               (clean(run.get("recipe_params")) or {}).get("epochs", 0))
    if defaults is None:
        return ""
    return distinguish([run["variant"]], [defaults])[0]


def label_columns(columns: pd.DataFrame, with_pair: bool = True, best: bool = False) -> dict[str, str]:
    """Column key → "dataset · teacher → student · recipe", plus the settings that differ under one name; with
    `best` (a best-epoch metric) plus how the best epoch was chosen: "· best (val-selected)"."""
    labels: dict[str, str] = {}
    by_base: dict[str, dict[str, dict[str, Any]]] = {}
    for r in columns.to_dict("records"):
        setting = {k: v for k, v in r["_setting"].items() if k != "best_on"}  # shown by its own words below
        recipe = setting["recipe"].get("name") or "?"
        parts = [str(r["dataset"]), *([r["pair"]] if with_pair else []), str(recipe)]
        if best:
            parts.append(selection_label(r["_setting"]["best_on"]))
        by_base.setdefault(" · ".join(parts), {})[r["_col_key"]] = setting
    for base, settings in by_base.items():
        extras = distinguish(list(settings.values())) if len(settings) > 1 else [""]
        for key, extra in zip(settings, extras, strict=True):
            for note in (_partial_teacher_note(settings[key]), *_nested_notes(settings[key])):
                if note and note not in extra:
                    extra = f"{extra}, {note}" if extra else note
            labels[key] = _with_suffix(base, extra)
    return labels


def _partial_teacher_note(setting: dict[str, Any]) -> str:
    """A teacher that saw only part of the training labels (the information-matched control) is named in its
    column even alone: the teacher row's accuracy means something else then."""
    fraction = (setting.get("teacher_data") or {}).get("train_fraction", 1.0)
    return f"teacher_data.train_fraction={fraction:g}" if fraction < 1 else ""


def _nested_notes(setting: dict[str, Any]) -> list[str]:
    """A column of a second teacher seed or another subset draw is named so even alone (the nested design of the
    variance table; issue #38.4); at their defaults nothing is added, so one-teacher tables read as before."""
    notes = [f"teacher_seed={setting['teacher_seed']}"] if setting.get("teacher_seed") else []
    subset_seed = (setting.get("data") or {}).get(SUBSET_SEED_KEY)
    return notes + ([f"data.{SUBSET_SEED_KEY}={subset_seed}"] if subset_seed is not None else [])
