"""What each factor does to the primary metric.

Main effect of a factor level: the mean ± sample std (ddof=1) of the metric
over every ok run at that level, whatever the other factors and the seed. In
a full grid with equal replicates this is the usual marginal mean; with
missing cells it is the plain mean of the runs that exist, and n says how
many that was.

Two views read from the per-configuration means (seeds already averaged):
a grid of the two factors when exactly two vary, and the metric against
training-set size when `data.n` varies.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from ftsweep.artifacts import OK

from .factors import Design, Factor, Level
from .table import Configuration, Stat

DATA_SIZE = "data.n"


@dataclass
class LevelEffect:
    level: Level
    stat: Stat


@dataclass
class MainEffect:
    factor: Factor
    levels: list[LevelEffect]

    @property
    def spread(self) -> float | None:
        """Best minus worst level mean: a rough size of the effect."""
        means = [e.stat.mean for e in self.levels if e.stat.mean is not None]
        return max(means) - min(means) if len(means) > 1 else None


def main_effects(design: Design, frame: pd.DataFrame, metric: str) -> list[MainEffect]:
    ok = frame[(frame["status"] == OK) & frame[metric].notna()]
    effects = []
    for factor in design.factors:
        # runs.csv names the sweep factor's column "sweep"; its levels are the sweep labels.
        grouped = ok.groupby(factor.name)[metric].agg(["mean", "std", "count"]) if len(ok) else None
        levels = []
        for level in factor.levels:
            if grouped is not None and level.text in grouped.index:
                n = int(grouped.at[level.text, "count"])
                std = float(grouped.at[level.text, "std"]) if n > 1 else None
                levels.append(LevelEffect(level, Stat(float(grouped.at[level.text, "mean"]), std, n)))
            else:
                levels.append(LevelEffect(level, Stat(None, None, 0)))
        effects.append(MainEffect(factor, levels))
    return effects


@dataclass
class Grid:
    """Per-configuration means of the metric over two factors (rows x columns)."""

    rows: Factor
    cols: Factor
    cells: dict[tuple[tuple, tuple], Stat]  # (row level key, col level key) -> stat


def two_factor_grid(design: Design, configs: list[Configuration], metric: str) -> Grid | None:
    if len(design.factors) != 2:
        return None
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
