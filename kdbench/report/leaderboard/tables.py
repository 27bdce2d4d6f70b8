"""The tables, as pure functions of the prepared runs: `methods`, `ablation`, `ladder` and `runs`."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from kdbench.core.errors import UserError
from kdbench.report.leaderboard.board import (
    DECIMALS,
    EXCLUDED_STATUSES,
    FEWER_SEEDS,
    METRIC_WORDS,
    POWER,
    SELECTION_WORDS,
    SIGNIFICANCE_P,
    SIGNIFICANCE_WORDS,
    TEACHER_AT_INFERENCE,
    TEACHER_AT_INFERENCE_WORDS,
    TEACHER_ROW,
    TEST_WORDS,
    TRANSDUCTIVE,
    TRANSDUCTIVE_WORDS,
    Leaderboard,
    is_best_metric,
    selection_label,
)
from kdbench.report.leaderboard.cells import fmt_any, fmt_infer, fmt_params, fmt_seconds, format_cell
from kdbench.report.leaderboard.labels import _with_suffix, distinguish, label_columns, label_rows, method_rank
from kdbench.report.leaderboard.runs import canon, clean, is_flag_set, is_missing, selection_of
from kdbench.report.leaderboard.stats import (
    binomial_se,
    column_power,
    completed,
    first_present,
    mark_best_and_flags,
    mark_significance,
    mean_of,
    per_seed,
    summarize,
    teacher_stats,
)


def caveats_footer(df: pd.DataFrame, metric: str) -> list[str]:
    """Footer lines about runs left out of the averages (failed, diverged, running, no metric) and missing recipes."""
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


def selection_footer(selections: set[str], metric: str, teacher_shown: bool = False) -> list[str]:
    """Footer lines saying how the best epoch of each selection shown was chosen (best-epoch metrics only)."""
    if not is_best_metric(metric):
        return []
    lines = [f"{selection_label(s)}: {SELECTION_WORDS[s]}" for s in sorted(selections, reverse=True)]
    if teacher_shown and "val" in selections:
        lines.append("the teacher row's best epoch is always test-selected (teachers train without a validation "
                     "split)")
    return lines


def transductive_footer(runs: pd.DataFrame) -> list[str]:
    """The footnote of the transductive marker, with the evaluation batch size(s) of the marked runs."""
    marked = runs[runs["transductive"].map(is_flag_set).astype(bool)]
    if not len(marked):
        return []
    sizes = sorted({int(b) for b in marked["eval.batch_size"] if not is_missing(b)}
                   | {int(r["eval_batch_size"]) for r in marked["_setting"].map(lambda s: s["recipe"])
                      if not is_missing(r.get("eval_batch_size"))})
    size = ", ".join(str(b) for b in sizes) or "not recorded"
    return [f"{TRANSDUCTIVE} {TRANSDUCTIVE_WORDS} (batch size {size})"]


def teacher_at_inference_footer(runs: pd.DataFrame) -> list[str]:
    """The footnote of the `§` marker, when a run shown needs its teacher at inference."""
    if not len(runs) or not runs["teacher_at_inference"].map(is_flag_set).any():
        return []
    return [f"{TEACHER_AT_INFERENCE} {TEACHER_AT_INFERENCE_WORDS}"]


def _with_teacher_mark(label: str, needs_teacher: bool) -> str:
    return f"{label} {TEACHER_AT_INFERENCE}" if needs_teacher else label


def _mark_transductive(data: pd.DataFrame) -> dict[str, str]:
    """Row label → shown label: `‡` on rows whose every cell is transductive. A row with both kinds (the student
    alone across a GNN and a CNN column) keeps its label, and its transductive cells carry the marker instead
    (`data["cell_mark"]`)."""
    data["cell_mark"] = ""
    shown = {}
    for row, g in data.groupby("row", sort=False):
        filled = g[g["n"] > 0]
        every = bool(len(filled)) and bool(filled["transductive"].all())
        shown[row] = f"{row} {TRANSDUCTIVE}" if every else row
        if not every:
            data.loc[filled.index[filled["transductive"].astype(bool)], "cell_mark"] = TRANSDUCTIVE
    return shown


def power_footer(data: pd.DataFrame) -> list[str]:
    """One line: per column, the smallest difference from `ce` its test detects at the seeds run (see
    `kdbench.report.leaderboard.stats.detectable_difference` and `column_power`)."""
    power = column_power(data)
    if not power:
        return []
    parts = [f"{column}: {'—' if is_missing(mdd) else f'{mdd:.{DECIMALS}f}'} points ({test}, {n} "
             f"{'pairs' if test == 'paired' else 'seeds a side'})"
             for column, (mdd, test, n) in power.items()]
    return [f"power: the smallest true difference from ce a column's test detects with {POWER:.0%} power at "
            f"α = {SIGNIFICANCE_P} (two-sided) with the seeds run (the t-test's exact power, noncentral t; about "
            f"(t_{{1−α/2, df}} + t_{{{POWER}, df}}) · se), se the standard error of a difference (paired: s_d/√n; "
            "Welch: √(s²/n + s_ce²/n_ce)) pooled over the column's comparisons (each one's: the CSV's mdd); a "
            "smaller true gap goes unmarked more often than not: "
            + "; ".join(parts)]


def binomial_footer(data: pd.DataFrame, metric: str) -> list[str]:
    """Per dataset, the binomial standard error of one accuracy figure on its test set (`binomial_se`): what a
    single number (the teacher row, a one-seed cell) is uncertain by."""
    lines = []
    shown = data[(data["n"] > 0) & data["binomial_se"].map(lambda v: not is_missing(v)).astype(bool)]
    for (dataset, num_test), g in shown.groupby(["dataset", "num_test"], sort=False):
        is_teacher = (g["row"] == TEACHER_ROW) if "row" in g.columns else pd.Series(False, index=g.index)
        teacher, students = g[is_teacher], g[~is_teacher]
        at = []
        if len(teacher):
            t = teacher.iloc[0]
            at.append(f"±{t['binomial_se']:.{DECIMALS}f} at the teacher's {t['mean']:.{DECIMALS}f}")
        if len(students):
            lo, hi = students["binomial_se"].min(), students["binomial_se"].max()
            spread = f"±{lo:.{DECIMALS}f}" if round(lo, DECIMALS) == round(hi, DECIMALS) else \
                f"±{lo:.{DECIMALS}f} to ±{hi:.{DECIMALS}f}"
            at.append(f"{spread} at the students' means")
        lines.append(f"test-set error: one {metric.split('_')[0]} figure on the {int(num_test)} test images of "
                     f"{dataset} has a binomial standard error of 100·√(p(1−p)/{int(num_test)}) points: "
                     f"{', '.join(at)} (per cell: the CSV's binomial_se); it bounds a single-seed figure (the "
                     "teacher row, a one-seed cell) against the model's true accuracy, not the seed spread of a "
                     "mean")
    return lines


def methods_table(df: pd.DataFrame, metric: str = "top1_last", methods: Sequence[str] | None = None,
                  title: str | None = None) -> Leaderboard:
    """The KD-method comparison: teacher, student alone (ce) and every method, per dataset · pair · recipe."""
    scope = df if methods is None else df[df["method"].isin(list(methods))]
    done = completed(scope, metric)
    kd_cols = done[~done["teacher"].map(is_missing).astype(bool)].drop_duplicates("_col_key")
    ce_only = done[done["teacher"].map(is_missing).astype(bool)]
    # A run without a teacher joins every pair column with the same student setting; else a column of its own.
    attach: dict[str, list[str]] = {}
    for r in kd_cols.to_dict("records"):
        attach.setdefault(r["_student_key"], []).append(r["_col_key"])
    lone = ce_only[~ce_only["_student_key"].isin(list(attach))].drop_duplicates("_student_key")
    # Columns that would hold only the student alone (the depth ladder's models) compare no methods: they belong
    # to the ladder table. They stay only when no method was run at all (a table of nothing but `ce`).
    ladder_only = len(lone) if len(kd_cols) else 0
    if ladder_only:
        lone = lone.iloc[0:0]
    for key in lone["_student_key"]:
        attach[key] = [key]
    columns = pd.concat([kd_cols, lone.assign(_col_key=lone["_student_key"])], ignore_index=True)
    col_labels = label_columns(columns, best=is_best_metric(metric)) if len(columns) else {}
    row_labels = label_rows(done) if len(done) else {}

    records, seeds = [], []  # seeds: each record's seed → value, for the t-tests against ce
    for r in columns.to_dict("records"):
        label = col_labels[r["_col_key"]]
        info = {"column": label, "dataset": r["dataset"], "teacher": clean(r["teacher"]), "student": r["student"],
                "recipe": r["_setting"]["recipe"].get("name")}
        if not is_missing(r["teacher"]):
            in_column = scope[scope["_col_key"] == r["_col_key"]]
            records.append({"row": TEACHER_ROW, "method": TEACHER_ROW, **info, "transductive": False,
                            "teacher_at_inference": False, **teacher_stats(in_column, metric),
                            # The teacher is tested on the same test split as its students.
                            "num_test": first_present(in_column["data.num_test"])})
            seeds.append({})
        members = done[done["_student_key"].map(lambda k, c=r["_col_key"]: c in attach.get(k, [])).astype(bool)
                       & ((done["_col_key"] == r["_col_key"]) | done["teacher"].map(is_missing).astype(bool))]
        for key, g in members.groupby("_row_key", sort=False):
            mean, std, n = summarize(g[metric])
            records.append({"row": row_labels[key], "method": g["method"].iloc[0], **info,
                            "transductive": bool(g["transductive"].map(is_flag_set).any()),
                            "teacher_at_inference": bool(g["teacher_at_inference"].map(is_flag_set).any()),
                            "mean": mean,
                            "std": std, "n": n, "run_ids": " ".join(sorted(g["run_id"])),
                            "num_test": first_present(g["data.num_test"])})
            seeds.append(per_seed(list(g["seed"]), list(g[metric])))
    data = pd.DataFrame.from_records(
        records, columns=["row", "method", "column", "dataset", "teacher", "student", "recipe", "transductive",
                          "teacher_at_inference", "mean", "std", "n", "run_ids", "num_test"])
    data = mark_best_and_flags(data) if len(data) else data.assign(best=False, fewer_seeds=False)
    data = mark_significance(data, seeds)
    data["binomial_se"] = [binomial_se(m, t) for m, t in zip(data["mean"], data["num_test"], strict=True)]
    data.insert(7, "metric", metric)
    shown = _mark_transductive(data)
    # A row is one method and variant, so its runs agree on whether the teacher runs at inference.
    needs_teacher = set(data.loc[data["teacher_at_inference"].astype(bool), "row"])
    data["row"] = [_with_teacher_mark(shown[r], r in needs_teacher) for r in data["row"]]

    rows = sorted(data["row"].unique(), key=lambda r: (*method_rank(data.loc[data["row"] == r, "method"].iloc[0]),
                                                       r))
    # Teacher → student pairs first, then students that were only trained alone.
    lone_cols = set(data.loc[data["teacher"].map(is_missing).astype(bool), "column"])
    cols = sorted(data["column"].unique(), key=lambda c: (c in lone_cols, c))
    table = pd.DataFrame("—", index=pd.Index(rows, name="method"), columns=cols, dtype=object)
    bold = set()
    for r in data.to_dict("records"):
        flag = (FEWER_SEEDS if r["fewer_seeds"] else "") + r["cell_mark"] + r["vs_ce"]
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
    if data["vs_ce"].astype(bool).any():
        footer.append(SIGNIFICANCE_WORDS)
    if data["test"].astype(bool).any():
        footer.append(TEST_WORDS)
        footer += power_footer(data)
    footer += binomial_footer(data, metric)
    if any("[" in r for r in rows) or any("[" in c for c in cols):
        footer.append("[k=v]: settings that differ between rows or columns of the same name; never averaged together")
    footer += teacher_at_inference_footer(done)
    footer += transductive_footer(done[done["_col_key"].isin(list(columns["_col_key"]))
                                       | done["_student_key"].isin(list(attach))]) if len(done) else []
    footer += selection_footer({s["best_on"] for s in columns["_setting"]} if len(columns) else set(), metric,
                               TEACHER_ROW in rows)
    if ladder_only:
        footer.append(f"{ladder_only} column(s) of students trained only alone (no method to compare) are in the "
                      "ladder table: `kdbench leaderboard --table ladder`")
    footer += caveats_footer(scope, metric)
    if not len(data):
        footer.append("no completed runs to show")
    return Leaderboard("methods", title or f"KD methods ({metric})", table, data, footer, bold)


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
    section_of, section_labels, recipe_notes = _ladder_sections(done, best and len(selections) > 1)
    records = []
    for (_, _, _), g in done.groupby(["_student_key", "_col_key", "_row_key"], sort=False):
        r = g.iloc[0]
        mean, std, n = summarize(g[metric])
        batch = {int(b) for b in g["inference.batch_size"] if not is_missing(b)}
        devices = {str(d) for d in g["inference.device"] if not is_missing(d)}
        label = row_labels[r["_row_key"]]
        model = f"{r['student']}{label[len(str(r['method'])):]}"  # the student plus its variant, if any
        if g["transductive"].map(is_flag_set).any():
            model = f"{model} {TRANSDUCTIVE}"
        model = _with_teacher_mark(model, bool(g["teacher_at_inference"].map(is_flag_set).any()))
        base, extra = section_labels[section_of[r["run_id"]]]
        records.append({
            "dataset": r["dataset"], "section": _with_suffix(base, extra),
            "recipe": _with_suffix(base.split(" · ", 1)[-1],
                                   ", ".join(x for x in (extra, recipe_notes[r["run_id"]]) if x)),
            "model": model, "trained": "alone (ce)" if r["method"] == "ce" else f"{r['method']} ← {r['teacher']}",
            "layers": first_present(g["student_info.layers"]), "params": first_present(g["student_info.params"]),
            "mean": mean, "std": std, "n": n,
            "infer_ms_per_image": mean_of(g["inference.s_per_image"]) * 1e3,
            "infer_batch_size": batch.pop() if len(batch) == 1 else None,
            "infer_device": devices.pop() if len(devices) == 1 else ("mixed" if devices else None),
            "train_s": mean_of(g["timing.train_s"]), "run_ids": " ".join(sorted(g["run_id"])),
            "num_test": first_present(g["data.num_test"]),
        })
    cols = ["dataset", "section", "recipe", "model", "trained", "layers", "params", "mean", "std", "n",
            "infer_ms_per_image", "infer_batch_size", "infer_device", "train_s", "run_ids", "num_test"]
    data = pd.DataFrame.from_records(records, columns=cols)
    data["binomial_se"] = [binomial_se(m, t) for m, t in zip(data["mean"], data["num_test"], strict=True)]
    data = data.sort_values(["dataset", "section", "layers", "params", "model", "trained"], na_position="last",
                            ignore_index=True)
    data.insert(7, "metric", metric)
    # Fewer seeds than the most-seeded row of the same section: sections are separate settings (embedded-hard's
    # 5 seeds say nothing about a 3-seed digits section).
    data["fewer_seeds"] = data["n"] < data.groupby(["dataset", "section"])["n"].transform("max")
    data["best"] = False
    for _, g in data.groupby(["dataset", "section"], sort=False):
        if len(g) > 1:
            data.loc[g.index[g["mean"].round(DECIMALS) == g["mean"].round(DECIMALS).max()], "best"] = True

    acc = f"{metric} ({next(iter(selections))}-selected)" if best and len(selections) == 1 else metric
    display = pd.DataFrame({
        "dataset": data["dataset"], "recipe": data["recipe"], "model": data["model"], "trained": data["trained"],
        "layers": data["layers"].map(lambda v: "—" if is_missing(v) else str(int(v))),
        "params": data["params"].map(fmt_params),
        acc: [format_cell(m, s, n, FEWER_SEEDS if f else "")
              for m, s, n, f in zip(data["mean"], data["std"], data["n"], data["fewer_seeds"], strict=True)],
        "ms/image": [fmt_infer(t, b, d) for t, b, d in
                                       zip(data["infer_ms_per_image"], data["infer_batch_size"], data["infer_device"],
                                           strict=True)],
        "train time": data["train_s"].map(fmt_seconds),
    }, dtype=object)
    bold = {(str(i), acc) for i in data.index[data["best"]]}
    display.index = display.index.map(str)
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
    footer += caveats_footer(scope, metric)
    if not len(data):
        footer.append(f"no completed runs of ce or {', '.join(distilled)} to show")
    return Leaderboard("ladder", f"depth ladder ({metric})", display, data, footer, bold)


RUN_COLUMNS = ("run_id", "status", "method", "variant", "pair", "dataset", "recipe", "seed", "top1_last", "top1_best",
               "top5_last", "best_epoch", "best_selected_on", "epochs", "timing.train_s", "finished_at")


def runs_table(df: pd.DataFrame) -> Leaderboard:
    """One row per run record, any status, sorted by dataset, pair, method (paper order) and seed."""
    data = df.copy()
    labels = label_rows(data) if len(data) else {}
    data["variant"] = [labels[k][len(str(m)):].strip(" []") for k, m in zip(data["_row_key"], data["method"],
                                                                          strict=True)]
    data["_rank"] = data["method"].map(lambda m: method_rank(str(m)))
    data = data.sort_values(["dataset", "pair", "_rank", "variant", "seed"], key=_sortable, ignore_index=True)
    data["best_selected_on"] = [selection_of(s) if not is_missing(b) else None
                                for s, b in zip(data["best_selected_on"], data["top1_best"], strict=True)]
    marked = data["transductive"].map(is_flag_set).astype(bool)
    data["method"] = [f"{m} {TRANSDUCTIVE}" if t else m for m, t in zip(data["method"], marked, strict=True)]
    data["method"] = [_with_teacher_mark(m, is_flag_set(t))
                      for m, t in zip(data["method"], data["teacher_at_inference"], strict=True)]
    footer_extra = transductive_footer(data) + teacher_at_inference_footer(data)
    data = data[list(RUN_COLUMNS)]
    for col in ("seed", "best_epoch", "epochs"):  # integers that NaN (runs without metrics) turned into floats
        data[col] = pd.array([None if is_missing(v) else int(v) for v in data[col]], dtype="Int64")
    display = data.astype(object).map(fmt_any)
    display.index = display.index.map(str)
    counts = data["status"].value_counts()
    footer = ["runs: " + ", ".join(f"{int(n)} {s}" for s, n in counts.items()) if len(data) else "no runs",
              "variant: the hyperparameters in which runs of the same method differ",
              "best_selected_on: the split that chose best_epoch (test: as the DKD tables; val: data.val_fraction)",
              *footer_extra]
    return Leaderboard("runs", "runs", display, data.reset_index(drop=True), footer, set())


def _sortable(col: pd.Series) -> pd.Series:
    if col.name == "_rank":
        return col
    return col.map(lambda v: "" if is_missing(v) else (f"{v:012.3f}" if isinstance(v, int | float) else str(v)))
