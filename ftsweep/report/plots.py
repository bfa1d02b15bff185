"""The report's figures, drawn with matplotlib's Agg backend (no display needed).

Figures are built on matplotlib.figure.Figure, not pyplot, so nothing is left
in pyplot's global state of whoever called build_report (the sweep callback
runs inside Hydra's process). PNGs carry no "Software" entry and are drawn
from sorted data, so a rebuilt report gives identical files.

Readability rules: every axis says what it measures and in which unit,
legends sit outside the axes, numeric levels are placed at their values (log
scale when they span a decade or more, or for learning rates) and joined by
lines, text levels (lora variants, any non-numeric value) are points in their
sorted order with nothing joining them, since their order means nothing. No
text may leave the figure: matplotlib's constrained layout makes room for
every label and legend, and long titles and labels are wrapped
(tests/test_report_figures.py checks every text's extent).
"""

from __future__ import annotations

import math
import re
import textwrap
import warnings
from contextlib import contextmanager
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402 - after selecting the backend
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import EngFormatter, NullFormatter, NullLocator  # noqa: E402

from ftsweep import metrics  # noqa: E402
from ftsweep.artifacts import METRICS, SPLIT_EVAL, SPLIT_TRAIN  # noqa: E402

from .effects import Grid, Interaction, LevelEffect, MainEffect, Series  # noqa: E402
from .factors import Design, Factor, Level  # noqa: E402
from .table import Configuration, Stat  # noqa: E402

DPI = 100
MAX_LEGEND = 25  # configurations; beyond this a legend hides more than it explains
MAX_LINES = 10  # lines on the data-size plot that colours can still tell apart
LEGEND_CHARS = 60  # a longer configuration label takes two lines in the loss curves' legend


# Families tried after DejaVu Sans for the characters it lacks (Chinese, Japanese, Korean values such as
# data.path="古诗.json"): matplotlib draws each character with the first listed font that has it. Only installed
# families are listed, since each missing one makes matplotlib log a warning per figure.
FALLBACK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Source Han Sans SC", "WenQuanYi Zen Hei",
                  "WenQuanYi Micro Hei", "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB", "SimHei",
                  "Arial Unicode MS")
# Their files' names, for fonts installed after matplotlib cached its font list (it never looks again).
_FALLBACK_FILES = re.compile(r"CJK|wqy|SourceHan|msyh|PingFang|Hiragino|simhei|Arial Unicode", re.IGNORECASE)
_MISSING_GLYPH = re.compile(r"Glyph (\d+) .*missing from font")


def _fallback_families() -> list[str]:
    """The installed FALLBACK_FONTS. matplotlib lists the fonts it found on first use and keeps that list: a CJK
    font installed later (as the report's own advice says to) would never be used, so when none is listed the
    system's font files are looked through (fc-list, about 10 ms) and the fallback ones added."""
    from matplotlib import font_manager

    def listed() -> list[str]:
        names = {font.name for font in font_manager.fontManager.ttflist}
        return [name for name in FALLBACK_FONTS if name in names]

    if not listed():
        for path in font_manager.findSystemFonts():
            if _FALLBACK_FILES.search(Path(path).name):
                try:
                    font_manager.fontManager.addfont(path)
                except (OSError, RuntimeError, ValueError):  # a file FreeType cannot read is one font fewer
                    pass
    return listed()


@contextmanager
def drawing():
    """The figures drawn inside use the fallback fonts. Yields a set that, once the block ends, holds the characters
    no installed font has: matplotlib draws each as an empty box (and warned once per character and figure), so
    two values in Chinese looked alike on every axis. The caller says so in one line instead."""
    families = ["DejaVu Sans", *_fallback_families()]
    missing: set[str] = set()
    with matplotlib.rc_context({"font.family": families}), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            yield missing
        finally:
            for w in caught:
                if (glyph := _MISSING_GLYPH.search(str(w.message))) is not None:
                    missing.add(chr(int(glyph.group(1))))
                else:  # any other warning goes on as it came
                    warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def metric_label(metric: str, maximize: bool) -> str:
    """The metric's name, its unit from the metric registry, and which way the report ranks it."""
    return _safe(metrics.get(metric).axis_label(maximize))


def effects_plot(effects: list[MainEffect], metric: str, maximize: bool, path: Path) -> None:
    """Main effects: one panel per factor, the metric's level means; bars are 95 % intervals
    over seeds when seeds were repeated, and absent otherwise (nothing to estimate noise from)."""
    ncols = min(len(effects), 3)
    nrows = math.ceil(len(effects) / ncols)
    width = 4.4 * ncols + 1.2
    fig = _figure(width, 3.8 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    intervals = any(e.half is not None for effect in effects for e in effect.levels)
    for ax, effect in zip(axes, effects):
        xs, log = _positions(effect.factor)
        points = [(x, e) for x, e in zip(xs, effect.levels) if e.stat.mean is not None]
        _points(ax, [x for x, _ in points], [e for _, e in points], effect.factor.numeric, "tab:blue")
        # A level tried without an ok run (lr 50 diverged): marked on the axis, so its tick is not read as a gap.
        for x, e in zip(xs, effect.levels):
            if e.stat.mean is None:
                ax.plot([x], [0.03], marker="x", color="tab:red", transform=ax.get_xaxis_transform(), clip_on=False)
                ax.annotate("no ok run", (x, 0.03), xycoords=ax.get_xaxis_transform(), textcoords="offset points",
                            xytext=(0, 7), ha="center", fontsize=8, color="tab:red")
        counts = {e.stat.n for _, e in points}
        if len(counts) > 1:  # unequal levels: each point says how many runs it averages
            for x, e in points:
                ax.annotate(f"n={e.stat.n}", (x, e.stat.mean), textcoords="offset points", xytext=(6, 4), fontsize=8)
        _level_axis(ax, effect.factor, xs, log)
        n = counts.pop() if len(counts) == 1 else None
        each = f" ({n} run{'s' if n != 1 else ''} per level)" if n is not None else ""
        ax.set_title(_wrap(effect.factor.name + each, 4.2, 12))
        ax.grid(True, alpha=0.3)
    for ax in axes[len(effects) :]:
        ax.set_visible(False)
    for row in range(nrows):
        axes[row * ncols].set_ylabel(_wrap(metric_label(metric, maximize), 3.4, 10))
    # Two 95 % intervals can overlap while the difference stands out (its half-width is sqrt(h1² + h2²), not
    # h1 + h2): the figure says so, and the report's text gives the test.
    bars = ("bars: 95 % interval over seeds; bars that overlap can still differ, the text tests it" if intervals
            else "one seed per configuration: no interval")
    fig.suptitle(_wrap(f"Main effects on {_safe(metric)}: mean over the other factors and seeds ({bars})", width, 12))
    _save(fig, path)


def interaction_plot(views: list[Interaction], metric: str, maximize: bool, path: Path) -> None:
    """One panel per pair of factors: the metric along one, a line (or, for text levels, a
    column of points) per level of the other. Parallel lines: the factors act alone; crossing
    lines: the best level of one depends on the other."""
    ncols = min(len(views), 2)
    nrows = math.ceil(len(views) / ncols)
    legend = max(_legend_width([lv.text for lv, _ in v.lines], title=v.by.name) for v in views)
    width = (4.6 + legend) * ncols + 0.8
    fig = _figure(width, 3.9 * nrows + 0.8)
    axes = fig.subplots(nrows, ncols, sharey=True, squeeze=False).ravel()
    intervals = False
    for ax, view in zip(axes, views):
        xs, log = _positions(view.x)
        where = dict(zip((lv.key for lv in view.x.levels), xs))
        k = len(view.lines)
        for i, (color, (level, points)) in enumerate(zip(_colors(k), view.lines)):
            shown = [p for p in points if p.stat.mean is not None]
            # The lines' points side by side at each level, so no point or interval hides another.
            at = [_dodge(where[p.level.key], i, k, xs, log, view.x.numeric) for p in shown]
            _points(ax, at, shown, view.x.numeric, color, label=_tick_text(level))
            intervals |= any(p.half is not None for p in shown)
        _level_axis(ax, view.x, xs, log)
        ax.set_title(_wrap(f"{view.x.name}, one line per {view.by.name}", 4.4, 11), fontsize=11)
        ax.grid(True, alpha=0.3)
        ax.legend(title=_safe(view.by.name), loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8,
                  title_fontsize=8, frameon=False)
    for ax in axes[len(views) :]:
        ax.set_visible(False)
    for row in range(nrows):
        axes[row * ncols].set_ylabel(_wrap(metric_label(metric, maximize), 3.4, 10))
    bars = "bars: 95 % interval over seeds" if intervals else "one seed per configuration: no interval"
    fig.suptitle(_wrap(f"Interactions: {_safe(metric)} by each pair of swept parameters, mean over the rest "
                       f"({bars})", width, 12))
    _save(fig, path)


def heatmap(grid: Grid, metric: str, maximize: bool, path: Path) -> None:
    """The two factors against each other; each cell the mean over seeds. A cell no run tried
    (a search samples a few) stays blank; one whose runs all failed says so."""
    rows, cols = grid.rows.levels, grid.cols.levels
    values = [[_cell(grid, r, c).mean for c in cols] for r in rows]
    matrix = [[math.nan if v is None else v for v in row] for row in values]
    width, height = 1.3 * len(cols) + 3.6, 0.9 * len(rows) + 2.0
    fig = _figure(width, height)
    ax = fig.subplots()
    # Best is bright in both directions: reversed colours when lower is better.
    image = ax.imshow(matrix, cmap="viridis" if maximize else "viridis_r", aspect="auto")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.08)
    colorbar.set_label(_wrap(metric_label(metric, maximize), max(height - 1.2, 1.5), 10))

    finite = [(v, i, j) for i, row in enumerate(values) for j, v in enumerate(row) if v is not None]
    best = (max if maximize else min)(finite, default=None)
    low, high = (min(v for v, _, _ in finite), max(v for v, _, _ in finite)) if finite else (0.0, 1.0)
    untried = False
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            stat = grid.cells.get((r.key, c.key))
            if stat is None:
                untried = True
                continue
            if stat.mean is None:
                ax.text(j, i, "no ok run", ha="center", va="center", fontsize=8, color="0.3")
                continue
            text = f"{stat.mean:.4f}" + (f"\n± {stat.std:.4f}" if stat.std is not None else "") + f"\nn={stat.n}"
            # Dark text on the bright end of the colour map, light text on the dark end.
            share = (stat.mean - low) / (high - low) if high > low else 0.5
            bright = share > 0.5 if maximize else share < 0.5
            ax.text(j, i, text, ha="center", va="center", fontsize=8 if len(cols) > 6 else 9,
                    color="black" if bright else "white")
    if best is not None:
        _, i, j = best
        ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2.5))
    long_ticks = sum(len(_tick_text(level)) for level in cols) > 7 * len(cols)
    ax.set_xticks(range(len(cols)), [_tick_text(level) for level in cols], rotation=30 if long_ticks else 0,
                  ha="right" if long_ticks else "center")
    ax.set_yticks(range(len(rows)), [_tick_text(level) for level in rows])
    ax.set_xlabel(_wrap(grid.cols.name, width - 2, 10))
    ax.set_ylabel(_wrap(grid.rows.name, height - 1, 10))
    note = "best outlined red" + ("; blank: no run tried" if untried else "")
    ax.set_title(_wrap(f"{_safe(metric)} by {_safe(grid.rows.name)} and {_safe(grid.cols.name)} ({note})", width - 0.6, 12))
    _save(fig, path)


def data_size_plot(series: list[Series], overall: MainEffect, metric: str, maximize: bool, path: Path) -> None:
    """The metric against training-set size. Up to MAX_LINES settings of the other factors
    get a line and a legend entry each; beyond that they are thin grey lines under the
    bold mean over all of them (the main effect of data.n)."""
    separate = len(series) <= MAX_LINES
    labelled = separate and len(series) > 1
    legend = _legend_width([line.label for line in series]) if labelled else 0.0
    width = 7.5 + legend
    fig = _figure(width, 4.8)
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
    if separate:
        ax.set_title(_wrap(f"{_safe(metric)} against training-set size (mean ± std over seeds)", 7.0, 12))
    else:
        ax.set_title(
            _wrap(f"{_safe(metric)} against training-set size", 7.0, 10) + "\n"
            + _wrap(f"blue: mean ± std over all runs; grey: each of {len(series)} settings of the other factors", 7.0, 10),
            fontsize=10,
        )
    ax.set_ylabel(_wrap(metric_label(metric, maximize), 3.8, 10))
    ax.grid(True, alpha=0.3)
    if labelled:
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
    _save(fig, path)


def loss_curves(design: Design, configs: list[Configuration], path: Path) -> bool:
    """Train and eval loss against step and tokens seen; every run in one figure, one
    colour per configuration (seeds share it). Returns False when no run logged a loss."""
    labels_all = [c.label + (f"  ({len(c.runs)} seeds)" if len(c.runs) > 1 else "") for c in configs]
    legend = _legend_width(labels_all, title="configuration", width=LEGEND_CHARS) if len(configs) <= MAX_LEGEND else 0.0
    width = 12 + legend
    fig = _figure(width, 8.4)
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
                    # Evaluations are few, each a point; a train curve of one logged step is a point too (a line
                    # through one point draws nothing, and the panel looked empty).
                    marker="o" if split == SPLIT_EVAL or len(points) == 1 else None,
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
        fig.legend(handles, [_break(label, LEGEND_CHARS) for label in labels], loc="outside right upper", fontsize=8,
                   title="configuration", title_fontsize=8, frameon=False)
    else:
        # Configurations come best first, so the ordered colour map shows the ranking.
        title += f" ({len(handles)} configurations, coloured by rank in the runs table: dark = best)"
    fig.suptitle(_wrap(title, width, 12))
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
    elif factor.numeric:
        # Every level in view, the ones without an ok run included: their tick says they were tried.
        pad = 0.1 * (max(xs) - min(xs)) or 0.5
        ax.set_xlim(min(xs) - pad, max(xs) + pad)
    else:
        ax.set_xlim(-0.6, len(xs) - 0.4)  # text levels: one slot each, room for side-by-side points
    ax.margins(y=0.12)  # room above the top point for its n= note
    kind = " (log scale)" if log else "" if factor.numeric else " (categories: unordered)"
    ax.set_xlabel(_wrap(factor.name + kind, 4.0, 10))
    if factor.numeric and _crowded(xs, log):
        return  # sampled values (a search): matplotlib's own ticks; the points show where the runs are
    labels = [_tick_text(level) for level in factor.levels]
    rotate = sum(len(label) for label in labels) > 30
    ax.set_xticks(xs, labels, rotation=30 if rotate else 0, ha="right" if rotate else "center")


def _crowded(xs: list[float], log: bool) -> bool:
    """Whether one label per level would overlap: many levels, or two closer than 1/8 of the axis."""
    if len(xs) > 8:
        return True
    at = sorted(math.log10(x) for x in xs) if log else sorted(xs)
    span = at[-1] - at[0]
    return span > 0 and min(b - a for a, b in zip(at, at[1:])) < span / 8


def _points(ax, xs: list[float], effects: list[LevelEffect], joined: bool, color, label: str | None = None) -> None:
    """Level means with their 95 % intervals where known; joined by a line only along a numeric axis."""
    yerr = [e.half or 0.0 for e in effects] if any(e.half is not None for e in effects) else None
    ax.errorbar(xs, [e.stat.mean for e in effects], yerr=yerr, marker="o", capsize=4, color=color,
                linestyle="-" if joined else "none", label=label)


def _dodge(x: float, i: int, k: int, xs: list[float], log: bool, numeric: bool) -> float:
    """Line i of k, shifted off the level's position by a small share of the axis."""
    step = i - (k - 1) / 2
    if not numeric:
        return x + step * min(0.12, 0.6 / k)
    if log:
        return x * 10 ** (step * 0.012 * math.log10(max(xs) / min(xs)))
    return x + step * 0.012 * (max(xs) - min(xs))


def _figure(width: float, height: float) -> Figure:
    """A figure whose layout engine makes room for every title, label and outside legend."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)  # its own canvas: measurable (get_renderer) without pyplot
    return fig


def _wrap(text: str, inches: float, points: float) -> str:
    """Text broken into lines that fit ``inches`` at a font of ``points`` (about 0.6 em per character)."""
    per_line = max(12, int(inches * 72 / (points * 0.6)))
    return "\n".join(textwrap.wrap(_safe(text), per_line, break_long_words=True, break_on_hyphens=False)) or _safe(text)


def _tick_text(level: Level) -> str:
    """A level's label on an axis: long numbers to 4 digits (a search's sampled 0.000123456789012
    is 0.0001235 there; the tables keep every digit), long text broken into lines."""
    if level.number is not None and len(level.text) > 9:
        return f"{level.number:.4g}"
    return _break(_safe(level.text), 18)


def _break(text: str, width: int) -> str:
    """Lines of at most ``width`` characters, broken after a separator (+ , _ / .) where there is one."""
    lines, rest = [], text
    while len(rest) > width:
        cut = max(rest.rfind(sep, 0, width) for sep in "+,_/. ")
        cut = cut + 1 if cut > 0 else width
        lines.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    return "\n".join(lines + [rest])


def _legend_width(labels: list[str], title: str = "", width: int = 60) -> float:
    """Inches a legend of 8 pt text needs: ~0.062 in per character plus the line sample
    (labels longer than ``width`` characters are broken into lines of it)."""
    return 0.062 * max([min(len(label), width) for label in labels] + [len(title)]) + 0.7


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
