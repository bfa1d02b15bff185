"""How much of a difference between runs the held-out sample alone could explain.

Runs that scored the same held-out examples keep each example's part of the metric: the loss of each in
held_out_losses.json (its summed token loss and its tokens), and each sample's exact_match (classify: whether its
class was right) and rougeL in samples.jsonl. Two configurations' difference in the metric is then a ratio over
the same m examples:

    D = sum_i (b_i - a_i) / sum_i t_i        a_i, b_i: example i's part under each; t_i: its tokens (1 for a score)

and another held-out sample of the same size would give another D. Its standard error over the examples (the
ratio estimator's, as for any mean over tokens that come in examples; with t_i = 1 the paired t-test's):

    SE = sqrt( m / (m - 1) * sum_i (b_i - a_i - D * t_i)^2 ) / sum_i t_i

and D +- t(0.975, m - 1) * SE is a 95 % interval. The comparison is paired: an example that is hard for one run
is hard for the other, so the interval is far narrower than the two values' own. It leaves out the noise between
seeds (another seed trains another adapter), which only repeated seeds measure (effects.seed_noise).

A configuration's per-example values are the mean over its ok runs (its seeds); a parameter level's, the mean of
its configurations' over the runs effects.main_effects compares it over, so D is the difference of the effects
table's means.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .effects import MainEffect, main_effects, t975
from .factors import Design
from .table import Configuration

# The metrics whose per-example parts the runs keep, and where: the loss, and a samples.jsonl field. A
# classifier's accuracy is the mean of its samples' exact_match. BLEU is a corpus score, F1 a macro average:
# neither is a mean over examples.
LOSS = "eval_loss"
SAMPLE_FIELDS = {"exact_match": "exact_match", "accuracy": "exact_match", "rougeL": "rougeL"}


@dataclass(frozen=True)
class Paired:
    """``better`` against ``worse``: D, how much better (positive), with its 95 % interval."""

    better: str
    worse: str
    diff: float
    low: float
    high: float
    examples: int

    @property
    def stands_out(self) -> bool:
        return self.low > 0

    @property
    def tied(self) -> bool:
        """Equal on every example (no spread, no difference): two runs that gave the same answers, scored alike.
        Ranked by rougeL, three of the demo's four cells answered "is is is ..." to every prompt."""
        return self.diff == 0 and self.low == self.high


def pairable(metric: str) -> bool:
    return metric == LOSS or metric in SAMPLE_FIELDS


def _parts(run, metric: str) -> tuple[list[float], list[int], object] | None:
    """(per-example values, tokens, what identifies the examples) of one run, or None."""
    if metric == LOSS:
        losses = run.held_out_losses()
        return None if losses is None else (losses[0], losses[1], run.manifest.get("held_out_fingerprint"))
    rows, field = run.samples(), SAMPLE_FIELDS[metric]
    if not rows or any(not isinstance(r.get(field), (bool, int, float)) for r in rows):
        return None
    return [float(r[field]) for r in rows], [1] * len(rows), [r.get("prompt") for r in rows]


def _aligned(runs: list, metric: str) -> tuple[list[np.ndarray], np.ndarray] | None:
    """The runs' per-example values and their shared tokens; None unless every run has them for the same examples
    (the same held-out fingerprint and tokens, or the same prompts in the same order)."""
    values = []
    tokens = examples = None
    for run in runs:
        parts = _parts(run, metric)
        if parts is None:
            return None
        found, counts, which = parts
        if tokens is None:
            tokens, examples = counts, which
        elif counts != tokens or which != examples:
            return None
        values.append(np.asarray(found, dtype=np.float64))
    if tokens is None or sum(tokens) <= 0 or len(tokens) < 2:
        return None
    return values, np.asarray(tokens, dtype=np.float64)


def per_example(design: Design, indices: list[int], metric: str = LOSS) -> dict[int, np.ndarray] | None:
    """Each run's per-example values, plus the shared tokens under key -1 (see _aligned)."""
    aligned = _aligned([design.runs[i] for i in indices], metric)
    if aligned is None:
        return None
    values, tokens = aligned
    return {**dict(zip(indices, values)), -1: tokens}


def between(better, worse, metric: str = LOSS, higher: bool = False) -> Paired | None:
    """One run against another over their held-out examples (the sweep's closing lines on the console)."""
    aligned = _aligned([better, worse], metric) if pairable(metric) else None
    if aligned is None:
        return None
    (a, b), tokens = aligned
    return compare(better.name, a, worse.name, b, tokens, higher)


def compare(better: str, a: np.ndarray, worse: str, b: np.ndarray, tokens: np.ndarray, higher: bool = False) -> Paired:
    m, total = len(tokens), float(tokens.sum())
    d = a - b if higher else b - a
    diff = float(d.sum()) / total
    se = math.sqrt(m / (m - 1) * float(((d - diff * tokens) ** 2).sum())) / total
    half = t975(m - 1) * se
    return Paired(better, worse, diff, diff - half, diff + half, m)


def _mean(values: dict[int, np.ndarray], indices) -> np.ndarray:
    return np.mean([values[i] for i in indices], axis=0)


def best_against_next(design: Design, configs: list[Configuration], metric: str, higher: bool) -> Paired | None:
    """The best configuration against the one ranked second, over the held-out examples."""
    ranked = sorted((c for c in configs if c.rank is not None), key=lambda c: c.rank)
    if not pairable(metric) or len(ranked) < 2:
        return None
    best, second = ranked[0], ranked[1]
    ok = [i for c in (best, second) for i in c.runs if design.runs[i].ok]
    values = per_example(design, ok, metric)
    if values is None:
        return None
    a = _mean(values, [i for i in best.runs if i in values])
    b = _mean(values, [i for i in second.runs if i in values])
    return compare(best.label, a, second.label, b, values[-1], higher)


def level_differences(design: Design, frame: pd.DataFrame, metric: str, higher: bool,
                      effects: list[MainEffect] | None = None) -> list[tuple[str, Paired]]:
    """For each swept parameter, its best level against every other, over the runs its effect is a mean of
    (``effects``: main_effects' of this frame and metric, computed here if not given)."""
    if not pairable(metric) or metric not in frame:
        return []
    out = []
    for effect in effects if effects is not None else main_effects(design, frame, metric):
        if not effect.matched or not effect.runs:
            continue
        values = per_example(design, effect.runs, metric)
        if values is None:
            continue
        used = frame.loc[effect.runs]
        by_level = {level: np.mean([_mean(values, list(c.index)) for _, c in rows.groupby("configuration")], axis=0)
                    for level, rows in used.groupby(effect.factor.name)}
        if len(by_level) < 2:
            continue
        order = sorted(by_level, key=lambda level: float(by_level[level].sum()), reverse=higher)
        best = order[0]
        out += [(effect.factor.name, compare(best, by_level[best], other, by_level[other], values[-1], higher))
                for other in order[1:]]
    return out
