"""The `ladder` table: every model trained alone (`ce`) and the distilled GNN on one depth axis, per dataset and
recipe: layers, parameters, accuracy, inference time per image and training time."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from kdbench.report.leaderboard.board import (
    FEWER_SEEDS,
    METRIC_WORDS,
    TRANSDUCTIVE,
    Leaderboard,
    is_best_metric,
    selection_label,
)
from kdbench.report.leaderboard.cells import fmt_infer, fmt_params, fmt_seconds, format_cell
from kdbench.report.leaderboard.footers import binomial_footer, caveats_footer, selection_footer
from kdbench.report.leaderboard.labels import _with_suffix, distinguish, label_rows
from kdbench.report.leaderboard.layout import cell_numbers
from kdbench.report.leaderboard.marks import teacher_at_inference_footer, transductive_footer, with_teacher_mark
from kdbench.report.leaderboard.runs import canon, is_missing
from kdbench.report.leaderboard.stats import best_in_groups, completed, first_present, mean_of, with_test_set_error

DATA_COLUMNS = ["dataset", "section", "recipe", "model", "trained", "layers", "params", "mean", "std", "n",
                "infer_ms_per_image", "infer_batch_size", "infer_device", "train_s", "run_ids", "num_test"]
SECTION = ["dataset", "section"]


def ladder_table(df: pd.DataFrame, metric: str = "top1_last", distilled: Sequence[str] = ("cnn2gnn",)) -> Leaderboard:
    """Every model trained alone (`ce`) and the runs of the `distilled` methods, per dataset and recipe: layers,
    parameters, accuracy, inference time per image (at the recorded batch size), training time."""
    scope = df[df["method"].isin(["ce", *distilled])]
    done = completed(scope, metric)
    row_labels = label_rows(done) if len(done) else {}
    # Sections: dataset · recipe name (plus data settings that differ under one name). Each model keeps its own
    # recipe's hyperparameters (the GNN's default lr is not a CNN's): they label the row's recipe, never split
    # the section, so the distilled GNN sits on one depth axis with the CNNs trained alone.
    best = is_best_metric(metric)
    # A best-epoch column says which split chose the epoch: in its header, or per section when they differ.
    selections = {s["best_on"] for s in done["_setting"]} if len(done) else set()
    sections = _ladder_sections(done, best and len(selections) > 1)
    records = [_ladder_row(g, metric, row_labels[g["_row_key"].iloc[0]], sections)
               for _, g in done.groupby(["_student_key", "_col_key", "_row_key"], sort=False)]
    data = _ladder_data(records, metric)
    acc = f"{metric} ({next(iter(selections))}-selected)" if best and len(selections) == 1 else metric
    bold = {(str(i), acc) for i in data.index[data["best"]]}
    footer = _ladder_footer(scope, done, data, selections, metric)
    if not len(data):
        footer.append(f"no completed runs of ce or {', '.join(distilled)} to show")
    return Leaderboard("ladder", f"depth ladder ({metric})", _display(data, acc), data, footer, bold)


def _ladder_sections(done: pd.DataFrame, with_selection: bool) -> tuple[dict[str, str], dict[str, tuple[str, str]],
                                                                        dict[str, str]]:
    """Run id → its section key; section key → (`dataset · recipe name`, the data settings, AMP or channels_last
    that tell apart sections of one name); run id → the recipe hyperparameters in which its model's recipe
    differs from the others' of its section (`lr=0.01`)."""
    keys: dict[str, str] = {}
    settings: dict[str, dict[str, dict]] = {}  # base label → section key → the settings that may tell it apart
    members: dict[str, list[dict]] = {}  # section key → its runs
    for r in done.to_dict("records"):
        s = r["_setting"]
        setting = {"data": s["data"], "amp": s["amp"], "channels_last": s["channels_last"]}
        key = canon([r["dataset"], s["recipe"].get("name"), setting, s["best_on"]])
        keys[r["run_id"]] = key
        members.setdefault(key, []).append(r)
        base = " · ".join([str(r["dataset"]), str(s["recipe"].get("name") or "?"),
                           *([selection_label(s["best_on"])] if with_selection else [])])
        settings.setdefault(base, {})[key] = setting
    labels = {}
    for base, by_key in settings.items():
        extras = distinguish(list(by_key.values())) if len(by_key) > 1 else [""]
        for key, extra in zip(by_key, extras, strict=True):
            labels[key] = (base, extra)
    notes: dict[str, str] = {}
    for runs in members.values():
        recipes = [{k: v for k, v in r["_setting"]["recipe"].items() if k != "name"} for r in runs]
        for r, note in zip(runs, distinguish(recipes), strict=True):
            notes[r["run_id"]] = note
    return keys, labels, notes


def _ladder_row(g: pd.DataFrame, metric: str, label: str, sections: tuple) -> dict[str, Any]:
    """One model's row from its runs (one setting, every seed): its section, recipe, name and numbers."""
    section_of, section_labels, recipe_notes = sections
    r = g.iloc[0]
    cell = cell_numbers(g, metric)
    batch = {int(b) for b in g["inference.batch_size"] if not is_missing(b)}
    devices = {str(d) for d in g["inference.device"] if not is_missing(d)}
    model = f"{r['student']}{label[len(str(r['method'])):]}"  # the student plus its variant, if any
    model = with_teacher_mark(f"{model} {TRANSDUCTIVE}" if cell["transductive"] else model,
                              cell["teacher_at_inference"])
    base, extra = section_labels[section_of[r["run_id"]]]
    return {**cell, "dataset": r["dataset"], "section": _with_suffix(base, extra),
            "recipe": _with_suffix(base.split(" · ", 1)[-1],
                                   ", ".join(x for x in (extra, recipe_notes[r["run_id"]]) if x)),
            "model": model, "trained": "alone (ce)" if r["method"] == "ce" else f"{r['method']} ← {r['teacher']}",
            "layers": first_present(g["student_info.layers"]), "params": first_present(g["student_info.params"]),
            "infer_ms_per_image": mean_of(g["inference.s_per_image"]) * 1e3,
            "infer_batch_size": batch.pop() if len(batch) == 1 else None,
            "infer_device": devices.pop() if len(devices) == 1 else ("mixed" if devices else None),
            "train_s": mean_of(g["timing.train_s"])}


def _ladder_data(records: list[dict[str, Any]], metric: str) -> pd.DataFrame:
    """The rows in depth order per section, with the binomial error, fewer-seeds and best marks."""
    data = pd.DataFrame.from_records(records, columns=DATA_COLUMNS)
    data = with_test_set_error(data)
    data = data.sort_values([*SECTION, "layers", "params", "model", "trained"], na_position="last",
                            ignore_index=True)
    data.insert(7, "metric", metric)
    # Fewer seeds than the most-seeded row of the same section: sections are separate settings (embedded-hard's
    # 5 seeds say nothing about a 3-seed digits section).
    data["fewer_seeds"] = data["n"] < data.groupby(SECTION)["n"].transform("max")
    data["best"] = best_in_groups(data, SECTION)
    return data


def _display(data: pd.DataFrame, acc: str) -> pd.DataFrame:
    display = pd.DataFrame({
        "dataset": data["dataset"], "recipe": data["recipe"], "model": data["model"], "trained": data["trained"],
        "layers": data["layers"].map(lambda v: "—" if is_missing(v) else str(int(v))),
        "params": data["params"].map(fmt_params),
        acc: [format_cell(m, s, n, FEWER_SEEDS if f else "")
              for m, s, n, f in zip(data["mean"], data["std"], data["n"], data["fewer_seeds"], strict=True)],
        "ms/image": [fmt_infer(t, b, d) for t, b, d in
                     zip(data["infer_ms_per_image"], data["infer_batch_size"], data["infer_device"], strict=True)],
        "train time": data["train_s"].map(fmt_seconds),
    }, dtype=object)
    display.index = display.index.map(str)
    return display


def _ladder_footer(scope: pd.DataFrame, done: pd.DataFrame, data: pd.DataFrame, selections: set[str],
                   metric: str) -> list[str]:
    footer = [f"{metric}: {METRIC_WORDS[metric]}, mean ± std over seeds (n); bold = best in its dataset · recipe",
              "layers: weight layers (conv + linear) of the student; params: the student's parameters",
              "ms/image: inference wall time per image at the stated batch size (b) on the stated device (compare "
              "only within one device); train time: mean wall time of the student's training"]
    if data["fewer_seeds"].any():
        footer.append(f"{FEWER_SEEDS} fewer seeds than the most-seeded row of its dataset · recipe")
    # Rows of one seed (the deeper CNNs) are single figures: the test set's own error is their only error bar.
    footer += binomial_footer(data, metric)
    footer += transductive_footer(done) if len(done) else []
    footer += teacher_at_inference_footer(done)
    footer += selection_footer(selections, metric)
    return footer + caveats_footer(scope, metric)
