"""The runs table: one row per configuration, ranked by the primary metric.

A configuration is a run's levels of every factor; runs that share one differ
only in seed and are replicates. Quality metrics show mean ± sample std
(ddof=1) over the ok replicates and n; cost columns (tokens/s, wall time,
memory, parameters) show the mean. Failed or unfinished runs never enter a
mean; their rows say so in the status column.

runs.csv keeps one row per run with the raw numbers, for anyone who wants to
compute something else.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ftsweep import artifacts, metrics
from ftsweep.artifacts import KNOWN_STATUSES, OK

from .factors import SEED, SWEEP, Design, Level
from .render import Code, Strong


def maximizes(metric: str, maximize: bool | None) -> bool:
    """--maximize/--minimize win; else the metric registry decides; unknown names are minimized."""
    return metrics.maximizes(metric, maximize)


def direction_known(metric: str) -> bool:
    return metrics.known(metric)


@dataclass(frozen=True)
class Column:
    key: str  # summary.json key, or a task_metrics key
    header: str
    digits: int
    spread: bool = True  # show ± std over seeds
    scale: float = 1.0  # value shown = raw / scale
    thousands: bool = False

    @classmethod
    def of(cls, key: str) -> "Column":
        """The column of a metric, as the metric registry describes it."""
        m = metrics.get(key)
        return cls(key, m.header, m.digits, spread=m.spread, scale=m.scale, thousands=m.thousands)


# How much training helped: the held-out loss before training (summary.json's baseline_eval_loss,
# the step-0 evaluation) minus the one after, per run; positive when training lowered it.
BASELINE = "baseline_eval_loss"
IMPROVEMENT = "improvement"
IMPROVEMENT_PCT = "improvement_pct"  # the improvement as a share of the baseline, in percent
DERIVED = {
    IMPROVEMENT: Column(IMPROVEMENT, "improvement", 4),
    IMPROVEMENT_PCT: Column(IMPROVEMENT_PCT, "improvement %", 1),
}

# The runs table's fixed columns, in order; the run's task metrics go between the two.
LEADING = ("eval_loss", BASELINE, IMPROVEMENT, IMPROVEMENT_PCT, "best_eval_loss", "perplexity")
TRAILING = ("train_loss", "trainable_params", "tokens_per_second", "wall_seconds", "peak_memory_bytes", "estimated_memory_bytes")


def run_value(run, key: str) -> float | None:
    """A run's number for a column: from summary.json, or derived from two of its numbers."""
    if key not in DERIVED:
        return run.value(key)
    base, after = run.value(BASELINE), run.value("eval_loss")
    if base is None or after is None:
        return None
    if key == IMPROVEMENT:
        return base - after
    return 100.0 * (base - after) / base if base > 0 else None


def columns(design: Design, metric: str) -> list[Column]:
    """Every column the runs table may show, in order; empty ones are dropped later."""
    task = sorted({k for run in design.runs for k in (run.summary.get("task_metrics") or {})})
    # data.test_path's numbers (summary.json's test_*): loss and perplexity first, then the task metrics.
    first = {"test_loss": 0, "test_perplexity": 1}
    test = sorted({k for run in design.runs for k in run.summary if k.startswith("test_")}, key=lambda k: (first.get(k, 2), k))
    cols = [DERIVED.get(k) or Column.of(k) for k in (*LEADING, *task, *test, *TRAILING)]
    # The baseline is the same untrained model on the same held-out set for every seed: its mean says it all.
    cols = [replace(c, spread=False) if c.key == BASELINE else c for c in cols]
    if metric not in {c.key for c in cols}:
        cols.insert(0, Column.of(metric))
    return cols


def fmt(value: float | None, col: Column) -> str:
    """Fixed formatting, so a rebuilt report is byte-identical."""
    return metrics.format_number(value, col.digits, col.scale, col.thousands)


def fmt_diff(value: float | None, col: Column) -> str:
    """A difference or an end of its interval, in a sentence (metrics.format_difference)."""
    return metrics.format_difference(value, col.digits, col.scale)


@dataclass
class Stat:
    mean: float | None
    std: float | None  # sample std (ddof=1); None for n < 2
    n: int

    def show(self, col: Column) -> str:
        if self.mean is None:
            return "—"
        if col.spread and self.std is not None:
            return f"{fmt(self.mean, col)} ± {fmt(self.std, col)}"
        return fmt(self.mean, col)


@dataclass
class Configuration:
    levels: tuple[Level, ...]
    label: str
    runs: list[int]  # indices into design.runs
    status: str
    n_ok: int
    stats: dict[str, Stat] = field(default_factory=dict)
    rank: int | None = None  # 1 = best; None when it has no value of the primary metric


def runs_frame(design: Design, metric: str) -> pd.DataFrame:
    """One row per run: what runs.csv holds and what every statistic is computed from."""
    keys = [c.key for c in columns(design, metric)]
    rows = []
    for i, run in enumerate(design.runs):
        error = run.summary.get("error") if isinstance(run.summary.get("error"), dict) else {}
        git = run.manifest.get("git") if isinstance(run.manifest.get("git"), dict) else {}
        row = {SWEEP: run.sweep, "run": run.name, "status": run.status}  # the sweep factor's column
        row |= {f.name: design.levels[i][f.name].text for f in design.factors if f.name != SWEEP}
        row |= {SEED: design.seeds[i], "configuration": design.label(design.configuration(i))}
        row |= {key: run_value(run, key) for key in keys}
        row |= {
            "steps": run.value("steps"),
            "tokens_seen": run.value("tokens_seen"),
            "config_hash": run.summary.get("config_hash") or run.manifest.get("config_hash"),
            "git_commit": git.get("commit"),
            "git_dirty": git.get("dirty"),
            "command": run.manifest.get("command"),
            "error_type": error.get("type"),
            "error_message": error.get("message"),
            "problems": "; ".join(run.problems) or None,
        }
        rows.append(row)
    frame = pd.DataFrame(rows)
    # Counts stay integers in runs.csv (pandas would write 68224.0 next to a missing value).
    for key in ("trainable_params", "peak_memory_bytes", "estimated_memory_bytes", "steps", "tokens_seen"):
        if key in frame and (frame[key].dropna() % 1 == 0).all():
            frame[key] = frame[key].astype("Int64")
    return frame


def configurations(design: Design, frame: pd.DataFrame, metric: str, maximize: bool) -> list[Configuration]:
    """Group replicates, compute their stats, rank by the primary metric (best first)."""
    groups: dict[tuple, list[int]] = {}
    for i in range(len(design.runs)):
        groups.setdefault(design.configuration(i), []).append(i)

    keys = [c.key for c in columns(design, metric)]
    index = {levels: g for g, levels in enumerate(groups)}
    frame = frame.assign(_config=[index[design.configuration(i)] for i in range(len(frame))])
    ok = frame[frame["status"] == OK]
    # pandas: mean and std (ddof=1) skip missing values; count says how many were there.
    agg = ok.groupby("_config")[keys].agg(["mean", "std", "count"]) if len(ok) else None

    result = []
    for g, (levels, members) in enumerate(groups.items()):
        config = Configuration(
            levels=levels,
            label=design.label(levels),
            runs=members,
            status=_status([design.runs[i].status for i in members]),
            n_ok=sum(design.runs[i].ok for i in members),
        )
        for key in keys:
            if agg is not None and g in agg.index and agg.at[g, (key, "count")] > 0:
                n = int(agg.at[g, (key, "count")])
                std = float(agg.at[g, (key, "std")]) if n > 1 else None
                config.stats[key] = Stat(float(agg.at[g, (key, "mean")]), std, n)
            else:
                config.stats[key] = Stat(None, None, 0)
        result.append(config)

    def order(config: Configuration) -> tuple:
        mean = config.stats[metric].mean
        if mean is None:
            return (1, 0.0, tuple(level.key for level in config.levels))
        return (0, -mean if maximize else mean, tuple(level.key for level in config.levels))

    result.sort(key=order)
    for rank, config in enumerate(c for c in result if c.stats[metric].mean is not None):
        config.rank = rank + 1
    return result


def _status(statuses: list[str]) -> str:
    counts = Counter(statuses)
    if len(counts) == 1:
        return statuses[0]
    known = {s: i for i, s in enumerate(KNOWN_STATUSES)}
    ordered = sorted(counts, key=lambda s: (known.get(s, len(known)), s))
    return ", ".join(f"{counts[s]} {s}" for s in ordered)


def table_rows(
    design: Design, configs: list[Configuration], metric: str, maximize: bool
) -> tuple[list[str], list[list], set[int]]:
    """Header, rows and right-aligned column indices of the runs table."""
    cols = [c for c in columns(design, metric) if c.key == metric or any(cf.stats[c.key].n for cf in configs)]
    replicated = any(len(c.runs) > 1 for c in configs)
    arrow = "↑" if maximize else "↓"

    header = ["rank"]
    if design.multi_sweep:
        header.append(SWEEP)
    header += [f.name for f in design.factors if f.name != SWEEP]
    if replicated:
        header.append("seeds")
    header += ["n", "status"]
    first_metric = len(header)
    header += [f"{c.header} {arrow}" if c.key == metric else c.header for c in cols]

    rows = []
    for config in configs:
        best = config.rank == 1
        row: list = [Strong(f"★ {config.rank}") if best else ("—" if config.rank is None else str(config.rank))]
        if design.multi_sweep:
            row.append(" ".join(sorted({design.runs[i].sweep for i in config.runs}, key=design.sweeps.index)))
        row += [Code(level.text) for f, level in zip(design.factors, config.levels) if f.name != SWEEP]
        if replicated:
            row.append(",".join(design.seeds[i] or "?" for i in config.runs))
        row += [str(config.n_ok), config.status]
        for c in cols:
            text = config.stats[c.key].show(c)
            row.append(Strong(text) if best and c.key == metric else text)
        rows.append(row)
    right = {0, first_metric - 2, *range(first_metric, len(header))}  # rank, n, the numbers
    return header, rows, right


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    # Floats are written with repr (shortest round-trip), so the file is deterministic.
    artifacts.atomic_write_text(path, frame.to_csv(index=False, lineterminator="\n"))
