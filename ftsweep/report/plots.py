"""The report's figures, drawn with matplotlib's Agg backend (no display needed).

Figures are built on matplotlib.figure.Figure, not pyplot, so nothing is left
in pyplot's global state of whoever called build_report (the sweep callback
runs inside Hydra's process). PNGs carry no "Software" entry and are drawn
from sorted data, so a rebuilt report gives identical files.

Readability rules: every axis says what it measures and in which unit,
legends sit outside the axes, numeric levels are placed at their values (log
scale when they span a decade or more, or for learning rates), text levels
in their sorted order.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402 - after selecting the backend
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import EngFormatter, NullFormatter, NullLocator  # noqa: E402

from ftsweep import metrics  # noqa: E402
from ftsweep.artifacts import METRICS, SPLIT_EVAL, SPLIT_TRAIN  # noqa: E402

from .effects import Grid, MainEffect, Series  # noqa: E402
from .factors import Design, Factor, Level  # noqa: E402
from .table import Configuration, Stat  # noqa: E402

DPI = 100
MAX_LEGEND = 25  # configurations; beyond this a legend hides more than it explains
MAX_LINES = 10  # lines on the data-size plot that colours can still tell apart


def metric_label(metric: str, maximize: bool) -> str:
    """The metric's name, its unit from the metric registry, and which way the report ranks it."""
    return _safe(metrics.get(metric).axis_label(maximize))


def effects_plot(effects: list[MainEffect], metric: str, maximize: bool, path: Path) -> None:
    """Main effects: one panel per factor, the metric's level means with ± std bars."""
    ncols = min(len(effects), 3)
    nrows = math.ceil(len(effects) / ncols)
    fig = Figure(figsize=(4.4 * ncols + 0.9, 3.6 * nrows + 0.5))
    _margins(fig, left=0.9, right=0.2, top=0.9, bottom=0.7, wspace=0.15, hspace=0.9 / 3.6 * 1.6)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    for ax, effect in zip(axes, effects):
        xs, log = _positions(effect.factor)
        points = [(x, e.stat) for x, e in zip(xs, effect.levels) if e.stat.mean is not None]
        ax.errorbar(
            [x for x, _ in points],
            [s.mean for _, s in points],
            yerr=[s.std or 0.0 for _, s in points],
            marker="o",
            capsize=4,
            color="tab:blue",
        )
        for x, stat in points:
            ax.annotate(f"n={stat.n}", (x, stat.mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
        _level_axis(ax, effect.factor, xs, log)
        ax.set_title(_safe(effect.factor.name))
        ax.grid(True, alpha=0.3)
    for ax in axes[len(effects) :]:
        ax.set_visible(False)
    for row in range(nrows):
        axes[row * ncols].set_ylabel(metric_label(metric, maximize))
    fig.suptitle(f"Main effects on {_safe(metric)}: mean ± std over the other factors and seeds")
    _save(fig, path)


def heatmap(grid: Grid, metric: str, maximize: bool, path: Path) -> None:
    """The two factors against each other; each cell the mean over seeds."""
    rows, cols = grid.rows.levels, grid.cols.levels
    values = [[_cell(grid, r, c).mean for c in cols] for r in rows]
    matrix = [[math.nan if v is None else v for v in row] for row in values]
    width, height = 1.6 * len(cols) + 3.4, 1.0 * len(rows) + 1.9
    fig = Figure(figsize=(width, height))
    _margins(fig, left=1.0, right=1.7, top=0.6, bottom=0.8)
    ax = fig.subplots()
    # Best is bright in both directions: reversed colours when lower is better.
    image = ax.imshow(matrix, cmap="viridis" if maximize else "viridis_r", aspect="auto")
    colorbar = fig.colorbar(image, cax=fig.add_axes((1 - 1.35 / width, 0.8 / height, 0.18 / width, 1 - 1.4 / height)))
    colorbar.set_label(metric_label(metric, maximize))

    finite = [(v, i, j) for i, row in enumerate(values) for j, v in enumerate(row) if v is not None]
    best = (max if maximize else min)(finite, default=None)
    low, high = (min(v for v, _, _ in finite), max(v for v, _, _ in finite)) if finite else (0.0, 1.0)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            stat = _cell(grid, r, c)
            if stat.mean is None:
                ax.text(j, i, "no ok run", ha="center", va="center", fontsize=8, color="0.3")
                continue
            text = f"{stat.mean:.4f}" + (f"\n± {stat.std:.4f}" if stat.std is not None else "") + f"\nn={stat.n}"
            # Dark text on the bright end of the colour map, light text on the dark end.
            share = (stat.mean - low) / (high - low) if high > low else 0.5
            bright = share > 0.5 if maximize else share < 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=9, color="black" if bright else "white")
    if best is not None:
        _, i, j = best
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    ax.set_xticks(range(len(cols)), [_safe(level.text) for level in cols])
    ax.set_yticks(range(len(rows)), [_safe(level.text) for level in rows])
    ax.set_xlabel(_safe(grid.cols.name))
    ax.set_ylabel(_safe(grid.rows.name))
    ax.set_title(f"{_safe(metric)} by {_safe(grid.rows.name)} and {_safe(grid.cols.name)} (best outlined red)")
    _save(fig, path)


def data_size_plot(series: list[Series], overall: MainEffect, metric: str, maximize: bool, path: Path) -> None:
    """The metric against training-set size. Up to MAX_LINES settings of the other factors
    get a line and a legend entry each; beyond that they are thin grey lines under the
    bold mean over all of them (the main effect of data.n)."""
    separate = len(series) <= MAX_LINES
    labelled = separate and len(series) > 1
    legend = _legend_width([line.label for line in series]) if labelled else 0.0
    fig = Figure(figsize=(7.5 + legend, 4.5))
    _margins(fig, left=0.9, right=0.3 + legend, top=0.5, bottom=0.7)
    ax = fig.subplots()
    for color, line in zip(_colors(len(series)), series):
        xs, stats = [x for x, _ in line.points], [s for _, s in line.points]
        if separate:
            yerr = [s.std or 0.0 for s in stats]
            ax.errorbar(xs, [s.mean for s in stats], yerr=yerr, marker="o", capsize=4, color=color, label=_safe(line.label))
        else:
            ax.plot(xs, [s.mean for s in stats], color="0.6", linewidth=0.8, alpha=0.7)
    if not separate:
        points = [(e.level.number, e.stat) for e in overall.levels if e.level.number is not None and e.stat.mean is not None]
        ax.errorbar(
            [x for x, _ in points],
            [s.mean for _, s in points],
            yerr=[s.std or 0.0 for _, s in points],
            marker="o",
            capsize=4,
            color="tab:blue",
            linewidth=2.5,
        )
    sizes = sorted({x for line in series for x, _ in line.points})
    log = bool(sizes) and sizes[0] > 0 and sizes[-1] / sizes[0] >= 10
    if log:
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(sizes, [f"{x:g}" for x in sizes])
    ax.set_xlabel("data.n (training records" + (", log scale)" if log else ")"))
    ax.set_ylabel(metric_label(metric, maximize))
    if separate:
        ax.set_title(f"{_safe(metric)} against training-set size (mean ± std over seeds)")
    else:
        ax.set_title(
            f"{_safe(metric)} against training-set size\n"
            f"blue: mean ± std over all runs; grey: each of {len(series)} settings of the other factors",
            fontsize=10,
        )
    ax.grid(True, alpha=0.3)
    if labelled:
        anchor = (1 - legend / (7.5 + legend), 1 - 0.5 / 4.5)
        fig.legend(loc="upper left", bbox_to_anchor=anchor, fontsize=8, frameon=False)
    _save(fig, path)


def loss_curves(design: Design, configs: list[Configuration], path: Path) -> bool:
    """Train and eval loss against step and tokens seen; every run in one figure, one
    colour per configuration (seeds share it). Returns False when no run logged a loss."""
    labels_all = [c.label + (f"  ({len(c.runs)} seeds)" if len(c.runs) > 1 else "") for c in configs]
    legend = _legend_width(labels_all, title="configuration") if len(configs) <= MAX_LEGEND else 0.0
    width = 12 + legend
    fig = Figure(figsize=(width, 8))
    _margins(fig, left=0.8, right=0.25 + legend, top=0.7, bottom=0.6, wspace=0.25, hspace=0.35)
    axes = fig.subplots(2, 2)
    panels = {
        (SPLIT_TRAIN, "step"): axes[0][0],
        (SPLIT_EVAL, "step"): axes[0][1],
        (SPLIT_TRAIN, "tokens_seen"): axes[1][0],
        (SPLIT_EVAL, "tokens_seen"): axes[1][1],
    }
    colors = _colors(len(configs))
    handles, labels, drawn, unfinished = [], [], False, False
    for color, config, label in zip(colors, configs, labels_all):
        handle = None
        for i in config.runs:
            run = design.runs[i]
            style = "-" if run.ok else ":"
            unfinished |= not run.ok
            for (split, x_key), ax in panels.items():
                y_key = "loss" if split == SPLIT_TRAIN else "eval_loss"
                points = sorted(
                    (r[x_key], r[y_key])
                    for r in run.metrics
                    if r.get("split") == split and _finite(r.get(x_key)) and _finite(r.get(y_key))
                )
                if not points:
                    continue
                (line,) = ax.plot(
                    [p[0] for p in points],
                    [p[1] for p in points],
                    style,
                    color=color,
                    marker="o" if split == SPLIT_EVAL else None,
                    markersize=3,
                    linewidth=1.3,
                    alpha=0.85,
                )
                handle = handle or line
                drawn = True
        if handle is not None:
            handles.append(handle)
            labels.append(_safe(label))
    if not drawn:
        return False

    for (split, x_key), ax in panels.items():
        ax.set_title(f"{split} loss by {'optimizer step' if x_key == 'step' else 'tokens seen'}")
        ax.set_xlabel("optimizer step" if x_key == "step" else "tokens seen (non-pad training tokens)")
        ax.set_ylabel(f"{split} loss ({metrics.get('loss').unit})")
        if x_key == "tokens_seen":
            ax.xaxis.set_major_formatter(EngFormatter())
        ax.grid(True, alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, f"no {split} lines in {METRICS}", ha="center", va="center", transform=ax.transAxes)
    title = "Loss curves"
    if unfinished:
        title += " (dotted: runs that did not finish ok)"
    if len(handles) <= MAX_LEGEND:
        fig.legend(
            handles,
            labels,
            loc="upper left",
            bbox_to_anchor=(1 - legend / width, 1 - 0.7 / 8),
            fontsize=8,
            title="configuration",
            frameon=False,
        )
    else:
        # Configurations come best first, so the ordered colour map shows the ranking.
        title += f" ({len(handles)} configurations, coloured by rank in the runs table: dark = best)"
    fig.suptitle(title)
    _save(fig, path)
    return True


# ----------------------------------------------------------------- helpers


def _positions(factor: Factor) -> tuple[list[float], bool]:
    """x positions of a factor's levels and whether the axis is logarithmic."""
    numbers = [level.number for level in factor.levels]
    if not factor.numeric:
        return list(range(len(numbers))), False
    positive = all(x > 0 for x in numbers)
    lr_like = factor.name.split(".")[-1] in ("lr", "learning_rate") or factor.name.endswith("_lr")
    span = positive and max(numbers) / min(numbers) >= 10
    return numbers, positive and (span or lr_like)


def _level_axis(ax, factor: Factor, xs: list[float], log: bool) -> None:
    if log:
        ax.set_xscale("log")
        # Only the swept levels are labelled; matplotlib's minor labels would add others.
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    else:
        ax.margins(x=0.15)
    rotate = sum(len(level.text) for level in factor.levels) > 30
    ax.set_xticks(xs, [_safe(level.text) for level in factor.levels], rotation=30 if rotate else 0)
    unit = " (log scale)" if log else ""
    ax.set_xlabel(_safe(factor.name) + unit)


def _margins(fig: Figure, left: float, right: float, top: float, bottom: float, **space: float) -> None:
    """Margins in inches, not fractions: text needs the same room whatever the figure size.
    (Fixed margins instead of a layout engine: an engine draws every figure twice.)"""
    width, height = fig.get_size_inches()
    fig.subplots_adjust(left=left / width, right=1 - right / width, top=1 - top / height, bottom=bottom / height, **space)


def _legend_width(labels: list[str], title: str = "") -> float:
    """Inches a legend of 8 pt text needs: ~0.062 in per character plus the line sample."""
    return 0.062 * max([len(label) for label in labels] + [len(title)]) + 0.7


def _cell(grid: Grid, row: Level, col: Level) -> Stat:
    return grid.cells.get((row.key, col.key), Stat(None, None, 0))


def _colors(n: int) -> list:
    # Qualitative maps while colours can still be told apart, then an ordered one.
    if n <= 10:
        return [matplotlib.colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [matplotlib.colormaps["tab20"](i) for i in range(n)]
    return [matplotlib.colormaps["viridis"](i / (n - 1)) for i in range(n)]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _safe(text: str) -> str:
    # A `$` in a config value would switch matplotlib into math mode (and can fail to parse).
    return str(text).replace("$", r"\$")


def _save(fig: Figure, path: Path) -> None:
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
