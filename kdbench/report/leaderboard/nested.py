"""The arithmetic of the `variance` table: a nested random-effects ANOVA by the method of moments, and a cluster
bootstrap of a mean over the same nesting.

The design (issue #38.4): teacher seeds t = 1..a; within teacher t, subset draws d = 1..b_t; within draw (t, d),
student seeds s = 1..n_td (N = Σ n_td values in all, B = Σ b_t draw cells). The model is

    y_tds = μ + T_t + D_td + e_tds,   T ~ (0, σ²_T), D ~ (0, σ²_D), e ~ (0, σ²_e), independent,

with the sums of squares about the teacher means ȳ_t, the draw means ȳ_td and the grand mean ȳ (of all N values):

    SS_T = Σ_t n_t (ȳ_t − ȳ)²,  df_T = a − 1           (n_t = Σ_d n_td)
    SS_D = Σ_td n_td (ȳ_td − ȳ_t)²,  df_D = B − a
    SS_e = Σ_tds (y_tds − ȳ_td)²,  df_e = N − B

and the mean squares MS = SS / df. Their expectations (Searle, Casella & McCulloch 1992, §3.6; Sokal & Rohlf,
Biometry, §10.3, for unequal sizes) are

    E[MS_e] = σ²_e
    E[MS_D] = σ²_e + k1 σ²_D,                 k1 = (N − Σ_t Σ_d n_td² / n_t) / (B − a)
    E[MS_T] = σ²_e + k2 σ²_D + k3 σ²_T,       k2 = (Σ_t Σ_d n_td² / n_t − Σ_td n_td² / N) / (a − 1)
                                              k3 = (N − Σ_t n_t² / N) / (a − 1)

(balanced, n_td = n and b_t = b: k1 = k2 = n, k3 = b n). Solving for the components:

    σ²_e = MS_e,   σ²_D = (MS_D − MS_e) / k1,   σ²_T = (MS_T − MS_e − k2 σ²_D) / k3

with the unclipped σ²_D, then each component clipped at 0 (a negative moment estimate means "no evidence of that
source", not a negative variance). A level with a single unit (one teacher: df_T = 0; one draw per teacher; one
seed per draw) has no component: NaN. Each component's share is its clipped value over the sum of the clipped
components that exist.

The bootstrap (Davison & Hinkley 1997, §3.8, "two-stage" resampling) draws the a teachers with replacement, then
within each drawn teacher its b_t draws with replacement, keeping each draw's seeds as they are; the statistic is
the mean over the drawn teachers of the mean over their drawn draws of the draw's mean (for a balanced design,
the grand mean). Resampling both stages takes the teacher-to-teacher and the draw-to-draw spread into the interval,
which a t-interval over all N values as if independent would leave out. With one teacher only the draws are
resampled; with one draw as well, the seeds. The generator is seeded, so a table is the same each time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Three nested levels, outermost first: each holds its units' values. The leaves are the student seeds' values.
Nested = Sequence[Sequence[Sequence[float]]]
LEVELS = ("teacher", "draw", "seed")
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Components:
    """The variance components of one nested design (see the module docstring); NaN where a level has one unit."""

    mean: float
    variance: dict[str, float]  # clipped at 0, by level
    raw: dict[str, float]  # the moment estimates before clipping
    mean_square: dict[str, float]
    df: dict[str, int]

    def share(self, level: str) -> float:
        """The level's part of the sum of the components that exist (NaN where it has none or the sum is 0)."""
        total = sum(v for v in self.variance.values() if not math.isnan(v))
        value = self.variance[level]
        return math.nan if math.isnan(value) or total <= 0 else value / total

    def dominant(self) -> str | None:
        """The level with the largest component; None where none is positive."""
        have = {k: v for k, v in self.variance.items() if not math.isnan(v) and v > 0}
        return max(have, key=lambda k: have[k]) if have else None


def _clean(groups: Nested) -> list[list[list[float]]]:
    """The design without empty draws and teachers (a draw with no seed has nothing to say)."""
    out = [[[float(v) for v in draw] for draw in teacher] for teacher in groups]
    out = [[draw for draw in teacher if draw] for teacher in out]
    return [teacher for teacher in out if teacher]


def nested_components(groups: Nested) -> Components:
    """The method-of-moments variance components of teachers, draws within teacher and seeds within draw."""
    design = _clean(groups)
    values = [v for teacher in design for draw in teacher for v in draw]
    if not values:
        nan = dict.fromkeys(LEVELS, math.nan)
        return Components(math.nan, nan, nan, nan, dict.fromkeys(LEVELS, 0))
    n_total = len(values)
    grand = sum(values) / n_total
    a = len(design)
    cells = [(ti, draw) for ti, teacher in enumerate(design) for draw in teacher]
    b_total = len(cells)
    n_t = [sum(len(d) for d in teacher) for teacher in design]
    mean_t = [sum(sum(d) for d in teacher) / n for teacher, n in zip(design, n_t, strict=True)]
    ss_t = sum(n * (m - grand) ** 2 for n, m in zip(n_t, mean_t, strict=True))
    ss_d = sum(len(d) * (sum(d) / len(d) - mean_t[ti]) ** 2 for ti, d in cells)
    ss_e = sum((v - sum(d) / len(d)) ** 2 for _, d in cells for v in d)
    df = {"teacher": a - 1, "draw": b_total - a, "seed": n_total - b_total}
    ms = {level: (ss / df[level] if df[level] > 0 else math.nan)
          for level, ss in zip(LEVELS, (ss_t, ss_d, ss_e), strict=True)}
    sum_sq_over_nt = sum(sum(len(d) ** 2 for d in teacher) / n for teacher, n in zip(design, n_t, strict=True))
    raw = {"seed": ms["seed"]}
    if df["draw"] > 0 and df["seed"] > 0:
        k1 = (n_total - sum_sq_over_nt) / df["draw"]
        raw["draw"] = (ms["draw"] - ms["seed"]) / k1
    else:
        raw["draw"] = math.nan
    if df["teacher"] > 0 and not math.isnan(raw["draw"]):
        k2 = (sum_sq_over_nt - sum(len(d) ** 2 for _, d in cells) / n_total) / df["teacher"]
        k3 = (n_total - sum(n * n for n in n_t) / n_total) / df["teacher"]
        raw["teacher"] = (ms["teacher"] - ms["seed"] - k2 * raw["draw"]) / k3
    else:
        raw["teacher"] = math.nan
    raw = {level: raw[level] for level in LEVELS}
    clipped = {level: (math.nan if math.isnan(v) else max(v, 0.0)) for level, v in raw.items()}
    return Components(grand, clipped, raw, ms, df)


def cluster_bootstrap(groups: Nested, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                      seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """(estimate, low, high): the mean of the teachers' means of their draws' means and its percentile interval
    from the two-stage cluster bootstrap of the module docstring. NaN bounds with fewer than 2 units to resample."""
    design = _clean(groups)
    if not design:
        return math.nan, math.nan, math.nan
    draw_means = [np.array([sum(d) / len(d) for d in teacher]) for teacher in design]
    estimate = float(np.mean([m.mean() for m in draw_means]))
    rng = np.random.default_rng(seed)
    if len(design) > 1:
        stats = _two_stage(draw_means, rng, resamples)
    elif len(design[0]) > 1:
        stats = _one_stage(draw_means[0], rng, resamples)
    else:
        seeds = np.array(design[0][0])
        if len(seeds) < 2:
            return estimate, math.nan, math.nan
        stats = _one_stage(seeds, rng, resamples)
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return estimate, float(low), float(high)


def _one_stage(units: np.ndarray, rng: np.random.Generator, resamples: int) -> np.ndarray:
    picks = rng.integers(0, len(units), size=(resamples, len(units)))
    return units[picks].mean(axis=1)


def _two_stage(draw_means: list[np.ndarray], rng: np.random.Generator, resamples: int) -> np.ndarray:
    """Teachers with replacement, then each drawn teacher's draws with replacement (vectorised over resamples)."""
    a = len(draw_means)
    counts = np.array([len(m) for m in draw_means])
    padded = np.full((a, counts.max()), np.nan)
    for i, m in enumerate(draw_means):
        padded[i, :len(m)] = m
    teachers = rng.integers(0, a, size=(resamples, a))
    # A uniform index below each drawn teacher's own draw count; positions past that count are masked out.
    u = rng.random(size=(resamples, a, counts.max()))
    picks = np.floor(u * counts[teachers][..., None]).astype(int)
    values = padded[teachers[..., None], picks]
    valid = np.arange(counts.max())[None, None, :] < counts[teachers][..., None]
    per_teacher = np.where(valid, values, 0.0).sum(axis=2) / counts[teachers]
    return per_teacher.mean(axis=1)
