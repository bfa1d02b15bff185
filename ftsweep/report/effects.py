"""What each factor does to the primary metric.

Main effect of a factor level: the mean of the metric over the configurations
at that level (each configuration's mean over its seeds, so a configuration
repeated with more seeds counts once), and the sample std (ddof=1) over its ok
runs, at the settings of the other factors where every level of this one has
an ok run. In a full grid with as many seeds everywhere this is the plain mean
of every ok run, the usual marginal mean. With a failed cell, the
plain mean of the runs that exist would compare levels over different
settings of the others: in a 2 x 2 grid of lora.r x optim.lr whose (16, 3e-4)
cell failed, lr 1e-4's mean would include r=16 (2.0) and lr 3e-4's not, and
1e-4 (mean 2.5) would look better than 3e-4 (2.8) although 3e-4 won at r=8,
the one setting where both ran (2.8 against 3.0). So the runs whose setting of
the others lacks a level are left out of that factor's means (and named); n
says how many runs remain.

Noise: when some configuration ran with several seeds, the seed-to-seed spread
is the pooled sample std of the runs around their configuration's mean
(``seed_noise``; degrees of freedom: runs minus configurations). A mean over n
runs then gets a 95 % t-interval, mean ± t(0.975, df) · s / √n (with unequal
seed counts, s · √(Σ 1/n_j) / k for k configurations of n_j runs). Two levels
are within noise when the 95 % interval of their difference holds zero: their
means are over different configurations, so independent given s, and the
difference's half-width is √(h_a² + h_b²) of the two levels' half-widths h. Two
intervals that merely overlap are no test: r=8 and r=16, 3 seeds each, s=0.0063
(4 df), have half-widths 2.776 · 0.0063 / √3 = 0.0101 each, so intervals that
overlap up to a difference of 0.0202, while a difference of 0.0143 already
stands out (√2 · 0.0101). Without repeated seeds there is no noise estimate and
the report says so instead of guessing.

Views read from the runs: per pair of factors, the metric at each level of one
with one line per level of the other (an interaction: does r=8 beat r=16 at
every learning rate?), a grid of the two factors when exactly two vary, and the
metric against training-set size when `data.n` varies.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import pandas as pd

from ftsweep.artifacts import FAILED, OK

from .factors import DATA_SIZE, Design, Factor, Level
from .table import Configuration, Stat


# t(0.975, df) for df = 1..30; above 30 the Cornish-Fisher expansion below is within 1e-4.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)
_Z975 = 1.959964


def t975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (a 95 % two-sided interval)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


@dataclass(frozen=True)
class Noise:
    """Seed-to-seed spread of the metric: pooled sample std within configurations."""

    std: float
    df: int  # ok runs minus configurations that have them

    def half_width(self, scale: float) -> float:
        """Half the 95 % interval of a mean whose standard error is ``scale`` times the seeds' std (1 / sqrt(n)
        for a mean over n runs; see _grouped for a mean of configuration means)."""
        return t975(self.df) * self.std * scale

    def difference_half_width(self, n_a: int, n_b: int) -> float:
        """Half the 95 % interval of the difference of two configurations' means over n_a and n_b seeds:
        t · s · √(1/n_a + 1/n_b)."""
        if n_a < 1 or n_b < 1:
            raise ValueError(f"a mean needs at least one run, got {n_a} and {n_b}")
        return self.half_width(math.sqrt(1 / n_a + 1 / n_b))


def difference_half(half_a: float, half_b: float) -> float:
    """Half the 95 % interval of the difference of two independent means from their own half-widths (one t, one
    s): t·s·√(a² + b²) = √((t·s·a)² + (t·s·b)²)."""
    return math.hypot(half_a, half_b)


def within_noise(gap: float, half: float) -> bool:
    """The one rule: a difference is within the noise when its 95 % interval holds 0; touching counts as within."""
    return abs(gap) <= half


@dataclass(frozen=True)
class SeedComparison:
    """The best configuration against the next by their means over their seeds (the seeds' noise, not the
    held-out sample's)."""

    best: Configuration
    next: Configuration
    gap: float  # |best mean - next mean|
    half: float  # half-width of the 95 % interval of that difference

    @property
    def within_noise(self) -> bool:
        return within_noise(self.gap, self.half)


def best_against_next_over_seeds(configs: list[Configuration], noise: Noise | None, metric: str) -> SeedComparison | None:
    """None without repeated seeds (no noise estimate) or without two ranked configurations."""
    ranked = sorted((c for c in configs if c.rank is not None), key=lambda c: c.rank)
    if noise is None or len(ranked) < 2:
        return None
    a, b = ranked[0].stats[metric], ranked[1].stats[metric]
    return SeedComparison(ranked[0], ranked[1], abs(a.mean - b.mean), noise.difference_half_width(a.n, b.n))


def seed_noise(design: Design, frame: pd.DataFrame, metric: str) -> Noise | None:
    """None when no configuration has two ok runs with the metric: seeds were not repeated."""
    ok = _ok(frame, metric)
    if not len(ok):
        return None
    configs = ok["configuration"]
    deviations = ok[metric] - ok.groupby(configs)[metric].transform("mean")
    df = len(ok) - configs.nunique()
    if df < 1:
        return None
    return Noise(math.sqrt(float((deviations**2).sum()) / df), int(df))


@dataclass
class LevelEffect:
    level: Level
    stat: Stat
    half: float | None = None  # half-width of the 95 % interval of the mean (None: no noise estimate)
    failed: bool = False  # tried, and every run of it failed (a diverged lr): not a level still to run


@dataclass
class MainEffect:
    factor: Factor
    levels: list[LevelEffect]
    left_out: list[str] = field(default_factory=list)  # configurations whose setting of the others lacks a level
    matched: bool = True  # False: no setting of the others has every level; the means are over different ones
    runs: list[int] = field(default_factory=list)  # the ok runs (indices into design.runs) the means are over

    @property
    def spread(self) -> float | None:
        """Best minus worst level mean: a rough size of the effect."""
        means = [e.stat.mean for e in self.levels if e.stat.mean is not None]
        return max(means) - min(means) if len(means) > 1 else None


def main_effects(design: Design, frame: pd.DataFrame, metric: str, noise: Noise | None = None) -> list[MainEffect]:
    ok = _ok(frame, metric)
    effects = []
    for factor in design.factors:
        used, left_out, matched = _matched(ok, factor, design)
        # runs.csv names the sweep factor's column "sweep"; its levels are the sweep labels.
        grouped = _grouped(used, [factor.name], metric)
        levels = [LevelEffect(level, _stat(grouped, level.text), _half(noise, grouped, level.text), _all_failed(design, factor, level))
                  for level in factor.levels]
        effects.append(MainEffect(factor, levels, left_out, matched, list(used.index)))
    return effects


def _all_failed(design: Design, factor: Factor, level: Level) -> bool:
    statuses = [run.status for i, run in enumerate(design.runs) if design.levels[i][factor.name].key == level.key]
    return bool(statuses) and all(status == FAILED for status in statuses)


def _grouped(rows: pd.DataFrame, keys: list[str], metric: str) -> pd.DataFrame | None:
    """Per group of ``keys``: the mean of its configurations' means, so that each configuration counts once however
    many seeds it ran (a sweep whose best cell was repeated with three more seeds must not pull its level toward
    that cell: 2 x 2 cells of one seed each plus seeds 2 to 4 of the best, its level's plain mean weighed the best
    4 times and the other cell once), the sample std and count of its runs, and the standard error of that mean
    as a multiple of the seeds' std:

        SE = s * sqrt(sum_j 1 / n_j) / k        k configurations, n_j runs of configuration j

    which is s / sqrt(n) when every configuration ran the same number of seeds, as the plain mean then is too."""
    if not len(rows):
        return None
    runs = rows.groupby(keys)[metric].agg(["std", "count"])
    per_config = rows.groupby([*keys, "configuration"])[metric].agg(["mean", "count"]).groupby(level=list(range(len(keys))))
    scale = per_config["count"].apply(lambda n: math.sqrt(float((1 / n).sum())) / len(n))
    return runs.assign(mean=per_config["mean"].mean(), scale=scale)


def _half(noise: Noise | None, grouped: pd.DataFrame | None, index) -> float | None:
    if noise is None or grouped is None or index not in grouped.index:
        return None
    return noise.half_width(float(grouped.at[index, "scale"]))


def _matched(ok: pd.DataFrame, factor: Factor, design: Design) -> tuple[pd.DataFrame, list[str], bool]:
    """The ok runs a factor's levels are compared over: those at a setting of the other factors that has an ok run
    at every level of this one (every level that has one anywhere). Also the configurations left out, and whether
    any setting had every level (if none did, all runs are kept and the means do not compare)."""
    others = [f.name for f in design.factors if f is not factor]
    if not others or not len(ok):
        return ok, [], True
    present = set(ok[factor.name])
    setting = ok[others].astype(str).agg("\x1f".join, axis=1)
    complete = {key for key, levels in ok.groupby(setting)[factor.name] if set(levels) >= present}
    if not complete:
        return ok, [], False
    keep = setting.isin(complete)
    return ok[keep], sorted(set(ok.loc[~keep, "configuration"])), True


def _ok(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    return frame[(frame["status"] == OK) & frame[metric].notna()]


def _stat(grouped: pd.DataFrame | None, index) -> Stat:
    if grouped is None or index not in grouped.index:
        return Stat(None, None, 0)
    n = int(grouped.at[index, "count"])
    std = float(grouped.at[index, "std"]) if n > 1 else None
    return Stat(float(grouped.at[index, "mean"]), std, n)


@dataclass
class Verdict:
    """The best level of a factor against one other level."""

    factor: str
    best: LevelEffect
    other: LevelEffect
    half: float  # half-width of the 95 % interval of the difference of their means

    @property
    def gap(self) -> float:
        return abs(self.best.stat.mean - self.other.stat.mean)

    @property
    def within_noise(self) -> bool:
        return within_noise(self.gap, self.half)


def verdicts(effects: list[MainEffect], maximize: bool) -> list[Verdict]:
    """For each factor with a noise estimate: its best level against every other level."""
    out = []
    for effect in effects:
        levels = [e for e in effect.levels if e.stat.mean is not None and e.half is not None]
        if len(levels) < 2:
            continue
        levels.sort(key=lambda e: -e.stat.mean if maximize else e.stat.mean)
        best = levels[0]
        # The level means are over different configurations: independent given s, so the halves add in quadrature.
        out += [Verdict(effect.factor.name, best, other, difference_half(best.half, other.half)) for other in levels[1:]]
    return out


@dataclass(frozen=True)
class Edge:
    """A numeric parameter whose best level is the largest or smallest that ran ok."""

    factor: str
    level: Level
    end: str  # "largest" or "smallest"
    beyond: float  # the value to try next: one step further, or halfway to the level that gave no result
    short_of: Level | None = None  # the next level tried past the best, where no run finished ok (lr 50 diverged)
    near: Level | None = None  # the best's neighbour inside the range: the level its lead at this end is over


EDGELESS = (DATA_SIZE,)  # more data is better; how much better is what the data-size curve shows


def edges(effects: list[MainEffect], maximize: bool) -> list[Edge]:
    """Parameters whose best level, by the effects table's means, is at an end of the numbers that ran ok: the
    best setting may lie beyond them (with two levels it always is at one end: two points show no optimum). On the
    built-in data the demo's best lr, 3e-4, is its largest: lr 1e-3 trained to 4.21 against 4.74. Where a level
    past the best was tried and no run of it finished ok (lr 50 went to nan at step 5 while 0.5 was best), the next
    value is halfway to it, not past it."""
    out = []
    for effect in effects:
        if effect.factor.name in EDGELESS or not effect.matched:
            continue
        levels = sorted((e for e in effect.levels if e.stat.mean is not None), key=lambda e: e.level.number or 0.0)
        if len(levels) < 2 or any(e.level.number is None for e in levels):
            continue
        # The levels that bound the range: those with a result, and those tried whose every run failed. A level
        # still to run (or stopped) bounds nothing: resuming the sweep tells more than another level would.
        tried = sorted(levels + [e for e in effect.levels if e.failed and e.level.number is not None],
                       key=lambda e: e.level.number)
        best = max(levels, key=lambda e: e.stat.mean if maximize else -e.stat.mean)
        if sum(e.stat.mean == best.stat.mean for e in levels) > 1:
            continue  # tied (the same answers, scored alike): no level is best, at an end or not
        if best is levels[-1]:
            near, end, past = levels[-2], "largest", tried[tried.index(best) + 1:]
        elif best is levels[0]:
            near, end, past = levels[1], "smallest", tried[:tried.index(best)][::-1]
        else:
            continue
        a, b = best.level.number, near.level.number
        short_of = past[0].level if past else None
        if short_of is not None:  # halfway on the scale the levels step on: 0.5 and 50 -> 5
            c = short_of.number
            beyond = math.sqrt(a * c) if a > 0 and c > 0 else (a + c) / 2
        else:  # one step further: the ratio (or, at or below zero, the difference) of the last two levels again
            beyond = a * a / b if a > 0 and b > 0 else 2 * a - b
        numbers = [e.level.number for e in tried]
        whole = all(float(x).is_integer() for x in numbers)  # a rank, a step count
        # As the report writes it: a whole number, or two significant digits (3e-4 x 3 = 0.0009, not 0.0009000000000000001).
        beyond = float(round(beyond)) if whole else float(f"{beyond:.2g}")
        # No step past a bound the levels keep: 0 for a dropout or warm-up tried from 0 up, 1 for a rank from 1.
        floor = 1 if whole and min(numbers) >= 1 else 0 if min(numbers) >= 0 else None
        if beyond in numbers or (floor is not None and beyond < floor):
            continue
        out.append(Edge(effect.factor.name, best.level, end, beyond, short_of, near.level))
    return out


@dataclass
class Interaction:
    """The metric at each level of ``x``, one line per level of ``by`` (means over the other factors and seeds)."""

    x: Factor
    by: Factor
    lines: list[tuple[Level, list[LevelEffect]]]  # (level of by, its points along x)


MAX_INTERACTIONS = 6  # panels; with more factors the pairs of the first ones are shown
MAX_LINES = 10  # lines in one panel that colours still tell apart


def interactions(design: Design, frame: pd.DataFrame, metric: str, noise: Noise | None = None) -> list[Interaction]:
    """Every pair of factors, both ways round when only two vary."""
    factors = [f for f in design.factors if len(f.levels) > 1]
    if len(factors) < 2:
        return []
    pairs = list(itertools.combinations(factors, 2))
    if len(factors) == 2:
        pairs.append((factors[1], factors[0]))
    ok = _ok(frame, metric)
    out = []
    for x, by in pairs[:MAX_INTERACTIONS]:
        grouped = _grouped(ok, [by.name, x.name], metric)
        lines = []
        for b in by.levels:
            points = [LevelEffect(level, _stat(grouped, (b.text, level.text)), _half(noise, grouped, (b.text, level.text)))
                      for level in x.levels]
            if any(p.stat.mean is not None for p in points):
                lines.append((b, points))
        # A view says something when some line has two points (a search's sampled learning rates
        # each make a line of one) and its lines can still be told apart by colour.
        if len(lines) <= MAX_LINES and any(sum(p.stat.mean is not None for p in pts) > 1 for _, pts in lines):
            out.append(Interaction(x, by, lines))
    return out


@dataclass(frozen=True)
class Reversal:
    """Crossing lines of an interaction: the best level of ``x`` is not the same at every level of ``by``."""

    x: Factor
    by: Factor
    # Per level of by: the best level of x there, and its rival: of the levels that are best on another line, the
    # one closest to it here. The crossing is the best against the rival (at lr 3e-4: r=16 2.00, r=32 2.50, r=8
    # 2.01 with r=8 best at lr 1e-4: the reversal is by 0.01 over r=8, not 0.50 over r=32).
    bests: list[tuple[Level, LevelEffect, LevelEffect]]

    def within_noise(self, i: int) -> bool | None:
        """Whether line i's best beats its rival by no more than the seeds' noise (None: no noise estimate)."""
        _, best, rival = self.bests[i]
        if best.half is None or rival.half is None:
            return None
        return within_noise(best.stat.mean - rival.stat.mean, difference_half(best.half, rival.half))


def reversals(views: list[Interaction], maximize: bool) -> list[Reversal]:
    """The interactions whose lines cross: the main effect of ``x`` then averages over a choice that differs with
    ``by`` (lr 1e-4 best at r=8 and 3e-4 at r=16: "3e-4 is the best lr" holds at one rank only). Each line is read
    over the levels of x that every line has, and a line whose two best levels tie tells nothing."""
    out = []
    for view in views:
        lines = [(b, pts) for b, pts in view.lines if sum(p.stat.mean is not None for p in pts) > 1]
        shared = set.intersection(*({p.level.key for p in pts if p.stat.mean is not None} for _, pts in lines)) if lines else set()
        if len(lines) < 2 or len(shared) < 2:
            continue
        ranked_lines = []
        for b, pts in lines:
            ranked = sorted((p for p in pts if p.level.key in shared), key=lambda p: -p.stat.mean if maximize else p.stat.mean)
            if ranked[0].stat.mean != ranked[1].stat.mean:
                ranked_lines.append((b, ranked))
        winners = {ranked[0].level.key for _, ranked in ranked_lines}
        if len(winners) < 2:
            continue
        # The rival on each line: the first level after its best, in this line's order, that wins another line.
        bests = [(b, ranked[0], next(p for p in ranked[1:] if p.level.key in winners)) for b, ranked in ranked_lines]
        out.append(Reversal(view.x, view.by, bests))
    return out


MAX_GRID = 12  # levels per side of the two-factor grid


@dataclass
class Grid:
    """Per-configuration means of the metric over two factors (rows x columns)."""

    rows: Factor
    cols: Factor
    cells: dict[tuple[tuple, tuple], Stat]  # (row level key, col level key) -> stat


def two_factor_grid(design: Design, configs: list[Configuration], metric: str) -> Grid | None:
    if len(design.factors) != 2 or any(len(f.levels) > MAX_GRID for f in design.factors):
        return None  # a search's sampled values: a grid of mostly blank cells would say less than the interactions
    rows, cols = design.factors
    cells = {(c.levels[0].key, c.levels[1].key): c.stats[metric] for c in configs}
    return Grid(rows, cols, cells)


@dataclass
class Series:
    label: str  # the other factors' levels, e.g. "lora.r=8"
    points: list[tuple[float, Stat]]  # (data.n, metric over seeds)


def data_size_series(design: Design, configs: list[Configuration], metric: str) -> list[Series]:
    """One line per combination of the other factors; levels of data.n that are not
    numbers (null = all records) have no place on the axis and are left out."""
    names = [f.name for f in design.factors]
    if DATA_SIZE not in names:
        return []
    at = names.index(DATA_SIZE)
    others = [f for f in design.factors if f.name != DATA_SIZE]
    series: dict[tuple, list[tuple[float, Stat]]] = {}
    for config in configs:
        size = config.levels[at].number
        if size is None or config.stats[metric].mean is None:
            continue
        rest = tuple(level for i, level in enumerate(config.levels) if i != at)
        series.setdefault(rest, []).append((size, config.stats[metric]))
    result = []
    for rest in sorted(series, key=lambda r: tuple(level.key for level in r)):
        label = ", ".join(f"{f.name}={level.text}" for f, level in zip(others, rest)) or metric
        result.append(Series(label, sorted(series[rest], key=lambda p: p[0])))
    return result
