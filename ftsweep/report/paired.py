"""How much of a difference in held-out loss the held-out sample alone could explain.

Runs that scored the same held-out examples as the same tokens (one manifest.held_out_fingerprint) keep the loss
of each example in held_out_losses.json. Two configurations' difference in eval_loss is then a ratio over the
same m examples:

    D = sum_i (b_i - a_i) / sum_i t_i        a_i, b_i: example i's summed token loss under each; t_i: its tokens

and another held-out sample of the same size would give another D. Its standard error over the examples (the
ratio estimator's, as for any mean over tokens that come in examples):

    SE = sqrt( m / (m - 1) * sum_i (b_i - a_i - D * t_i)^2 ) / sum_i t_i

and D +- t(0.975, m - 1) * SE is a 95 % interval. The comparison is paired: an example that is hard for one run
is hard for the other, so the interval is far narrower than the two losses' own. It leaves out the noise between
seeds (another seed trains another adapter), which only repeated seeds measure (effects.seed_noise).

A configuration's per-example losses are the mean over its ok runs (its seeds); a parameter level's, the mean of
its configurations' over the runs effects.main_effects compares it over, so D is the difference of the effects
table's means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .effects import _matched, _ok, t975
from .factors import Design
from .table import Configuration

METRIC = "eval_loss"  # the only metric whose per-example parts the runs keep


@dataclass(frozen=True)
class Paired:
    """``better`` against ``worse``: D = worse's loss minus better's (positive), with its 95 % interval."""

    better: str
    worse: str
    diff: float
    low: float
    high: float
    examples: int

    @property
    def stands_out(self) -> bool:
        return self.low > 0


def per_example(design: Design, indices: list[int]) -> dict[int, np.ndarray] | None:
    """Each run's per-example loss sums, plus the shared token counts under key -1; None unless every run has them
    for the same examples (the same fingerprint, the same tokens per example)."""
    found: dict[int, np.ndarray] = {}
    tokens = fingerprint = None
    for i in indices:
        run = design.runs[i]
        losses = run.held_out_losses()
        if losses is None:
            return None
        sums, counts = losses
        mark = run.manifest.get("held_out_fingerprint")
        if tokens is None:
            tokens, fingerprint = counts, mark
        elif counts != tokens or mark != fingerprint:
            return None
        found[i] = np.asarray(sums, dtype=np.float64)
    if tokens is None or sum(tokens) <= 0 or len(tokens) < 2:
        return None
    found[-1] = np.asarray(tokens, dtype=np.float64)
    return found


def compare(better: str, a: np.ndarray, worse: str, b: np.ndarray, tokens: np.ndarray) -> Paired:
    m, total = len(tokens), float(tokens.sum())
    d = b - a
    diff = float(d.sum()) / total
    se = math.sqrt(m / (m - 1) * float(((d - diff * tokens) ** 2).sum())) / total
    half = t975(m - 1) * se
    return Paired(better, worse, diff, diff - half, diff + half, m)


def _mean(losses: dict[int, np.ndarray], indices) -> np.ndarray:
    return np.mean([losses[i] for i in indices], axis=0)


def best_against_next(design: Design, configs: list[Configuration], metric: str) -> Paired | None:
    """The best configuration against the one ranked second, over the held-out examples."""
    ranked = sorted((c for c in configs if c.rank is not None), key=lambda c: c.rank)
    if metric != METRIC or len(ranked) < 2:
        return None
    best, second = ranked[0], ranked[1]
    ok = [i for c in (best, second) for i in c.runs if design.runs[i].ok]
    losses = per_example(design, ok)
    if losses is None:
        return None
    a = _mean(losses, [i for i in best.runs if i in losses])
    b = _mean(losses, [i for i in second.runs if i in losses])
    return compare(best.label, a, second.label, b, losses[-1])


def level_differences(design: Design, frame: pd.DataFrame, metric: str, higher: bool) -> list[tuple[str, Paired]]:
    """For each swept parameter, its best level against every other, over the runs its effect is a mean of."""
    if metric != METRIC or higher:
        return []
    ok = _ok(frame, metric)
    out = []
    for factor in design.factors:
        used, _, matched = _matched(ok, factor, design)
        if not matched or not len(used):
            continue
        losses = per_example(design, list(used.index))
        if losses is None:
            continue
        tokens = losses[-1]
        by_level = {level: np.mean([_mean(losses, list(c.index)) for _, c in rows.groupby("configuration")], axis=0)
                    for level, rows in used.groupby(factor.name)}
        if len(by_level) < 2:
            continue
        order = sorted(by_level, key=lambda level: float(by_level[level].sum()))
        best = order[0]
        out += [(factor.name, compare(best, by_level[best], other, by_level[other], tokens)) for other in order[1:]]
    return out
