"""The figures the docs quote are the committed records' figures (results/reference/runs).

Each entry of FIGURES is a passage of a doc as it reads, with `{name}` where a figure stands and, for each name,
the query that computes it from the records (through `kdbench.load_runs` and the leaderboard code, so a mark is
the mark the tables print). A regeneration that moves a number, or a doc edit that changes one, fails here
until the two agree again; the message says which doc, what it says and what the records say. Passages are
matched with whitespace collapsed, so rewrapping a paragraph is free; rewording one means updating its entry.
Figures the docs give as history (results version 2, the candidates measured before the sweep) are not here:
no committed record holds them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pandas as pd
import pytest

from kdbench.report.leaderboard import build
from kdbench.report.leaderboard.code import CODE_COLUMN, current_fingerprints
from kdbench.report.leaderboard.stats import holm, paired_p, per_seed
from kdbench.report.results import load_runs

ROOT = Path(__file__).resolve().parents[1]
HARD, DIGITS = "embedded-hard-v2", "digits-v1"


@cache
def runs() -> pd.DataFrame:
    """The committed records, read as the current code's. They are one regeneration (one fingerprint per method),
    and the docs quote them until `results/regenerate.sh` runs again: a code change that moves fingerprints
    before then leaves what they say unchanged, so it must not empty the tables this test reads."""
    df = load_runs(ROOT / "results" / "reference")
    assert (df.groupby("method")[CODE_COLUMN].nunique() == 1).all(), "the reference records mix code versions"
    df[CODE_COLUMN] = df["method"].map(current_fingerprints(sorted(set(df["method"]))))
    return df


# Holm's family is what the docs' sentences claim, as results/tables.sh makes the tables: embedded-hard's CNN
# student from the ResNet-18 teacher is one table (its two columns, the full-data teacher's and the control's, share
# one ce), the GNN's graph study another; digits' columns ask separate questions, each its own family. Each table
# keeps the methods at their defaults (`setting=none`), without DOT and on the recipe's own subset draw: the
# variants, the other teachers and the nested design have tables of their own.
FAMILY = {"digits-v1": "column"}
PLAIN = "setting=none,recipe.dot_delta=0|none,data.subset_seed=none"
WHERE = {"digits-v1": ["recipe=digits-v1,setting!=logit_std=True,recipe.dot_delta=0|none,data.subset_seed=none"],
         "embedded-hard-v2": [f"recipe=embedded-hard-v2,student=cifar_resnet8,teacher=resnet18|none,"
                              f"teacher_seed=0|none,{PLAIN}", "recipe=embedded-hard-v2,student=gnn2"]}


@cache
def board(recipe: str, table: str = "methods") -> pd.DataFrame:
    family = FAMILY.get(recipe, "table")
    return pd.concat([build(runs(), table, where=where, family=family).data for where in WHERE[recipe]],
                     ignore_index=True)


@cache
def _table_family_digits() -> pd.DataFrame:
    """The digits table with Holm across all its comparisons (the default family), for the docs' counterfactual."""
    return build(runs(), where=WHERE[DIGITS][0], family="table").data


def mdd_range(recipe: str, pair: str) -> tuple[float, float, str, str]:
    """(smallest, largest) per-comparison detectable difference in a column, at the family's α/m, and the rows."""
    data = board(recipe)
    tested = data[(data["column"] == _column_of(recipe, pair)) & data["mdd"].notna()]
    lo, hi = tested.loc[tested["mdd"].idxmin()], tested.loc[tested["mdd"].idxmax()]
    return float(lo["mdd"]), float(hi["mdd"]), _bare(lo["row"]), _bare(hi["row"])


def family_m(recipe: str, pair: str) -> int:
    return int(_cell(recipe, pair, "kd" if recipe == HARD else "at")["family_m"])


def delta(recipe: str, pair: str, row: str) -> str:
    """`+2.94 [2.01, 3.88]`: a cell's difference from ce with its 95 % interval, as the tables print it."""
    from kdbench.report.leaderboard.intervals import bracket, signed

    c = _cell(recipe, pair, row)
    return f"{signed(c['diff'])} {bracket(c['diff_lo'], c['diff_hi'])}"


def _bare(label: str) -> str:
    """A row label without its table marks (‡ transductive, § teacher at inference)."""
    return re.sub(r"( [‡§])+$", "", str(label))


# embedded-hard's information-matched control: its own column, the teacher trained on the student's 10 %.
CONTROL_TAG, CONTROL = "teacher_data.train_fraction=0.1", " (control)"


def _cell(recipe: str, pair: str, row: str) -> pd.Series:
    """The one cell of `row` in the column of `pair` (`… (control)`: the control's column; else the other)."""
    data = board(recipe)
    control = pair.endswith(CONTROL)
    in_column = data["column"].str.contains(f" · {pair.removesuffix(CONTROL)} · ", regex=False) \
        & (data["column"].str.contains(CONTROL_TAG, regex=False) == control)
    hit = data[in_column & (data["row"].map(_bare) == row) & (data["n"] > 0)]
    assert len(hit) == 1, f"{len(hit)} cells for {row!r} in {pair} ({recipe})"
    return hit.iloc[0]


def cell(recipe: str, pair: str, row: str, *, n: bool = False, mark: str = "") -> str:
    """`mean ± std`, with `(n)` and the significance mark (`mark` the separator before it) when asked."""
    c = _cell(recipe, pair, row)
    text = f"{c['mean']:.2f} ± {c['std']:.2f}" + (f" ({int(c['n'])})" if n else "")
    return text + (f"{mark}{c['vs_ce']}" if mark and c["vs_ce"] else "")


def _column_of(recipe: str, pair: str) -> str:
    return str(_cell(recipe, pair, "ce")["column"])


def the_mark(recipe: str, pair: str, row: str) -> str:
    return str(_cell(recipe, pair, row)["vs_ce"])


def mean(recipe: str, pair: str, row: str) -> float:
    return float(_cell(recipe, pair, row)["mean"])


def teacher(recipe: str, pair: str) -> str:
    return f"{_cell(recipe, pair, 'teacher')['mean']:.2f}"


def count(**where: str) -> int:
    df = runs()
    keep = pd.Series(True, index=df.index)
    for column, value in where.items():
        keep &= df[column].astype(str) == value
    return int((keep & (df["status"] == "completed")).sum())


def settings(recipe: str, student: str, column: str, key: str, method: str | None = None) -> str:
    """The one value of `key` in the `column` settings (recipe_params, method_params) of these runs."""
    df = runs()
    mine = (df["recipe"] == recipe) & (df["student"] == student) & ((df["method"] == method) if method else True)
    values = {str(r[key]) for r in df.loc[mine, column]}
    assert len(values) == 1, f"{column}.{key} varies: {values}"
    return values.pop()


def num_train(recipe: str) -> int:
    values = set(runs().loc[runs()["recipe"] == recipe, "data.num_train"])
    assert len(values) == 1
    return int(values.pop())


def graph_cell(features: str, graph: str, k: int) -> str:
    row = f"cnn2gnn [graph={graph}, graph_features={features}, k={k}]"
    return cell(HARD, "resnet18 → gnn2", row)


def graph_seeds(features: str, graph: str, k: int) -> dict[int, float]:
    df = runs()
    mine = df[(df["recipe"] == HARD) & (df["method"] == "cnn2gnn") & df["method_params"].map(
        lambda m: (m.get("graph_features"), m.get("graph"), m.get("k")) == (features, graph, k)).astype(bool)]
    return per_seed(list(mine["seed"]), list(mine["top1_last"]))


def p_text(p: float) -> str:
    """A p-value as the docs write it: `< 1e-4`, `3e-4` (below 0.01), else two significant digits (`0.017`)."""
    if p < 1e-4:
        return "< 1e-4"
    if p < 0.01:
        mantissa, exponent = f"{p:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{p:.2g}"


def graph_p(features: str, graph: str, k: int) -> str:
    """The paired p of a graph-study cell against k = 0 (the same student and loss with no neighbours)."""
    return p_text(paired_p(graph_seeds(features, graph, k), graph_seeds("student", "batch", 0))[0])


def k0() -> float:
    return mean(HARD, "resnet18 → gnn2", "cnn2gnn [graph=batch, graph_features=student, k=0]")


def graph_mean(features: str, graph: str, k: int) -> float:
    return mean(HARD, "resnet18 → gnn2", f"cnn2gnn [graph={graph}, graph_features={features}, k={k}]")


def gaps(cells: list[tuple[str, str, int]]) -> list[float]:
    """k = 0's mean minus each cell's, in points."""
    return [k0() - graph_mean(*cell) for cell in cells]


STUDENT_GRAPHS = [("student", g, k) for g in ("batch", "anchor", "memory") for k in (5, 10, 20)]
TEACHER_MEMORY = [("teacher", "memory", k) for k in (5, 10, 20)]
TEACHER_BATCH = [("teacher", "batch", k) for k in (5, 10, 20)]


def ce_hard() -> dict[int, float]:
    df = runs()
    alone = df[(df["recipe"] == HARD) & (df["method"] == "ce") & (df["student"] == "gnn2")]
    return per_seed(list(alone["seed"]), list(alone["top1_last"]))


def beyond_noise_ks(ps: list[float]) -> str:
    """`at every k`, or `at k = 5 and 10, not at k = 20`: where the paired p of k = 5, 10, 20 is below 0.05."""
    sig = [str(k) for k, p in zip((5, 10, 20), ps, strict=True) if p < 0.05]
    rest = [str(k) for k, p in zip((5, 10, 20), ps, strict=True) if p >= 0.05]
    if not rest:
        return "at every k"
    return f"at k = {' and '.join(sig)}, not at k = {' and '.join(rest)}" if sig else "at no k"


def f1(x: float) -> str:
    return f"{x:.1f}"


def gain(pair: str, row: str) -> float:
    """A method's mean minus the student alone's, in its column of embedded-hard (points)."""
    return mean(HARD, pair, row) - mean(HARD, pair, "ce")


# The distillation methods of embedded-hard's CNN column, every one quoted in the README's and benchmark.md's table.
HARD_METHODS = ("hkd+kd", "crd+kd", "kd", "hkd", "rkd", "pkt", "dkd", "fitnet", "crd", "at", "sp", "cc", "vid", "nst",
                "ab", "ofd", "reviewkd", "dist", "ctkd", "ofa")
NUMBER_WORDS = ["none", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
                "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]


def with_mark(mark: str) -> list[str]:
    """The methods of embedded-hard's full-data column whose mark against ce is `mark`."""
    return [m for m in HARD_METHODS if the_mark(HARD, R8, m) == mark]


def spoken(items: list[str]) -> str:
    """`a, b and c`."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def bracket2(pair: tuple[float, float]) -> str:
    return f"[{pair[0]:.2f}, {pair[1]:.2f}]"


def _run_seeds(run_ids: str) -> dict[int, float]:
    """seed → top-1 (last epoch) of a cell's runs (its `run_ids`, space-separated)."""
    df = runs().set_index("run_id")
    return {int(df.loc[r, "seed"]): float(df.loc[r, "top1_last"]) for r in str(run_ids).split()}


def _seed_values(row: str, column: str) -> dict[int, float]:
    return _run_seeds(_cell(HARD, column, row)["run_ids"])


@cache
def kept(method: str) -> tuple[float, float, float]:
    """The part of `method`'s gain over ce that the information-matched control keeps (control gain / full-data
    gain), with a 95 % percentile bootstrap over seeds (each seed's ce, full and control runs resampled together;
    10,000 draws, numpy's default generator at seed 0)."""
    import numpy as np

    ce, full, ctl = (_seed_values(r, c) for r, c in (("ce", R8), (method, R8), (method, R8 + CONTROL)))
    seeds = sorted(ce)
    a = np.array([full[s] - ce[s] for s in seeds])
    b = np.array([ctl[s] - ce[s] for s in seeds])
    idx = np.random.default_rng(0).integers(0, len(seeds), (10_000, len(seeds)))
    draws = b[idx].mean(axis=1) / a[idx].mean(axis=1)
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return float(b.mean() / a.mean()), float(lo), float(hi)


VIT, C56 = "deit_tiny_patch16_224 → cifar_resnet8", "cifar_resnet56 → cifar_resnet8"
PAIRS_WHERE = ("recipe=embedded-hard-v2,student=cifar_resnet8,teacher=deit_tiny_patch16_224|cifar_resnet56|none,"
               f"{PLAIN}")


@cache
def pairs_board() -> pd.DataFrame:
    """results/embedded-hard-pairs.md: the same student from the ViT teacher and from cifar_resnet56, each column
    its own family (as results/tables.sh makes it)."""
    return build(runs(), where=PAIRS_WHERE, family="column").data


def pcell(pair: str, row: str) -> pd.Series:
    data = pairs_board()
    hit = data[data["column"].str.contains(f" · {pair} · ", regex=False) & (data["row"].map(_bare) == row)
               & (data["n"] > 0)]
    assert len(hit) == 1, f"{len(hit)} cells for {row!r} in {pair}"
    return hit.iloc[0]


def pmethods(pair: str, mark: str | None = None) -> list[str]:
    """The distillation rows of a pairs column (by mean, highest first), those with `mark` when given."""
    data = pairs_board()
    col = data[data["column"].str.contains(f" · {pair} · ", regex=False) & ~data["row"].isin(["teacher", "ce"])
               & (data["n"] > 0)]
    rows = col.sort_values("mean", ascending=False)
    return [_bare(r) for r, m in zip(rows["row"], rows["vs_ce"], strict=True) if mark is None or m == mark]


def pgain(pair: str, row: str) -> str:
    return f"{pcell(pair, row)['mean'] - pcell(pair, 'ce')['mean']:+.1f}".replace("-", "−")


TEACHER0 = ("recipe=embedded-hard-v2,student=cifar_resnet8,teacher=resnet18|none,teacher_seed=0|none,"
            "teacher_data.train_fraction=1|none,data.subset_seed=none")
# The weight sweeps (results/embedded-hard-variants.md): method → (weight, its values from the published one down,
# the teacher whose pair it runs on).
WEIGHTS = {"at": ("w_at", (1000, 250, 62.5, 15.625, 3.90625), "resnet18"),
           "fitnet": ("w_feat", (100, 30, 10, 3, 1), "resnet18"),
           "crd": ("w_crd", (0.8, 0.4, 0.2, 0.1), "resnet18"),
           "ab": ("w_ab", (1, 0.25, 0.0625, 0.015625), "resnet18"),
           "nst": ("w_nst", (50, 12.5, 3.125, 0.78125), "resnet18"),
           "ofd": ("w_feat", (0.001, 0.00025, 6.25e-5, 1.5625e-5), "resnet18"),
           "ft": ("w_ft", (200, 50, 12.5, 3.125), "cifar_resnet56"),
           "fsp": ("w_fsp", (1, 0.25, 0.0625, 0.015625), "cifar_resnet56")}


@cache
def weight_board(method: str) -> pd.DataFrame:
    """One method's weight sweep beside ce (an ablation table, its own Holm family), as results/tables.sh makes it."""
    teacher_name = WEIGHTS[method][2]
    where = (f"{TEACHER0},recipe.dot_delta=0|none" if teacher_name == "resnet18" else
             "recipe=embedded-hard-v2,student=cifar_resnet8,teacher=cifar_resnet56|none,recipe.dot_delta=0|none,"
             "data.subset_seed=none")
    return build(runs(), "ablation", where=where, method=method).data


def _fmt_weight(v: float) -> str:
    return f"{v:g}"


def weight_line(method: str) -> str:
    """`| at (w_at) | 1000: 86.44 ± 1.39 ⇓ | 250: … |`, the published weight first."""
    key, values, _ = WEIGHTS[method]
    data = weight_board(method).set_index("row")
    cells = []
    for v in values:
        c = data.loc[f"{method} [{key}={_fmt_weight(v)}]"]
        mark = c["vs_ce"] if isinstance(c["vs_ce"], str) and c["vs_ce"] else ""
        cells.append(f"{_fmt_weight(v)}: {c['mean']:.2f} ± {c['std']:.2f}{_spaced(mark)}")
    return f"| {method} (`{key}`) | " + " | ".join(cells) + " |"


def weight_mean(method: str, v: float) -> float:
    key = WEIGHTS[method][0]
    return float(weight_board(method).set_index("row").loc[f"{method} [{key}={_fmt_weight(v)}]", "mean"])


@cache
def ls_board() -> pd.DataFrame:
    return build(runs(), where=f"{TEACHER0},recipe.dot_delta=0|none,method=ce|kd|dkd|crd+kd|hkd+kd|dist|ctkd").data


def _seeds_of(data: pd.DataFrame, row: str) -> dict[int, float]:
    hit = data[data["row"].map(_bare) == row]
    assert len(hit) == 1, f"{len(hit)} rows {row!r}"
    return _run_seeds(hit.iloc[0]["run_ids"])


LS_ROWS = {"kd": ("kd [logit_std=False, temperature=4, w_kd=0.9]", "kd [logit_std=True, temperature=2, w_kd=9]")}


def ls_change(method: str) -> tuple[float, float, float, float]:
    """(plain mean, with logit standardization, difference, paired p) on embedded-hard's ResNet-18 column."""
    plain, on = LS_ROWS.get(method, (f"{method} [logit_std=False]", f"{method} [logit_std=True]"))
    a, b = _seeds_of(ls_board(), plain), _seeds_of(ls_board(), on)
    ma, mb = sum(a.values()) / len(a), sum(b.values()) / len(b)
    return ma, mb, mb - ma, paired_p(b, a)[0]


def ls_class(helps: bool, beyond: bool) -> list[str]:
    """The logit methods whose change with `logit_std` is positive (or not) at paired p < 0.05 (or not)."""
    out = []
    for m in ("dist", "dkd", "kd", "hkd+kd", "crd+kd", "ctkd"):
        _, _, d, p = ls_change(m)
        if (d > 0) == helps and (p < 0.05) == beyond:
            out.append(m)
    return out


@cache
def dot_board() -> pd.DataFrame:
    return build(runs(), where=f"{TEACHER0},setting=none,method=ce|kd|dkd", family="column").data


def dot_change(method: str) -> tuple[float, float, float, float]:
    """(without DOT, with it, difference, paired p)."""
    data = dot_board()
    with_dot = data[data["column"].str.contains("dot_delta=0.075", regex=False)]
    without = data[~data["column"].str.contains("dot_delta=0.075", regex=False)]
    a, b = _seeds_of(without, method), _seeds_of(with_dot, method)
    ma, mb = sum(a.values()) / len(a), sum(b.values()) / len(b)
    return ma, mb, mb - ma, paired_p(b, a)[0]


def signed1(x: float) -> str:
    return f"{x:+.1f}".replace("-", "−")


NESTED = ("recipe=embedded-hard-v2,student=cifar_resnet8,teacher=resnet18|none,teacher_data.train_fraction=1|none,"
          "setting=none,recipe.dot_delta=0|none")
NESTED_METHODS = ("ce", "kd", "crd+kd", "hkd+kd", "dkd")


@cache
def variance_board() -> pd.DataFrame:
    """results/embedded-hard-variance.md: the nested design pooled per method (as results/tables.sh makes it)."""
    data = build(runs(), "variance", where=NESTED).data
    return data[data["row"].isin(NESTED_METHODS)].set_index("row")


def _var(v: float, share: float) -> str:
    return "—" if v != v else f"{v:.2f} ({share * 100:.0f} %)"


def variance_line(method: str) -> str:
    r = variance_board().loc[method]
    units = f"{int(r['n_teachers']) or '—'} × {int(r['n_draws'])}, {int(r['n_runs'])}"
    diff = "—" if r["diff"] != r["diff"] else f"{r['diff']:+.2f} [{r['diff_lo']:.2f}, {r['diff_hi']:.2f}]"
    return (f"| {method} | {units} | {r['mean']:.2f} | {_var(r['var_teacher'], r['share_teacher'])} | "
            f"{_var(r['var_draw'], r['share_draw'])} | {_var(r['var_seed'], r['share_seed'])} | {diff} |"
            ).replace("-", "−")


def teacher_seed_top1() -> list[str]:
    """The three ResNet-18 zoo teachers' top-1 (teacher seeds 0, 1, 2) as the records give it."""
    df = runs()
    mine = df[(df["recipe"] == HARD) & (df["teacher"] == "resnet18") & (df["student"] == "cifar_resnet8")]
    mine = mine[mine["teacher_data"].map(lambda d: not isinstance(d, dict) or d.get("train_fraction", 1) == 1)]
    by_seed = mine.groupby(mine["teacher_seed"].fillna(0).astype(int))["teacher_top1"].agg(set)
    assert all(len(v) == 1 for v in by_seed), by_seed
    return [f"{next(iter(by_seed[s])):.2f}" for s in (0, 1, 2)]


def digits_train_s(method: str) -> float:
    """The median training seconds of `method`'s digits runs into ResNet-18 (without DOT)."""
    df = runs()
    mine = df[(df["recipe"] == DIGITS) & (df["method"] == method) & (df["student"] == "resnet18")]
    mine = mine[mine["recipe_params"].map(lambda r: not (r or {}).get("dot_delta"))]
    return float(mine["timing.train_s"].median())


def main_runs() -> pd.Series:
    """The runs of embedded-hard's main table's full-data column (ce and the methods at their defaults)."""
    ids = {r for row in ("ce", *HARD_METHODS) for r in str(_cell(HARD, R8, row)["run_ids"]).split()}
    return runs()["run_id"].isin(ids)


def bold_if_best(row: str, text: str) -> str:
    """`**text**` for the best student of embedded-hard's CNN column (the one its table bolds), else `text`."""
    data = board(HARD)
    column = data[(data["column"] == _column_of(HARD, R8)) & ~data["row"].isin(["teacher"])]
    best = _bare(column.loc[column["mean"].idxmax(), "row"])
    return f"**{text}**" if row == best else text


def marked(recipe: str, pair: str, marks: str) -> list[str]:
    """The rows of a column whose mark against ce is one of `marks`."""
    data = board(recipe)
    column = data[data["column"] == _column_of(recipe, pair)]
    return [_bare(r) for r, m in zip(column["row"], column["vs_ce"], strict=True) if m and m in marks]


def ladder_cnns(recipe: str) -> dict[str, float]:
    """Top-1 of the ladder's ResNets trained alone (seed 0), by architecture."""
    df = runs()
    mine = df[(df["recipe"] == recipe) & (df["method"] == "ce") & (df["seed"] == 0)
              & df["student"].isin([f"resnet{d}" for d in (18, 34, 50, 101, 152)])]
    assert len(mine) == 5, f"{len(mine)} ladder ResNets on {recipe}"
    return dict(zip(mine["student"], mine["top1_last"], strict=True))


def same(*texts: str) -> str:
    """The one text all of `texts` are (a passage that quotes one figure for several cells), else a mismatch."""
    return texts[0] if len(set(texts)) == 1 else " / ".join(texts)


def _spaced(mark: str) -> str:
    return f" {mark}" if mark else ""


def hard_cnn_runs(*, control: bool) -> int:
    """The completed runs of embedded-hard's main CNN table: the information-matched control's column (its
    distillation runs; ce is the other column's), or the full-data teacher's (ce included)."""
    if not control:
        return int(main_runs().sum())
    return sum(int(_cell(HARD, R8 + CONTROL, m)["n"]) for m in ("kd", "crd+kd", "hkd+kd", "dkd"))


def student_graph_ps() -> list[float]:
    """The paired p of each student-feature graph cell against k = 0, in STUDENT_GRAPHS' order."""
    k0_seeds = graph_seeds("student", "batch", 0)
    return [paired_p(graph_seeds(*c), k0_seeds)[0] for c in STUDENT_GRAPHS]


def digits_seeds(teacher_name: str, graph: str, k: int) -> dict[int, float]:
    """Per-seed top-1 of a digits cnn2gnn cell (gnn2 student)."""
    df = runs()
    mine = df[(df["recipe"] == DIGITS) & (df["method"] == "cnn2gnn") & (df["teacher"] == teacher_name)
              & df["method_params"].map(lambda m: (m.get("graph"), m.get("k")) == (graph, k)).astype(bool)]
    return per_seed(list(mine["seed"]), list(mine["top1_last"]))


def digits_vs_k0(graph: str, k: int) -> tuple[float, float]:
    """(points below the graph-free student, paired p) of a digits cell, ResNet-152 teacher."""
    cell_seeds, k0_seeds = digits_seeds("resnet152", graph, k), digits_seeds("resnet152", "batch", 0)
    gap = sum(k0_seeds.values()) / len(k0_seeds) - sum(cell_seeds.values()) / len(cell_seeds)
    return gap, paired_p(cell_seeds, k0_seeds)[0]


def best_cnn_student() -> pd.Series:
    """The best distilled `cifar_resnet8` cell on embedded-hard-v2 taught by the GNN's teacher (the ResNet-18
    trained on the whole training split; the recipe's other `cifar_resnet8` column has a teacher trained on the
    student's 10 %)."""
    assert abs(mean(HARD, R8, "teacher") - mean(HARD, GNN18, "teacher")) < 1e-9, "not the same teacher"
    data = board(HARD)
    mine = data[(data["column"] == _column_of(HARD, R8)) & ~data["row"].isin(["teacher", "ce"]) & (data["n"] > 0)]
    return mine.loc[mine["mean"].idxmax()]


@dataclass
class Figure:
    doc: str
    text: str  # the passage as the doc has it, `{name}` where a figure stands
    values: dict[str, Callable[[], object]] = field(default_factory=dict)

    def expected(self) -> str:
        return self.text.format(**{name: query() for name, query in self.values.items()})


def _graph_row(features: str, graph: str, label: str) -> Figure:
    ks = (5, 10, 20)
    values: dict[str, Callable[[], object]] = {}
    for k in ks:
        values[f"c{k}"] = lambda k=k: graph_cell(features, graph, k)
        values[f"p{k}"] = lambda k=k: graph_p(features, graph, k)
    first = "{k0}" if features == "student" else "—"
    if features == "student":
        values["k0"] = lambda: graph_cell(features, graph, 0)
    return Figure("docs/cnn2gnn.md", f"| {label} | {first} | {{c5}} (p {{p5}}) | {{c10}} (p {{p10}}) | "
                                     "{c20} (p {p20}) |", values)


GNN152, GNN18, R8 = "resnet152 → gnn2", "resnet18 → gnn2", "resnet18 → cifar_resnet8"

FIGURES = [
    # docs/cnn2gnn.md: the digits table, the graph study on embedded-hard and what it says.
    Figure("docs/cnn2gnn.md", "| teacher | {a} | {b} |",
           {"a": lambda: teacher(DIGITS, GNN152), "b": lambda: teacher(DIGITS, GNN18)}),
    Figure("docs/cnn2gnn.md", "| gnn2 alone (ce) | {a} | {b} |",
           {"a": lambda: cell(DIGITS, GNN152, "ce", n=True), "b": lambda: cell(DIGITS, GNN18, "ce", n=True)}),
    Figure("docs/cnn2gnn.md", "| cnn2gnn, graph=anchor, k=10 | {a} | — |",
           {"a": lambda: cell(DIGITS, GNN152, "cnn2gnn [graph=anchor, k=10]", n=True, mark=" ")}),
    Figure("docs/cnn2gnn.md", "| cnn2gnn, graph=batch, k=0 (no graph) | {a} | — |",
           {"a": lambda: cell(DIGITS, GNN152, "cnn2gnn [graph=batch, k=0]", n=True, mark=" ")}),
    Figure("docs/cnn2gnn.md", "| cnn2gnn, graph=batch, k=10 | {a} | {b} |",
           {"a": lambda: cell(DIGITS, GNN152, "cnn2gnn [graph=batch, k=10]", n=True, mark=" "),
            "b": lambda: cell(DIGITS, GNN18, "cnn2gnn [graph=batch, k=10]", n=True, mark=" ")}),
    Figure("docs/cnn2gnn.md", "(paired t-test over the {n} seeds, seed i against seed i, which share initialisation "
                              "and data order): the graph-free student at p = {p} (Holm {ph}) and the anchor graph at "
                              "p = {pa} (Holm {pah}, just inside;",
           {"n": lambda: int(_cell(DIGITS, GNN152, "ce")["n"]),
            "p": lambda: f"{_cell(DIGITS, GNN152, 'cnn2gnn [graph=batch, k=0]')['p_vs_ce']:.2g}",
            "ph": lambda: f"{_cell(DIGITS, GNN152, 'cnn2gnn [graph=batch, k=0]')['p_holm']:.2g}",
            "pa": lambda: f"{_cell(DIGITS, GNN152, 'cnn2gnn [graph=anchor, k=10]')['p_vs_ce']:.2g}",
            "pah": lambda: f"{_cell(DIGITS, GNN152, 'cnn2gnn [graph=anchor, k=10]')['p_holm']:.2g}"}),
    Figure("docs/cnn2gnn.md", "(the digits table's family is each column, `--family column`: over the table's {m} "
                              "the anchor graph would stay {ma} and the graph-free student be {mk})",
           {"m": lambda: int(_table_family_digits()["family_m"].max()),
            "ma": lambda: str(_table_family_digits().set_index("row").loc["cnn2gnn [graph=anchor, k=10]", "vs_ce"]),
            "mk": lambda: str(_table_family_digits().set_index("row").loc["cnn2gnn [graph=batch, k=0]", "vs_ce"])}),
    Figure("docs/cnn2gnn.md", "The batch graph at k = 10 is level with the GNN alone (+{g152}, p {p152} from "
                              "ResNet-152; +{g18}, p {p18} from ResNet-18)",
           {"g152": lambda: f"{mean(DIGITS, GNN152, 'cnn2gnn [graph=batch, k=10]') - mean(DIGITS, GNN152, 'ce'):.2f}",
            "p152": lambda: p_text(_cell(DIGITS, GNN152, "cnn2gnn [graph=batch, k=10]")["p_vs_ce"]),
            "g18": lambda: f"{mean(DIGITS, GNN18, 'cnn2gnn [graph=batch, k=10]') - mean(DIGITS, GNN18, 'ce'):.2f}",
            "p18": lambda: p_text(_cell(DIGITS, GNN18, "cnn2gnn [graph=batch, k=10]")["p_vs_ce"])}),
    Figure("docs/cnn2gnn.md", "the anchor graph sits {ga} points below it (p {pa}), the batch graph {gb} below "
                              "(p {pb})",
           {"ga": lambda: f"{digits_vs_k0('anchor', 10)[0]:.2f}", "pa": lambda: p_text(digits_vs_k0("anchor", 10)[1]),
            "gb": lambda: f"{digits_vs_k0('batch', 10)[0]:.2f}", "pb": lambda: p_text(digits_vs_k0("batch", 10)[1])}),
    Figure("docs/cnn2gnn.md", "Distillation matters for the GNN ({ce} → {lo}–{hi} with the ResNet-152 teacher)",
           {"ce": lambda: f1(mean(DIGITS, GNN152, "ce")),
            "lo": lambda: f1(mean(DIGITS, GNN152, "cnn2gnn [graph=anchor, k=10]")),
            "hi": lambda: f1(mean(DIGITS, GNN152, "cnn2gnn [graph=batch, k=0]"))}),
    Figure("docs/cnn2gnn.md", "the ResNet-18 zoo teacher trained on the whole training split ({t} % top-1 at "
                              "results version 5)", {"t": lambda: teacher(HARD, GNN18)}),
    Figure("docs/cnn2gnn.md", "trained on a stratified 10 % of it for {epochs} epochs in batches of {bs}",
           {"epochs": lambda: settings(HARD, "gnn2", "recipe_params", "epochs"),
            "bs": lambda: settings(HARD, "gnn2", "recipe_params", "batch_size")}),
    Figure("docs/cnn2gnn.md", "CNN2GNN's loss at its defaults (w_ce {w_ce}, w_kd {w_kd}, T {t})",
           {"w_ce": lambda: settings(HARD, "gnn2", "method_params", "w_ce", "cnn2gnn"),
            "w_kd": lambda: settings(HARD, "gnn2", "method_params", "w_kd", "cnn2gnn"),
            "t": lambda: f"{float(settings(HARD, 'gnn2', 'method_params', 'temperature', 'cnn2gnn')):g}"}),
    Figure("docs/cnn2gnn.md", "{n} runs, {seeds} seeds each, one thread per run",
           {"n": lambda: count(recipe=HARD, student="gnn2", method="cnn2gnn") + count(recipe=HARD, student="gnn2",
                                                                                       method="ce"),
            "seeds": lambda: len(ce_hard())}),
    _graph_row("student", "batch", "student's features | batch ‡"),
    _graph_row("student", "anchor", "student's features | anchor"),
    _graph_row("student", "memory", "student's features | memory"),
    _graph_row("teacher", "batch", "teacher's features § | batch ‡"),
    _graph_row("teacher", "memory", "teacher's features § | memory"),
    Figure("docs/cnn2gnn.md", "The GNN alone (ce, its default batch graph ‡): {a}.",
           {"a": lambda: cell(HARD, GNN18, "ce")}),
    Figure("docs/cnn2gnn.md", "lifts the GNN from {ce} (alone) to {k0} with no graph at all (p = {p})",
           {"ce": lambda: f"{mean(HARD, GNN18, 'ce'):.2f}", "k0": lambda: f"{k0():.2f}",
            "p": lambda: p_text(paired_p(graph_seeds("student", "batch", 0), ce_hard())[0])}),
    Figure("docs/cnn2gnn.md", "makes it worse in every mode and at every k, by {lo}–{hi} points",
           {"lo": lambda: f1(min(gaps(STUDENT_GRAPHS))), "hi": lambda: f1(max(gaps(STUDENT_GRAPHS)))}),
    Figure("docs/cnn2gnn.md", "beyond seed noise in {n} of the {m} cells (paired p < 0.05; {nh} of {m} after Holm's "
                              "correction across the {m}; the exception is the anchor graph at k = 10, {g} points "
                              "below, p {p})",
           {"n": lambda: sum(p < 0.05 for p in student_graph_ps()), "m": lambda: len(STUDENT_GRAPHS),
            "nh": lambda: sum(p < 0.05 for p in holm(student_graph_ps())),
            "g": lambda: f1(gaps([("student", "anchor", 10)])[0]), "p": lambda: graph_p("student", "anchor", 10)}),
    Figure("docs/cnn2gnn.md", "(batch {blo}–{bhi}, memory {mlo}–{mhi}: back to about the GNN alone's {ce}, as if the "
                              "teacher had not been there), the anchor graph the least ({alo}–{ahi})",
           {f"{g[0]}{end}": (lambda g=g, fn=fn: f"{fn(graph_mean('student', g, k) for k in (5, 10, 20)):.2f}")
            for g in ("batch", "memory", "anchor") for end, fn in (("lo", min), ("hi", max))}
           | {"ce": lambda: f"{mean(HARD, GNN18, 'ce'):.2f}"}),
    Figure("docs/cnn2gnn.md", "the GNN reaches {lo}–{hi} (k 5–20), {glo}–{ghi} points above k = 0",
           {"lo": lambda: f"{min(graph_mean(*c) for c in TEACHER_MEMORY):.2f}",
            "hi": lambda: f"{max(graph_mean(*c) for c in TEACHER_MEMORY):.2f}",
            "glo": lambda: f1(-max(gaps(TEACHER_MEMORY))), "ghi": lambda: f1(-min(gaps(TEACHER_MEMORY)))}),
    Figure("docs/cnn2gnn.md", "at k = 20 it is level with the best CNN student distilled from the same teacher on the "
                              "same setting ({m} on `cifar_resnet8`, {a}), at k = 5–10 below it",
           {"m": lambda: best_cnn_student()["row"],
            "a": lambda: f"{best_cnn_student()['mean']:.2f} ± {best_cnn_student()['std']:.2f}"}),
    Figure("docs/cnn2gnn.md", "beyond seed noise {where} (at results version 3",
           {"where": lambda: beyond_noise_ks([float(graph_p("teacher", "batch", k).lstrip("< "))
                                              for k in (5, 10, 20)])}),
    Figure("docs/cnn2gnn.md", "the graph helps a little ({lo}–{hi}, +{glo} to +{ghi}, paired p {plo}–{phi})",
           {"lo": lambda: f1(min(graph_mean(*c) for c in TEACHER_BATCH)),
            "hi": lambda: f1(max(graph_mean(*c) for c in TEACHER_BATCH)),
            "glo": lambda: f1(-max(gaps(TEACHER_BATCH))), "ghi": lambda: f1(-min(gaps(TEACHER_BATCH))),
            "plo": lambda: min((graph_p("teacher", "batch", k) for k in (5, 10, 20)), key=float),
            "phi": lambda: max((graph_p("teacher", "batch", k) for k in (5, 10, 20)), key=float)}),
    # docs/benchmark.md: the chosen setting, the sweep as run.
    Figure("docs/benchmark.md", "the student alone ({ce}) is level with its teacher ({t})",
           {"ce": lambda: cell(DIGITS, "resnet18 → resnet18", "ce"),
            "t": lambda: teacher(DIGITS, "resnet18 → resnet18")}),
    Figure("docs/benchmark.md", "the fixed stratified {train:,} / {test} split",
           {"train": lambda: num_train(DIGITS), "test": lambda: int(runs()["data.num_test"].iloc[0])}),
    Figure("docs/benchmark.md", "10 epochs, the **full** training split ({t} % top-1 at results version 5)",
           {"t": lambda: teacher(HARD, R8)}),
    Figure("docs/benchmark.md", "{n} of {full:,} images, the same images for every run",
           {"n": lambda: num_train(HARD), "full": lambda: num_train(DIGITS)}),
    Figure("docs/benchmark.md", "(SGD + Nesterov, lr {lr}, {schedule}, {augment}; its {w10} warm-up epoch of {e10} "
                                "scales with `--epochs` to {warmup} warm-up epochs) for **{epochs}** epochs in "
                                "batches of **{batch_size}**",
           {k: (lambda k=k: settings(HARD, "cifar_resnet8", "recipe_params", k))
            for k in ("lr", "schedule", "augment", "epochs", "batch_size")}
           | {"warmup": lambda: settings(HARD, "cifar_resnet8", "recipe_params", "warmup_epochs"),
              "w10": lambda: settings(DIGITS, "resnet18", "recipe_params", "warmup_epochs", "kd"),
              "e10": lambda: settings(DIGITS, "resnet18", "recipe_params", "epochs", "kd")}),
    Figure("docs/benchmark.md", "the student alone (`ce`) and the {n} distillation methods that take this pair",
           {"n": lambda: len(HARD_METHODS)}),
    Figure("docs/benchmark.md", "teacher {t}, student alone {ce} ({n} seeds): **teacher − ce = {gap}** points",
           {"t": lambda: teacher(HARD, R8), "ce": lambda: cell(HARD, R8, "ce"),
            "n": lambda: int(_cell(HARD, R8, "ce")["n"]),
            "gap": lambda: f"{float(teacher(HARD, R8)) - mean(HARD, R8, 'ce'):.2f}"}),
    Figure("docs/benchmark.md", "The {n} runs of the sweep (`embedded-hard.yaml`: the {m} distillation methods that "
                                "take this pair and ce, {s} seeds)",
           {"n": lambda: hard_cnn_runs(control=False), "m": lambda: len(HARD_METHODS),
            "s": lambda: int(_cell(HARD, R8, "ce")["n"])}),
    Figure("docs/benchmark.md", "The information-matched control's {c} runs",
           {"c": lambda: hard_cnn_runs(control=True)}),
    Figure("docs/benchmark.md", "The CNN2GNN ablation on this setting ({n} GNN runs)",
           {"n": lambda: count(recipe=HARD, student="gnn2")}),
    Figure("docs/benchmark.md", "# {n} cnn2gnn + {ce} GNN-alone runs",
           {"n": lambda: count(recipe=HARD, student="gnn2", method="cnn2gnn")
            - 5 * len(TEACHER_BATCH + TEACHER_MEMORY), "ce": lambda: count(recipe=HARD, student="gnn2", method="ce")}),
    Figure("docs/benchmark.md", "# {n} cnn2gnn runs",
           {"n": lambda: 5 * len(TEACHER_BATCH + TEACHER_MEMORY)}),
    Figure("docs/benchmark.md", "| teacher (ResNet-18) | {t} | | ce (cifar_resnet8 alone) | {ce} | |",
           {"t": lambda: teacher(HARD, R8), "ce": lambda: cell(HARD, R8, "ce")}),
    *[Figure("docs/benchmark.md", f"| {m} | {{a}} | {{ma}} |",
             {"a": lambda m=m: bold_if_best(m, cell(HARD, R8, m)), "ma": lambda m=m: the_mark(HARD, R8, m)})
      for m in HARD_METHODS],
    Figure("docs/benchmark.md", "{n} of the twenty distillation methods lift the student beyond seed noise after "
                                "Holm's correction across the table's {m} comparisons (this column's {mc} and the "
                                "information-matched control's {mctl}), by {lo} ({lrow}) to {hi} points ({hrow}); "
                                "{nu} more are above it at p < 0.05 before the correction only (↑)",
           {"n": lambda: NUMBER_WORDS[len(with_mark("⇑"))], "m": lambda: family_m(HARD, R8),
            "mc": lambda: len(HARD_METHODS), "mctl": lambda: family_m(HARD, R8) - len(HARD_METHODS),
            "lo": lambda: f1(min(gain(R8, m) for m in with_mark("⇑"))),
            "lrow": lambda: min(with_mark("⇑"), key=lambda m: gain(R8, m)),
            "hi": lambda: f1(max(gain(R8, m) for m in with_mark("⇑"))),
            "hrow": lambda: max(with_mark("⇑"), key=lambda m: gain(R8, m)),
            "nu": lambda: NUMBER_WORDS[len(with_mark("↑"))]}),
    Figure("docs/benchmark.md", "(hkd+kd, crd+kd, kd: {lo}–{hi}, level with each other within their spreads)",
           {"lo": lambda: f1(min(mean(HARD, R8, m) for m in ("hkd+kd", "crd+kd", "kd"))),
            "hi": lambda: f1(max(mean(HARD, R8, m) for m in ("hkd+kd", "crd+kd", "kd")))}),
    Figure("docs/benchmark.md", "{n} sit below the student alone beyond noise — {below} — every one a feature-map "
                                "method at a weight set for CIFAR's 32 px maps — and {weak} without KD below it "
                                "before the correction only",
           {"n": lambda: NUMBER_WORDS[len(with_mark("⇓"))].capitalize(),
            "below": lambda: spoken(sorted(with_mark("⇓"), key=lambda m: mean(HARD, R8, m))),
            "weak": lambda: spoken(with_mark("↓"))}),
    Figure("docs/benchmark.md", "beyond seed noise after Holm's correction across the table's {m} comparisons",
           {"m": lambda: family_m(HARD, R8)}),
    Figure("docs/benchmark.md", "here {lo} ({lrow}) to {hi} ({hrow}) points in the full-data teacher's column at "
                                "α/{m}: kd's {kd} clears its {kmdd}; sp's {sp} is well below its {smdd}",
           {"lo": lambda: f"{mdd_range(HARD, R8)[0]:.2f}", "hi": lambda: f"{mdd_range(HARD, R8)[1]:.2f}",
            "lrow": lambda: mdd_range(HARD, R8)[2], "hrow": lambda: mdd_range(HARD, R8)[3],
            "m": lambda: family_m(HARD, R8), "kd": lambda: delta(HARD, R8, "kd"),
            "kmdd": lambda: f"{_cell(HARD, R8, 'kd')['mdd']:.2f}", "sp": lambda: delta(HARD, R8, "sp"),
            "smdd": lambda: f"{_cell(HARD, R8, 'sp')['mdd']:.2f}"}),
    Figure("docs/benchmark.md", "one image is {img} points",
           {"img": lambda: f"{100 / int(_cell(HARD, R8, 'ce')['num_test']):.2f}"}),
    Figure("docs/benchmark.md", "the teacher already in the zoo; {t} s of training per run, median.",
           {"t": lambda: f1(float(runs().loc[main_runs(), "timing.train_s"].median()))}),
    # docs/benchmark.md: the information-matched control beside the full-data teacher.
    Figure("docs/benchmark.md", "| teacher (ResNet-18) | {t} | {tc} |",
           {"t": lambda: teacher(HARD, R8), "tc": lambda: teacher(HARD, R8 + CONTROL)}),
    *[Figure("docs/benchmark.md", f"| {m} | {{a}}{{ma}} | {{c}}{{mc}} |",
             {"a": lambda m=m: cell(HARD, R8, m), "ma": lambda m=m: _spaced(the_mark(HARD, R8, m)),
              "c": lambda m=m: cell(HARD, R8 + CONTROL, m), "mc": lambda m=m: _spaced(the_mark(HARD, R8 + CONTROL, m))})
      for m in ("kd", "crd+kd", "hkd+kd", "dkd")],
    Figure("docs/benchmark.md", "Results version 5, 5 seeds, top-1 % at the last epoch, marks against the student "
                                "alone ({ce}) as above", {"ce": lambda: cell(HARD, R8 + CONTROL, "ce")}),
    Figure("docs/benchmark.md", "The control teacher is itself no better than the student alone ({tc} against {ce}), "
                                "yet kd, crd+kd and hkd+kd distilled from it still end {glo}–{ghi} points above the "
                                "student alone — kd and crd+kd at p {pk} and {pc} before Holm's correction, not after "
                                "it, hkd+kd at p {ph} — where the full-data teacher gives +{fk}, +{fc} and +{fh}, all "
                                "beyond noise",
           {"tc": lambda: teacher(HARD, R8 + CONTROL), "ce": lambda: f"{mean(HARD, R8, 'ce'):.2f}",
            "glo": lambda: f1(min(gain(R8 + CONTROL, m) for m in ("kd", "crd+kd", "hkd+kd"))),
            "ghi": lambda: f1(max(gain(R8 + CONTROL, m) for m in ("kd", "crd+kd", "hkd+kd"))),
            "pk": lambda: f"{_cell(HARD, R8 + CONTROL, 'kd')['p_paired']:.2g}",
            "pc": lambda: f"{_cell(HARD, R8 + CONTROL, 'crd+kd')['p_paired']:.2g}",
            "ph": lambda: f"{_cell(HARD, R8 + CONTROL, 'hkd+kd')['p_paired']:.2g}",
            "fk": lambda: f1(gain(R8, "kd")), "fc": lambda: f1(gain(R8, "crd+kd")),
            "fh": lambda: f1(gain(R8, "hkd+kd"))}),
    Figure("docs/benchmark.md", "The part of kd's gain the control keeps is {k} (a percentile bootstrap over the 5 "
                                "seeds, resampling each seed's three runs together: {ki}); crd+kd's {c} {ci}, hkd+kd's "
                                "{h} {hi}",
           {"k": lambda: f"{kept('kd')[0]:.2f}", "ki": lambda: bracket2(kept("kd")[1:]),
            "c": lambda: f"{kept('crd+kd')[0]:.2f}", "ci": lambda: bracket2(kept("crd+kd")[1:]),
            "h": lambda: f"{kept('hkd+kd')[0]:.2f}", "hi": lambda: bracket2(kept("hkd+kd")[1:])}),
    Figure("docs/benchmark.md", "and another accuracy ({tc} against {t})",
           {"tc": lambda: teacher(HARD, R8 + CONTROL), "t": lambda: teacher(HARD, R8)}),
    Figure("docs/benchmark.md", "DKD turns negative with the weak teacher (−{d} points, p {p} before Holm's "
                                "correction)",
           {"d": lambda: f1(-gain(R8 + CONTROL, "dkd")),
            "p": lambda: f"{_cell(HARD, R8 + CONTROL, 'dkd')['p_paired']:.2g}"}),
    Figure("docs/benchmark.md", "({n} test images: ±{se} points at the teacher's {t};",
           {"n": lambda: int(_cell(HARD, R8, "teacher")["num_test"]),
            "se": lambda: f"{_cell(HARD, R8, 'teacher')['binomial_se']:.2f}", "t": lambda: teacher(HARD, R8)}),
    # docs/benchmark.md: the other teachers of the same student (results/embedded-hard-pairs.md).
    Figure("docs/benchmark.md", "reaches {t} % top-1 ({n} test images). {k} methods take it",
           {"t": lambda: f"{pcell(VIT, 'teacher')['mean']:.2f}", "n": lambda: int(pcell(VIT, "teacher")["num_test"]),
            "k": lambda: len(pmethods(VIT))}),
    *[Figure("docs/benchmark.md", f"| {m} | {{v}}{{mv}} | {{r}}{{mr}} |",
             {"v": lambda m=m: f"{pcell(VIT, m)['mean']:.2f} ± {pcell(VIT, m)['std']:.2f}",
              "mv": lambda m=m: _spaced(str(pcell(VIT, m)["vs_ce"]) if pcell(VIT, m)["vs_ce"] == pcell(VIT, m)["vs_ce"]
                                        else ""),
              "r": lambda m=m: cell(HARD, R8, m), "mr": lambda m=m: _spaced(the_mark(HARD, R8, m))})
      for m in ("hkd+kd", "rkd", "crd+kd", "kd", "ctkd", "dkd", "crd", "hkd", "dist", "ofa", "cc", "pkt", "vid",
                "fitnet", "nst", "sp", "at")],
    Figure("docs/benchmark.md", "{up} lift the student beyond noise after Holm's correction across the column's {m} "
                                "comparisons, by as much as from the CNN teacher (kd {kv} against {kr})",
           {"up": lambda: spoken(pmethods(VIT, "⇑")), "m": lambda: int(pcell(VIT, "kd")["family_m"]),
            "kv": lambda: pgain(VIT, "kd"), "kr": lambda: f"{gain(R8, 'kd'):+.1f}"}),
    Figure("docs/benchmark.md", "{down} fall below the student alone beyond noise (at to {at}, ft to {ft})",
           {"down": lambda: spoken(pmethods(VIT, "⇓")), "at": lambda: f"{pcell(VIT, 'at')['mean']:.2f}",
            "ft": lambda: f"{pcell(VIT, 'ft')['mean']:.2f}"}),
    Figure("docs/benchmark.md", "The two teachers have the same accuracy ({v} and {r} %)",
           {"v": lambda: f"{pcell(VIT, 'teacher')['mean']:.2f}", "r": lambda: teacher(HARD, R8)}),
    Figure("docs/benchmark.md", "pkt, which gains {pr} from the CNN teacher, gains nothing from the ViT ({pv})",
           {"pr": lambda: f"{gain(R8, 'pkt'):+.1f}", "pv": lambda: pgain(VIT, "pkt")}),
    Figure("docs/benchmark.md", "OFA, the method built for heterogeneous pairs, is at {o} ({og}, within noise)",
           {"o": lambda: f"{pcell(VIT, 'ofa')['mean']:.2f} ± {pcell(VIT, 'ofa')['std']:.2f}",
            "og": lambda: pgain(VIT, "ofa")}),
    Figure("docs/benchmark.md", "cifar_resnet56 ({t} % top-1, the embedded teacher's recipe): kd {kd} ({kg}, "
                                "within noise over the column's {m} comparisons), kdsvd {sv} ({sg}, within noise), "
                                "and fsp {fsp} and ft {ft}, far below the student alone",
           {"t": lambda: f"{pcell(C56, 'teacher')['mean']:.2f}",
            "kd": lambda: f"{pcell(C56, 'kd')['mean']:.2f} ± {pcell(C56, 'kd')['std']:.2f}",
            "kg": lambda: pgain(C56, "kd"), "m": lambda: int(pcell(C56, "kd")["family_m"]),
            "sv": lambda: f"{pcell(C56, 'kdsvd')['mean']:.2f} ± {pcell(C56, 'kdsvd')['std']:.2f}",
            "sg": lambda: pgain(C56, "kdsvd"),
            "fsp": lambda: f"{pcell(C56, 'fsp')['mean']:.2f} ± {pcell(C56, 'fsp')['std']:.2f}",
            "ft": lambda: f"{pcell(C56, 'ft')['mean']:.2f} ± {pcell(C56, 'ft')['std']:.2f}"}),
    # docs/benchmark.md: the variants (results/embedded-hard-variants.md).
    *[Figure("docs/benchmark.md", "{line}", {"line": lambda m=m: weight_line(m)}) for m in WEIGHTS],
    Figure("docs/benchmark.md", "{n} of the {m} cells below the published weights is above the student alone, even "
                                "before Holm's correction",
           {"n": lambda: NUMBER_WORDS[sum(int(weight_board(m)["vs_ce"].isin(["⇑", "↑"]).sum())
                                          for m in WEIGHTS)].capitalize(),
            "m": lambda: sum(len(WEIGHTS[m][1]) - 1 for m in WEIGHTS)}),
    Figure("docs/benchmark.md", "at from {a0} at its published 1000 to {a1} at 15.625 and {a2} at 3.9",
           {"a0": lambda: f"{weight_mean('at', 1000):.2f}", "a1": lambda: f"{weight_mean('at', 15.625):.2f}",
            "a2": lambda: f"{weight_mean('at', 3.90625):.2f}"}),
    Figure("docs/benchmark.md", "fitnet from {f0} at 100 to {f1} at 3",
           {"f0": lambda: f"{weight_mean('fitnet', 100):.2f}", "f1": lambda: f"{weight_mean('fitnet', 3):.2f}"}),
    Figure("docs/benchmark.md", "crd without KD stays at {c0}–{c1} from 0.8 down to 0.2 and reaches {c2} only at 0.1",
           {"c0": lambda: f"{min(weight_mean('crd', v) for v in (0.8, 0.4, 0.2)):.2f}",
            "c1": lambda: f"{max(weight_mean('crd', v) for v in (0.8, 0.4, 0.2)):.2f}",
            "c2": lambda: f"{weight_mean('crd', 0.1):.2f}"}),
    Figure("docs/benchmark.md", "nst from {n0} to {n1} and ofd from {o0} to {o1} at their lowest",
           {"n0": lambda: f"{weight_mean('nst', 50):.2f}", "n1": lambda: f"{weight_mean('nst', 0.78125):.2f}",
            "o0": lambda: f"{weight_mean('ofd', 0.001):.2f}", "o1": lambda: f"{weight_mean('ofd', 1.5625e-5):.2f}"}),
    Figure("docs/benchmark.md", "{still} stay more than a point below the student alone at every weight swept "
                                "({lows})",
           {"still": lambda: spoken([m for m in WEIGHTS
                                     if max(weight_mean(m, v) for v in WEIGHTS[m][1]) < mean(HARD, R8, "ce") - 1]),
            "lows": lambda: ", ".join(f"{m} {weight_mean(m, WEIGHTS[m][1][-1]):.2f}" for m in ("ab", "ft", "fsp"))}),
    Figure("docs/benchmark.md", "a pre-stage that takes the first {e} of the {n} epochs",
           {"e": lambda: settings(HARD, "cifar_resnet8", "method_params", "init_epochs", "ft"),
            "n": lambda: settings(HARD, "cifar_resnet8", "recipe_params", "epochs", "ft")}),
    *[Figure("docs/benchmark.md", f"| {m} | {{a}} | {{b}} | {{d}} | {{p}} |",
             {"a": lambda m=m: f"{ls_change(m)[0]:.2f}", "b": lambda m=m: f"{ls_change(m)[1]:.2f}",
              "d": lambda m=m: signed1(ls_change(m)[2]), "p": lambda m=m: p_text(ls_change(m)[3])})
      for m in ("dist", "dkd", "hkd+kd", "kd", "crd+kd", "ctkd")],
    Figure("docs/benchmark.md", "It helps {up} beyond noise and {upn} within it, and costs {down} beyond noise "
                                "({downn} within it)",
           {"up": lambda: spoken(ls_class(True, True)), "upn": lambda: spoken(ls_class(True, False)),
            "down": lambda: spoken(ls_class(False, True)), "downn": lambda: spoken(ls_class(False, False))}),
    *[Figure("docs/benchmark.md", f"| {m} + DOT | {{a}} | {{b}} | {{d}} | {{p}} |",
             {"a": lambda m=m: f"{dot_change(m)[0]:.2f}", "b": lambda m=m: f"{dot_change(m)[1]:.2f}",
              "d": lambda m=m: signed1(dot_change(m)[2]), "p": lambda m=m: p_text(dot_change(m)[3])})
      for m in ("kd", "dkd")],
    # docs/benchmark.md: the nested design (results/embedded-hard-variance.md).
    Figure("docs/benchmark.md", "zoo teacher seeds 0, 1, 2 (the ResNet-18 at {a}, {b} and {c} % top-1)",
           {"a": lambda: teacher_seed_top1()[0], "b": lambda: teacher_seed_top1()[1],
            "c": lambda: teacher_seed_top1()[2]}),
    *[Figure("docs/benchmark.md", "{line}", {"line": lambda m=m: variance_line(m)}) for m in NESTED_METHODS],
    Figure("docs/benchmark.md", "the student seed holds the largest share for every method ({lo}–{hi} %), the "
                                "teacher seed and the subset draw little or none (at most {mx} %, {mxr})",
           {"lo": lambda: f"{variance_board()['share_seed'].min() * 100:.0f}",
            "hi": lambda: f"{variance_board()['share_seed'].max() * 100:.0f}",
            "mx": lambda: f"{variance_board()[['share_teacher', 'share_draw']].max(axis=1).max() * 100:.0f}",
            "mxr": lambda: variance_board()[["share_teacher", "share_draw"]].max(axis=1).idxmax()}),
    Figure("docs/benchmark.md", "kd, crd+kd and hkd+kd gain {lo} to {hi} points over the student alone",
           {"lo": lambda: f"{min(variance_board().loc[m, 'diff'] for m in ('kd', 'crd+kd', 'hkd+kd')):+.1f}",
            "hi": lambda: f"{max(variance_board().loc[m, 'diff'] for m in ('kd', 'crd+kd', 'hkd+kd')):+.1f}"}),
    Figure("README.md", "the logit-space and embedding methods carry across the architecture gap ({up} lift the "
                        "student beyond noise), the feature-map methods do not ({down} fall below the student alone)",
           {"up": lambda: spoken(sorted(pmethods(VIT, "⇑"), key=["kd", "ctkd", "rkd", "hkd+kd"].index)),
            "down": lambda: spoken(sorted(pmethods(VIT, "⇓"), key=["at", "ft", "sp", "nst", "fitnet"].index))}),
    Figure("README.md", "and ofa is {rel} the student alone there",
           {"rel": lambda: {"⇑": "above", "⇓": "below"}.get(str(pcell(VIT, "ofa")["vs_ce"]), "level with")}),
    # docs/benchmark.md: what the regeneration ran.
    Figure("docs/benchmark.md", "{n} runs and 7 zoo teachers in 65 minutes of wall time",
           {"n": lambda: int((runs()["status"] == "completed").sum())}),
    Figure("docs/benchmark.md", "(a kdsvd run trains {a} s, a kd run {b} s, median)",
           {"a": lambda: f"{digits_train_s('kdsvd'):.0f}", "b": lambda: f"{digits_train_s('kd'):.0f}"}),
    # README: the reference leaderboard's prose and its embedded-hard summary (numbers; the marks of the README's
    # copies of the tables are the tables', which results/regenerate.sh rewrites).
    Figure("README.md", "| teacher (ResNet-18, all labels) | {t} | | | ce (student alone, 10 % of labels) | {ce} | | |",
           {"t": lambda: teacher(HARD, R8), "ce": lambda: cell(HARD, R8, "ce", n=True)}),
    Figure("README.md", "at {p} % on its {n} images one figure is ±{se} points (binomial standard error; Wilson 95 % "
                        "interval [{lo}, {hi}] at the student alone's {ce}), and one image is {img} points",
           {"p": lambda: f"{mean(HARD, R8, 'ce'):.0f}", "n": lambda: int(_cell(HARD, R8, "ce")["num_test"]),
            "se": lambda: f"{_cell(HARD, R8, 'ce')['binomial_se']:.2f}",
            "lo": lambda: f"{_cell(HARD, R8, 'ce')['wilson_lo']:.2f}",
            "hi": lambda: f"{_cell(HARD, R8, 'ce')['wilson_hi']:.2f}", "ce": lambda: f"{mean(HARD, R8, 'ce'):.2f}",
            "img": lambda: f"{100 / int(_cell(HARD, R8, 'ce')['num_test']):.2f}"}),
    *[Figure("README.md", f"| {m} | {{a}} | {{ma}} | {{d}} |",
             {"a": lambda m=m: bold_if_best(m, cell(HARD, R8, m, n=True)), "ma": lambda m=m: the_mark(HARD, R8, m),
              "d": lambda m=m: delta(HARD, R8, m)})
      for m in HARD_METHODS],
    Figure("README.md", "after Holm's correction across the table's {m} comparisons",
           {"m": lambda: family_m(HARD, R8)}),
    Figure("README.md", "(paired t-test by seed; post-hoc, at the family's α/{m} and 80 % power, the seeds "
                        "resolve {lo}–{hi} points in this column, per comparison). {n} of the twenty methods lift the "
                        "student beyond noise, those with a soft-label KD term most (hkd+kd, crd+kd, kd: +{lo3} to "
                        "+{hi3} points); {nb} feature-map methods at their CIFAR-100 weights ({below}) sit below it "
                        "beyond noise",
           {"m": lambda: family_m(HARD, R8), "lo": lambda: f"{mdd_range(HARD, R8)[0]:.2f}",
            "hi": lambda: f"{mdd_range(HARD, R8)[1]:.2f}",
            "n": lambda: NUMBER_WORDS[len(with_mark("⇑"))].capitalize(),
            "lo3": lambda: f1(min(gain(R8, m) for m in ("hkd+kd", "crd+kd", "kd"))),
            "hi3": lambda: f1(max(gain(R8, m) for m in ("hkd+kd", "crd+kd", "kd"))),
            "nb": lambda: NUMBER_WORDS[len(with_mark("⇓"))],
            "below": lambda: ", ".join(sorted(with_mark("⇓"), key=lambda m: mean(HARD, R8, m)))}),
    Figure("README.md", "(a teacher trained on the student's own 142 images, {tc} %) keeps less than half of kd's gain "
                        "(+{g} of +{gf}: the share {k}, bootstrap 95 % interval {ki})",
           {"tc": lambda: teacher(HARD, R8 + CONTROL), "g": lambda: f1(gain(R8 + CONTROL, "kd")),
            "gf": lambda: f1(gain(R8, "kd")), "k": lambda: f"{kept('kd')[0]:.2f}",
            "ki": lambda: bracket2(kept("kd")[1:])}),
    Figure("README.md", "ResNet-18…152 alone reach {lo}–{hi} with no order by depth",
           {"lo": lambda: f1(min(ladder_cnns(HARD).values())), "hi": lambda: f1(max(ladder_cnns(HARD).values()))}),
    Figure("README.md", "the CRD codebase's `cifar_resnet8` {a} (5 seeds), the GNN alone {b} (5)",
           {"a": lambda: cell(HARD, R8, "ce"), "b": lambda: cell(HARD, GNN18, "ce")}),
    Figure("README.md", "ResNet-18 alone ({ce} %) is level with its own teacher ({t} %)",
           {"ce": lambda: f"{mean(DIGITS, 'resnet18 → resnet18', 'ce'):.2f}",
            "t": lambda: teacher(DIGITS, "resnet18 → resnet18")}),
    Figure("README.md", "and no method moves it beyond noise: {below} below it and {above} above it at p < 0.05 "
                        "(paired, 3 seeds), and {holm} differs after Holm's correction across the column's {m} tests; "
                        "post-hoc, at α/{m} and 80 % power, three seeds resolve only differences of {lo}–{hi} points",
           {"below": lambda: spoken(marked(DIGITS, "resnet18 → resnet18", "↓")) + (
               " are" if len(marked(DIGITS, "resnet18 → resnet18", "↓")) > 1 else " is"),
            "above": lambda: spoken(marked(DIGITS, "resnet18 → resnet18", "↑")),
            "holm": lambda: ", ".join(marked(DIGITS, "resnet18 → resnet18", "⇑⇓")) or "none",
            "m": lambda: family_m(DIGITS, "resnet18 → resnet18"),
            "lo": lambda: f"{mdd_range(DIGITS, 'resnet18 → resnet18')[0]:.2f}",
            "hi": lambda: f"{mdd_range(DIGITS, 'resnet18 → resnet18')[1]:.2f}"}),
    Figure("README.md", "from {ce} % alone to {a} % (anchor graph) and {b} % (k = 0, no graph)",
           {"ce": lambda: f1(mean(DIGITS, GNN152, "ce")),
            "a": lambda: f1(mean(DIGITS, GNN152, "cnn2gnn [graph=anchor, k=10]")),
            "b": lambda: f1(mean(DIGITS, GNN152, "cnn2gnn [graph=batch, k=0]"))}),
    Figure("README.md", "({a} % from ResNet-152, {b} % from ResNet-18",
           {"a": lambda: f1(mean(DIGITS, GNN152, "cnn2gnn [graph=batch, k=10]")),
            "b": lambda: f1(mean(DIGITS, GNN18, "cnn2gnn [graph=batch, k=10]"))}),
]


# What may stand where a figure stands, for telling a moved number from a reworded passage: a number (with its
# ± std and seed count, or a p-value as `< 1e-4`), else any word or mark.
FIGURE_PATTERN = r"((?:< )?[-+−]?[\d.,]+(?:e-?\d+)?(?: ± [\d.]+)?(?: \(\d+\))?|[^\s|()]*)"


def _collapsed(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def _id(figure: Figure) -> str:
    return f"{figure.doc}: {figure.text[:50]}"


@pytest.mark.parametrize("figure", FIGURES, ids=_id)
def test_a_quoted_figure_is_what_the_records_say(figure: Figure) -> None:
    doc = _collapsed((ROOT / figure.doc).read_text())
    expected = _collapsed(figure.expected())
    if expected in doc:
        return
    # Tell a moved number from a reworded passage: the passage with any figure in each `{name}`.
    pattern = re.escape(_collapsed(figure.text))
    for name in figure.values:
        pattern = pattern.replace(re.escape("{" + name + "}"), FIGURE_PATTERN, 1)
    found = re.search(pattern, doc)
    if found:
        pytest.fail(f"{figure.doc} says {found.group(0)!r}; the records say {expected!r}")
    pytest.fail(f"{figure.doc} no longer has the passage {figure.text!r} (expected {expected!r}): if the doc "
                "was reworded, update this entry of FIGURES")


def test_every_query_reads_the_committed_records() -> None:
    """The records are there and current: a query that silently found nothing would make the table above vacuous."""
    df = runs()
    assert len(df) > 100 and not df["data.num_test"].isna().any()
    assert not math.isnan(mean(HARD, R8, "ce"))
