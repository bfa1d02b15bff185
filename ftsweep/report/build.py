"""Assemble the report: read runs, compute the tables, draw the plots, write the files.

    <out>/report.md     GitHub markdown; images linked as plots/*.png
    <out>/report.html   the same report in one file, images embedded as data URIs
    <out>/runs.csv      one row per run, raw numbers
    <out>/plots/*.png   effects.png, heatmap.png, data_size.png, loss_curves.png

report.md and runs.csv depend only on the run directories: no clock, no
absolute paths, sorted everywhere, fixed number formats. Building twice gives
the same bytes.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

from ftsweep import artifacts
from ftsweep.artifacts import (
    INTERRUPTED,
    KNOWN_STATUSES,
    MANIFEST,
    METRICS,
    NOT_STARTED,
    PLOT_DATA_SIZE,
    PLOT_EFFECTS,
    PLOT_FILES,
    PLOT_HEATMAP,
    PLOT_INTERACTIONS,
    PLOT_LOSS_CURVES,
    PLOTS,
    REPORT_HTML,
    REPORT_MD,
    RUNNING,
    RUNS_CSV,
    SKIPPED,
    SPLIT_EVAL,
    SPLIT_TRAIN,
    SUMMARY,
    SWEEP,
    UNKNOWN,
)

from ftsweep.metrics import as_number

from . import effects as fx
from . import caveats, paired, plots, repro
from .collect import ReportError, Run, Sweep, available_metrics, collect
from .factors import Design, build_design
from .render import Block, Bullets, Code, CodeBlock, Heading, Image, Para, Strong, Table, join_code, to_html, to_markdown
from .table import (
    BASELINE,
    DERIVED,
    IMPROVEMENT,
    IMPROVEMENT_PCT,
    Column,
    columns,
    configurations,
    direction_known,
    fmt,
    fmt_diff,
    maximizes,
    runs_frame,
    table_rows,
    write_csv,
)

MAX_MESSAGE = 500  # characters of an error message shown in the table; runs.csv has all of it

log = logging.getLogger(__name__)


def build_report(
    sweep_dirs: list[str | Path],
    out_dir: str | Path | None = None,
    metric: str = "eval_loss",
    maximize: bool | None = None,
) -> Path:
    sweeps = collect(sweep_dirs)
    return write_report(sweeps, default_out_dir(sweeps) if out_dir is None else Path(out_dir), metric, maximize)


def default_out_dir(sweeps: list[Sweep]) -> Path:
    """A single sweep (or run) gets its report inside it. Several sweeps get theirs in
    <first sweep>/compare/, so a comparison never overwrites a sweep's own report."""
    return sweeps[0].path if len(sweeps) == 1 else sweeps[0].path / artifacts.COMPARE


def write_report(sweeps: list[Sweep], out_dir: Path, metric: str, maximize: bool | None) -> Path:
    design = build_design(sweeps)
    higher = maximizes(metric, maximize)
    frame = runs_frame(design, metric)
    configs = configurations(design, frame, metric, higher)
    metric_col = next(c for c in columns(design, metric) if c.key == metric)

    out_dir.mkdir(parents=True, exist_ok=True)
    plot_dir = out_dir / PLOTS
    plot_dir.mkdir(exist_ok=True)
    for name in PLOT_FILES:  # a figure this build does not draw must not linger from an older one
        (plot_dir / name).unlink(missing_ok=True)

    title = "Ablation report: " + " vs ".join(design.sweeps)
    blocks: list[Block] = [Heading(1, title)]
    noise = fx.seed_noise(design, frame, metric)
    effects = fx.main_effects(design, frame, metric, noise)
    blocks += _overview(sweeps, design, noise, effects, configs, metric, metric_col, maximize, higher)
    blocks += _runs_section(design, configs, metric, higher)
    with plots.drawing() as unreadable:
        blocks += _effects_section(design, frame, noise, effects, configs, metric, metric_col, higher, plot_dir)
        blocks += _curves_section(design, configs, plot_dir)
    if unreadable:
        log.warning("report: no installed font draws %s, so the plots show empty boxes for them (report.md and "
                    "report.html show them); install a CJK font (Debian/Ubuntu: fonts-noto-cjk) and rebuild the "
                    "report with python -m ftsweep.report", " ".join(sorted(unreadable)))
    blocks += _unfinished_section(design)
    blocks += _problems_section(sweeps, design)
    blocks += _repro_section(design, configs)

    write_csv(frame, out_dir / RUNS_CSV)
    artifacts.atomic_write_text(out_dir / REPORT_MD, to_markdown(blocks))
    artifacts.atomic_write_text(out_dir / REPORT_HTML, to_html(blocks, title, out_dir))
    return out_dir / REPORT_MD


# ---------------------------------------------------------------- sections


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _overview(sweeps, design: Design, noise, effects, configs, metric, metric_col: Column, maximize, higher) -> list[Block]:
    counts = Counter(run.status for run in design.runs)
    order = {s: i for i, s in enumerate(KNOWN_STATUSES)}
    status_text = ", ".join(f"{counts[s]} {s}" for s in sorted(counts, key=lambda s: (order.get(s, 99), s)))
    how = "as asked" if maximize is not None else "from its name" if direction_known(metric) else "by default"
    lines: list = [
        [Strong(_count(len(design.runs), "run")), f" in {_count(len(configs), 'configuration')}: {status_text}."],
        ["Primary metric: ", Code(metric), f", {'higher' if higher else 'lower'} is better ({how})."],
    ]
    if metric.startswith("test_") and len(configs) > 1:
        # The test set stays an honest estimate only while it chooses nothing: the best of k configurations by their
        # test scores is the luckiest of k on those very examples.
        lines.append(["Ranked by a test-set figure: choosing the best on ", Code("data.test_path"), " makes it a "
                      "second validation set, and the best's ", Code(metric), " then flatters it. Rank by ",
                      Code("eval_loss"), " (the default) and read the test figures beside it."])
    if design.factors:
        swept = []
        for f in design.factors:
            swept += [", " if swept else "", Code(f.name), " (" + ", ".join(lv.text for lv in f.levels) + ")"]
        lines.append(["Swept: ", *swept, "."])
    else:
        lines.append("No parameter differs between the runs apart from the seed.")
    seeds = sorted({s for s in design.seeds if s is not None})
    if any(len(c.runs) > 1 for c in configs):
        lines.append(f"Replicates: runs that differ only in seed share a row (seeds {', '.join(seeds)}).")

    best = next((c for c in configs if c.rank == 1), None)
    if best is not None:
        stat = best.stats[metric]
        if len(configs) > 1:
            lines.append(["Best: ", Code(best.label), f" with {metric} {stat.show(metric_col)} (n={stat.n})."])
        else:
            lines.append(f"One configuration: {metric} {stat.show(metric_col)} (n={stat.n}).")
            lines += _seed_resolution(noise, stat.n, metric_col)
        lines += _best_against_next(design, configs, noise, metric, metric_col, higher)
        lines += _edges(fx.edges(effects, higher), fx.verdicts(effects, higher))
        base, gain, pct = (best.stats.get(k) for k in (BASELINE, IMPROVEMENT, IMPROVEMENT_PCT))
        if base is not None and base.mean is not None and gain is not None and gain.mean is not None:
            lines.append(_baseline_sentence(base.mean, gain.mean, pct.mean if pct is not None else None))
        test = best.stats.get("test_loss")
        if test is not None and test.mean is not None and not metric.startswith("test_"):
            lines.append(["On the test set (", Code("data.test_path"), "), which chose nothing, the best configuration's "
                          f"loss is {test.show(Column.of('test_loss'))} (n={test.n})."])
    elif any(run.ok for run in design.runs):
        available = available_metrics(design.runs)
        lines.append(
            [Code(metric), f" is in no ok run's {SUMMARY}; available: ", *join_code(available), "."]
        )
    else:
        lines.append("No run finished ok, so nothing is ranked.")

    lines += caveats.lines(design, metric, best.runs if best is not None else [])
    blocks: list[Block] = [Bullets(lines)]
    sweep_rows = []
    for sweep in sweeps:
        meta = sweep.meta
        found = len(sweep.runs)
        total = (meta.get("counts") or {}).get("total") if isinstance(meta.get("counts"), dict) else None
        runs_text = f"{found}" + (f" of {total} in {SWEEP}" if isinstance(total, int) and total != found else "")
        finished = meta.get("finished_at") or ("not finished" if meta else "—")
        # A sweep run again into its directory (skip, resume, a wider grid) keeps its earlier invocations: the
        # sweep started with the first of them (the last alone may have taken a second, skipping every cell).
        earlier = [i for i in meta.get("previous_invocations") or [] if isinstance(i, dict) and i.get("started_at")]
        started = str((earlier[0]["started_at"] if earlier else meta.get("started_at")) or "—")
        if earlier:
            started += f" (the first of {len(earlier) + 1} invocations)"
        # Each distinct command, first to last: a grid widened or a best cell repeated with more seeds into the same
        # directory ran other commands than the last, and the runs of each are in the report.
        commands = list(dict.fromkeys(str(i["command"]) for i in [*earlier, meta] if i.get("command")))
        sweep_rows.append(
            [
                Code(sweep.label),
                join_code(commands, ", then ") if commands else f"no {SWEEP}" if not meta else "—",
                started,
                str(finished),
                runs_text,
            ]
        )
    blocks += [Table(["sweep", "command", "started", "finished", "run dirs"], sweep_rows, {4})]
    return blocks


def _runs_section(design: Design, configs, metric: str, higher: bool) -> list[Block]:
    header, rows, right = table_rows(design, configs, metric, higher)
    return [
        Heading(2, "Runs"),
        Para(
            [
                "One row per configuration, best first by ",
                Code(metric),
                " (★ marks the best). Runs that differ only in seed share a row: quality metrics are "
                "mean ± sample std over the n ok runs, cost columns their mean. Failed and unfinished "
                "runs enter no number. Every run's raw numbers are in runs.csv.",
            ]
        ),
        *(
            [Para(["Baseline: the held-out loss before training (", Code(BASELINE), ", the step-0 evaluation); "
                   "improvement: baseline minus eval loss (positive: training helped), and as % of the baseline."])]
            if any(c.stats[IMPROVEMENT].n for c in configs)
            else []
        ),
        *(
            [Para(["AdaLoRA's train loss includes its orthogonality regulariser (",
                   Code("orth_reg_weight"), " × ‖PᵀP − I‖, which the other methods do not have), so its train loss "
                   "is not comparable with theirs; every held-out number is the plain cross-entropy, as for all."])]
            if any(_method(run) == "adalora" for run in design.runs if run.ok)
            else []
        ),
        Table(header, rows, right),
    ]


def _method(run: Run) -> str | None:
    lora = run.config().get("lora")
    return lora.get("method") if isinstance(lora, dict) else None


def _effects_section(design, frame, noise, effects, configs, metric, metric_col: Column, higher,
                     plot_dir: Path) -> list[Block]:
    if not design.factors:
        return []
    rows = []
    for effect in effects:
        for e in effect.levels:
            row = [Code(effect.factor.name), Code(e.level.text), fmt(e.stat.mean, metric_col), fmt(e.stat.std, metric_col)]
            row += [_interval(e, metric_col)] if noise else []
            rows.append(row + [str(e.stat.n)])
    header = ["parameter", "level", f"{metric} mean", "std"] + (["95 % interval"] if noise else []) + ["n"]
    blocks: list[Block] = [
        Heading(2, "Effects"),
        Para(
            [
                "For each swept parameter, ",
                Code(metric),
                " at each level: the mean over its configurations (each one's mean over its seeds, so a configuration "
                "run with more seeds counts once) and the sample std over its ok runs, pooling the other parameters and "
                "the seeds. Where the ok runs do not fill the grid (a failed cell, a search), a "
                "parameter's levels are compared at the settings of the others where each of its levels ran ok.",
            ]
            + (
                [f" The 95 % interval is the level mean ± t · s / √n, with s = {fmt(noise.std, metric_col)} the "
                 f"spread between seeds of one configuration (pooled sample std, {noise.df} degrees of freedom)"
                 + ("." if len({c.n_ok for c in configs if c.n_ok}) <= 1 else
                    "; where configurations ran different numbers of seeds, ± t · s · √(Σ 1/n_j) / k for k "
                    "configurations of n_j runs each.")]
                if noise
                else []
            )
        ),
        Table(header, rows, set(range(2, len(header)))),
    ]
    blocks += _unmatched_notes(effects)
    spreads = sorted(
        ((e.spread, e.factor.name) for e in effects if e.spread is not None), key=lambda p: (-p[0], p[1])
    )
    if spreads:
        parts: list = ["Spread of the level means (largest first): "]
        for k, (spread, name) in enumerate(spreads):
            parts += [", " if k else "", Code(name), f" {fmt(spread, metric_col)}"]
        blocks.append(Para(parts + ["."]))
    blocks += _noise_statements(effects, noise, metric, metric_col, higher)
    blocks += _held_out_statements(design, frame, effects, metric, metric_col, higher)
    if any(e.stat.mean is not None for effect in effects for e in effect.levels):
        plots.effects_plot(effects, metric, higher, plot_dir / PLOT_EFFECTS)
        blocks.append(Image(f"{PLOTS}/{PLOT_EFFECTS}", f"Main effects on {metric}"))

    views = fx.interactions(design, frame, metric, noise)
    if views and any(view.lines for view in views):
        plots.interaction_plot([v for v in views if v.lines], metric, higher, plot_dir / PLOT_INTERACTIONS)
        blocks += [
            Heading(3, "Interactions"),
            Para(
                "Each panel: the metric along one parameter, one line per level of another, averaged over the "
                "rest. Lines that keep their order mean the better level wins whatever the other parameter; "
                "crossing lines mean it depends on it. Levels that are not numbers are points, not joined."
            ),
            Image(f"{PLOTS}/{PLOT_INTERACTIONS}", f"Interactions of the swept parameters on {metric}"),
        ]
        blocks += _reversal_statements(fx.reversals(views, higher), noise, metric_col)

    grid = fx.two_factor_grid(design, configs, metric)
    if grid is not None and any(s.mean is not None for s in grid.cells.values()):
        plots.heatmap(grid, metric, higher, plot_dir / PLOT_HEATMAP)
        blocks += [
            Heading(3, f"{grid.rows.name} × {grid.cols.name}"),
            Image(f"{PLOTS}/{PLOT_HEATMAP}", f"{metric} by {grid.rows.name} and {grid.cols.name}"),
        ]

    series = fx.data_size_series(design, configs, metric)
    if series:
        overall = next(e for e in effects if e.factor.name == fx.DATA_SIZE)
        plots.data_size_plot(series, overall, metric, higher, plot_dir / PLOT_DATA_SIZE)
        blocks += [Heading(3, "Data size"), Image(f"{PLOTS}/{PLOT_DATA_SIZE}", f"{metric} against data.n")]
        if any(lv.number is None for f in design.factors if f.name == fx.DATA_SIZE for lv in f.levels):
            blocks.append(Para("Levels of data.n that are not a number (null: all records) are not on this plot."))
    return blocks


def _unmatched_notes(effects) -> list[Block]:
    """Which runs a parameter's level means leave out, or that they are over different settings of the others."""
    notes = []
    for effect in effects:
        name = Code(effect.factor.name)
        if not effect.matched:
            notes.append([name, ": no setting of the other parameters has an ok run at each of its levels, so its "
                          "level means are over different settings and do not compare."])
        elif effect.left_out:
            notes.append([name, ": its means leave out ", *join_code(effect.left_out), ", where no other level of ",
                          name, " finished at the same settings of the other parameters."])
    return [Bullets(notes)] if notes else []


def _baseline_sentence(baseline: float, gain: float, pct: float | None) -> str:
    """What training did to the best configuration's held-out loss. A sweep whose every cell diverged (a learning
    rate too high) has a best configuration worse than the base model: said as such, never as a negative "less"."""
    after = fmt(baseline - gain, Column.of("eval_loss"))
    change = f"{fmt(abs(gain), DERIVED[IMPROVEMENT])}" + (f" ({fmt(abs(pct), DERIVED[IMPROVEMENT_PCT])} %)" if pct is not None else "")
    before = f"from {fmt(baseline, Column.of(BASELINE))} before training to {after} for the best configuration"
    if gain > 0:
        return f"Training lowered the held-out loss {before}: {change} less."
    if gain < 0:
        return (f"Training raised the held-out loss {before}: {change} more. The best configuration is worse than the "
                "base model before training: try a lower optim.lr, and check the data.")
    return f"Training left the held-out loss where it was before training ({fmt(baseline, Column.of(BASELINE))})."


def _interval(e, col: Column) -> str:
    if e.stat.mean is None or e.half is None:
        return "—"
    return f"{fmt(e.stat.mean - e.half, col)} to {fmt(e.stat.mean + e.half, col)}"


def _noise_statements(effects, noise, metric: str, col: Column, higher: bool) -> list[Block]:
    """Plain sentences: which level differences the seeds' spread can explain, and which it cannot."""
    if noise is None:
        if any(e.spread is not None for e in effects):
            return [Para(["No configuration ran with more than one seed, so the differences above cannot be told "
                          "from seed-to-seed noise. Repeat the sweep with ", Code("seed=1,2,3"),
                          " to get 95 % intervals."])]
        return []
    items: list = []
    for v in fx.verdicts(effects, higher):
        best, other = v.best.level.text, v.other.level.text
        interval = (f"difference {fmt_diff(v.gap, col)}, 95 % interval {fmt_diff(v.gap - v.half, col)} to "
                    f"{fmt_diff(v.gap + v.half, col)}")
        if v.within_noise:
            items.append([Code(v.factor), f": {best} and {other} are within noise ({interval}, which holds 0)."])
        else:
            items.append([Code(v.factor), f": {best} beats {other} by more than the seeds' noise explains ({interval})."])
    if not items:
        return []
    return [Para(f"Which differences in {metric} stand out from the noise between seeds (the 95 % interval of each "
                 "difference is ± √(h₁² + h₂²) of the two levels' half-widths h: two intervals that overlap can still "
                 "differ):"), Bullets(items)]


def _reversal_statements(found: list, noise, col: Column) -> list[Block]:
    """Plain sentences for crossing lines: a parameter whose best level changes with another's."""
    if not found:
        return []
    items: list = []
    noted = []
    for rev in found:
        parts: list = ["The best ", Code(rev.x.name), " depends on ", Code(rev.by.name), ": "]
        for i, (b, best, rival) in enumerate(rev.bests):
            within = rev.within_noise(i)
            noted.append(within)
            verdict = "" if within is None else ", within the seeds' noise" if within else ", more than the seeds' noise"
            parts += ["; " if i else "", f"{best.level.text} at ", Code(f"{rev.by.name}={b.text}"),
                      f" (by {fmt_diff(abs(best.stat.mean - rival.stat.mean), col)} over {rival.level.text}{verdict})"]
        items.append(parts + ["."])
    lead = "Where lines cross, a parameter's best level changes with another's, and its main effect above averages over that choice"
    if noted and all(w is True for w in noted):
        lead = ("The lines cross, but every crossing is within the seeds' noise: which level is best may not change "
                "with the other parameter at all")
    blocks: list[Block] = [Para(lead + ":"), Bullets(items)]
    if noise is None:
        blocks.append(Para(["Each configuration ran one seed: a reversal by less than the seeds' spread is noise, "
                            "which ", Code("seed=1,2,3"), " measures."]))
    return blocks


def _seed_resolution(noise, n: int, col: Column) -> list:
    """For one configuration run with several seeds (a noise study): about the smallest difference between two
    configurations, each run with as many seeds, that would stand out from this spread. Their comparison would
    pool 2n - 2 degrees of freedom: t(0.975, 2n - 2) · s · √(2/n), with this study's s (itself an estimate)."""
    if noise is None or n < 2:
        return []
    df = 2 * n - 2
    needed = fx.Noise(noise.std, df).difference_half_width(n, n)
    return [f"Between its seeds, s = {fmt_diff(noise.std, col)} ({noise.df} degrees of freedom): of two configurations "
            f"run with {n} seeds each, a measured difference of about {fmt_diff(needed, col)} or more (t(0.975, {df}) · "
            f"s · √(2/{n})) would stand out from the seeds' noise; a true difference of that size shows as one only "
            "about half the time."]


def _best_against_next(design: Design, configs, noise, metric: str, col: Column, higher: bool) -> list:
    """The best configuration against the second: over the same held-out examples (report/paired.py), and, when
    seeds were repeated, against the seeds' noise, which the held-out examples cannot show (another seed trains
    another adapter: 3 seeds each of r=8 and r=16 differed by 0.0194, far outside the held-out sample's noise,
    0.0172 to 0.0216, with a seed-to-seed std of 0.0063)."""
    pair = paired.best_against_next(design, configs, metric, higher)
    seeds = fx.best_against_next_over_seeds(configs, noise, metric)
    between = _between_seeds(seeds, noise, metric, col, higher) if seeds else []
    if pair is None:
        return [["Against the next, ", Code(seeds.next.label), ", ", *between]] if seeds else []
    if pair.tied:
        return [["Against the next, ", Code(pair.worse), f", the best is equal on every one of the {pair.examples} "
                 f"held-out examples: the two are tied, and which of them ranks first says nothing."]]
    verdict = ("more than another sample of as many held-out examples would explain" if pair.stands_out else
               f"within what another sample of {pair.examples} held-out examples could give, so this held-out set does "
               "not tell the two apart")
    direction = "higher" if higher else "lower"
    line = ["Against the next, ", Code(pair.worse), f", the best is {fmt_diff(pair.diff, col)} {direction} (95 % interval "
            f"{fmt_diff(pair.low, col)} to {fmt_diff(pair.high, col)}, paired over the {pair.examples} held-out examples): "
            f"{verdict}."]
    if seeds:
        return [line + [" Between seeds: ", *between]]
    best, second = (next(c for c in configs if c.rank == k) for k in (1, 2))
    if pair.stands_out and best.stats[metric].n == second.stats[metric].n == 1:
        # Only said where the held-out sample would otherwise be the last word: a difference within its noise is
        # already no verdict.
        line += [" Each has one ok run, and another seed trains another adapter; repeat them with ", Code("seed=1,2,3"),
                 " to weigh the difference against that too."]
    return [line]


def _between_seeds(seeds, noise, metric: str, col: Column, higher: bool) -> list:
    """The best configuration's mean against the next's, with the 95 % interval the seeds' spread gives their
    difference (effects.best_against_next_over_seeds)."""
    n_a, n_b = seeds.best.stats[metric].n, seeds.next.stats[metric].n
    if seeds.gap == 0:
        return [f"the best's mean over {_count(n_a, 'seed')} equals the next's over {n_b}: other seeds could put either "
                "first."]
    verdict = ("more than the seeds' noise explains" if not seeds.within_noise else
               "within the seeds' noise, so other seeds could reverse the order")
    return [f"the best's mean over {_count(n_a, 'seed')} is {fmt_diff(seeds.gap, col)} {'higher' if higher else 'lower'} "
            f"than the next's over {n_b}, and with the spread between seeds of one configuration (s = "
            f"{fmt_diff(noise.std, col)}, {noise.df} degrees of freedom) that difference's 95 % interval is "
            f"{fmt_diff(seeds.gap - seeds.half, col)} to {fmt_diff(seeds.gap + seeds.half, col)}: {verdict}."]


def _edges(found: list, verdicts: list) -> list:
    """One line for the parameters whose best level is at an end of the range that ran ok, with the value to add:
    past the range, or between the best and a level past it that gave no result. A best level whose lead over its
    neighbour is within the seeds' noise is said to (r=8 over r=16 by 0.0017, interval -0.0197 to 0.0232: the end
    it sits at may be chance, and the best may be the neighbour)."""
    if not found:
        return []
    noisy = {(v.factor, v.best.level, v.other.level) for v in verdicts if v.within_noise}
    parts: list = []
    for k, edge in enumerate(found):
        parts += [", and " if k == len(found) - 1 and k else ", " if k else "", "the best ", Code(edge.factor),
                  f", {edge.level.text}, is the {edge.end} "
                  + (f"that ran ok (every run at {edge.short_of.text} failed)" if edge.short_of else "tried")
                  + (f" (though its lead over {edge.near.text} is within the seeds' noise)"
                     if (edge.factor, edge.level, edge.near) in noisy else "")]
    parts[1] = parts[1].capitalize()
    short = sum(edge.short_of is not None for edge in found)
    where = ("between them, which a run there tells" if short == len(found) else
             "beyond the range, which a wider sweep tells" if not short else
             "beyond the range or short of a level whose runs failed, which more levels tell")
    adds = join_code([f"{edge.factor}={edge.beyond:g}" for edge in found])
    return [[*parts, f": the best setting may lie {where} (e.g. add ", *adds, ")."]]


def _held_out_statements(design: Design, frame, effects, metric: str, col: Column, higher: bool) -> list[Block]:
    """Plain sentences: which level differences the held-out sample's noise can explain (report/paired.py)."""
    found = paired.level_differences(design, frame, metric, higher, effects)
    if not found:
        return []
    items = [[Code(name), f": {p.better} and {p.worse} are equal on every example."] if p.tied else
             [Code(name), f": {p.better} beats {p.worse} by {fmt_diff(p.diff, col)} ({fmt_diff(p.low, col)} to "
              f"{fmt_diff(p.high, col)}): " + ("more than the sample's noise." if p.stands_out else "within it.")]
             for name, p in found]
    examples = found[0][1].examples
    return [Para(f"Which differences in {metric} stand out from the noise of the held-out sample (a 95 % interval of "
                 f"each difference, paired over the same {examples} examples; another seed adds its own noise, "
                 "which this leaves out):"), Bullets(items)]


def _curves_section(design: Design, configs, plot_dir: Path) -> list[Block]:
    if not plots.loss_curves(design, configs, plot_dir / PLOT_LOSS_CURVES):
        return [Heading(2, "Loss curves"), Para(f"No run logged a loss in {METRICS}.")]
    return [
        Heading(2, "Loss curves"),
        Image(f"{PLOTS}/{PLOT_LOSS_CURVES}", "Train and eval loss against step and tokens seen"),
    ]


def _unfinished_section(design: Design) -> list[Block]:
    rows = []
    for i, run in enumerate(design.runs):
        if run.ok:
            continue
        name = f"{run.sweep}/{run.name}" if design.multi_sweep else run.name
        rows.append([Code(name), run.status, _reason(run), _progress(run)])
    if not rows:
        return []
    return [
        Heading(2, "Failed and unfinished runs"),
        Table(["run", "status", "reason", "progress"], rows),
    ]


def _reason(run: Run) -> str:
    error = run.summary.get("error")
    if isinstance(error, dict) and (error.get("type") or error.get("message")):
        text = f"{error.get('type') or 'Error'}: {error.get('message') or ''}".strip()
        return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
    return {
        NOT_STARTED: f"no {SUMMARY} or {MANIFEST}: never started, or crashed before writing them",
        RUNNING: f"{SUMMARY} still says running: in progress, or killed without a final summary",
        INTERRUPTED: INTERRUPTED,  # no error recorded: the status says it all
        SKIPPED: str(run.summary.get("reason") or "skipped by the sweep"),
        UNKNOWN: "; ".join(run.problems) or f"{SUMMARY} holds no status",
    }.get(run.status, "no error recorded")


def _progress(run: Run) -> str:
    train = [r for r in run.metrics if r.get("split") == SPLIT_TRAIN and as_number(r.get("step")) is not None]
    evals = [r for r in run.metrics if r.get("split") == SPLIT_EVAL and as_number(r.get("eval_loss")) is not None]
    parts = []
    if train:
        parts.append(f"step {int(max(r['step'] for r in train))}")
    if evals:
        last = max(evals, key=lambda r: as_number(r.get("step")) or 0)
        parts.append(f"last eval_loss {last['eval_loss']:.4f} at step {int(as_number(last.get('step')) or 0)}")
    return ", ".join(parts) or "no metrics"


def _problems_section(sweeps: list[Sweep], design: Design) -> list[Block]:
    items: list = []
    for sweep in sweeps:
        items += [[Code(sweep.label), ": " + p] for p in sweep.problems]
    for run in design.runs:
        name = f"{run.sweep}/{run.name}" if design.multi_sweep else run.name
        items += [[Code(name), ": " + p] for p in run.problems]
    if not items:
        return []
    return [
        Heading(2, "Problems reading the run directories"),
        Para("These files were missing or damaged; the report used what it could read."),
        Bullets(items),
    ]


def _repro_section(design: Design, configs) -> list[Block]:
    facts, without = repro.facts(design)
    blocks: list[Block] = [Heading(2, "Reproducibility")]
    if facts:
        rows = []
        for fact in facts:
            flag = Strong("confounder: differs between runs") if fact.confounder else fact.note
            rows.append([fact.name, Code(fact.describe()), flag])
        blocks += [
            Para(
                f"What the runs ran on, from their {MANIFEST}. A fact that differs between runs "
                "is a confounder: it, not the swept parameters, may explain a difference."
            ),
            Table(["fact", "value", "note"], rows),
        ]
        confounders = [f for f in facts if f.confounder]
        if confounders:
            blocks.append(
                Bullets([[Strong("Confounder:"), f" {f.name} differs: {f.describe()}"] for f in confounders])
            )
    if without:
        blocks.append(Para(f"{without} run(s) have no {MANIFEST} and are not in the comparison above."))
    dirty = repro.dirty_runs(design)
    if dirty:
        blocks.append(
            Para(f"{dirty} run(s) ran from a git tree with uncommitted changes: the commit alone does not reproduce them.")
        )
    cmds = repro.commands(design, configs)
    blocks += [
        Heading(3, "Commands"),
        Para("Each command reproduces one run alone, in the order of the runs table."),
        CodeBlock("\n".join(f"# {c.comment}\n{c.command}" for c in cmds)),
    ]
    return blocks


# ----------------------------------------------------------------- helpers


__all__ = ["ReportError", "available_metrics", "build_report", "default_out_dir", "write_report"]
