"""The report's noise estimate and what it decides: the t quantile, the pooled seed-to-seed spread, each level's
95 % interval, the "within noise" verdicts and the interaction views. Every number below is computed by hand
(or read from a printed t table) from the losses given here, not copied from the code's output."""

from __future__ import annotations

import math

import pytest
from lane import report_run as run
from lane import report_sweep

from ftsweep.report import effects as fx
from ftsweep.report import factors as F
from ftsweep.report import table as T


def design_of(runs):
    design = F.build_design([report_sweep(runs)])
    return design, T.runs_frame(design, "eval_loss")


# (r, lr) -> eval_loss of seeds 1 and 2. Cell means: r8: 3.1 (lr 1e-4), 2.7 (lr 3e-4); r16: 3.3, 2.4.
# r=16 is worse than r=8 at lr=1e-4 (+0.2) and better at lr=3e-4 (-0.3): an interaction of -0.5.
CELLS = {("8", "1e-4"): (3.0, 3.2), ("8", "3e-4"): (2.6, 2.8), ("16", "1e-4"): (3.3, 3.3), ("16", "3e-4"): (2.3, 2.5)}
# Pooled seed spread: squared deviations from the cell means 0.02 + 0.02 + 0 + 0.02 = 0.06 over
# 8 runs - 4 configurations = 4 degrees of freedom.
STD = math.sqrt(0.06 / 4)
T4 = 2.776  # t(0.975, 4) from a printed table


@pytest.fixture
def grid():
    return design_of([run([f"lora.r={r}", f"optim.lr={lr}", f"seed={s}"], loss)
                      for (r, lr), losses in CELLS.items() for s, loss in zip("12", losses)])


@pytest.mark.parametrize("df, t", [(1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (5, 2.571), (10, 2.228),
                                   (20, 2.086), (29, 2.045), (30, 2.042)])
def test_t_quantile_from_the_table(df, t):
    assert fx.t975(df) == t


@pytest.mark.parametrize("df, t", [(31, 2.039513), (32, 2.036933), (40, 2.021075), (60, 2.000298), (120, 1.979930),
                                   (1000, 1.962339), (10**6, 1.959966)])
def test_t_quantile_beyond_the_table_is_the_exact_one_to_six_digits(df, t):
    # Exact quantiles of Student's t (as scipy.stats.t.ppf(0.975, df) prints them), tending to z = 1.959964.
    assert fx.t975(df) == pytest.approx(t, abs=3e-6)


@pytest.mark.parametrize("df", [0, -1])
def test_t_quantile_needs_a_degree_of_freedom(df):
    with pytest.raises(ValueError, match=rf"degrees of freedom must be at least 1, got {df}"):
        fx.t975(df)


def test_half_width_is_t_times_std_times_the_standard_errors_scale():
    assert fx.Noise(0.1, 4).half_width(1 / 2) == pytest.approx(2.776 * 0.1 / 2)  # a mean over 4 runs
    assert fx.Noise(0.3, 1).half_width(1 / 3) == pytest.approx(12.706 * 0.3 / 3)  # over 9


def test_seed_noise_is_the_pooled_within_configuration_std(grid):
    design, frame = grid
    noise = fx.seed_noise(design, frame, "eval_loss")
    assert noise.df == 4 and isinstance(noise.df, int)
    assert noise.std == pytest.approx(STD) and STD == pytest.approx(0.122474, abs=1e-6)


def test_seed_noise_ignores_failed_runs_and_needs_a_repeated_seed():
    # One configuration with 3 ok seeds (3.0, 3.3, 3.6: mean 3.3, squares 0.09 + 0 + 0.09), one with a single
    # run, and a failed run whose loss would change everything: df = 4 ok runs - 2 configurations = 2.
    runs = [run(["lora.r=8", "seed=1"], 3.0), run(["lora.r=8", "seed=2"], 3.3), run(["lora.r=8", "seed=3"], 3.6),
            run(["lora.r=16", "seed=1"], 2.0), run(["lora.r=16", "seed=2"], 9.0, status="failed")]
    noise = fx.seed_noise(*design_of(runs), "eval_loss")
    assert noise.df == 2 and noise.std == pytest.approx(math.sqrt(0.18 / 2))
    # Every configuration ran once: no estimate rather than a guess.
    assert fx.seed_noise(*design_of([run(["lora.r=8"], 3.0), run(["lora.r=16"], 2.0)]), "eval_loss") is None
    # No ok run at all.
    failed = [run(["lora.r=8"], 3.0, status="failed"), run(["lora.r=16"], 2.0, status="failed")]
    assert fx.seed_noise(*design_of(failed), "eval_loss") is None


def test_main_effects_get_95_percent_intervals_from_the_noise(grid):
    design, frame = grid
    noise = fx.seed_noise(design, frame, "eval_loss")
    effects = {e.factor.name: e for e in fx.main_effects(design, frame, "eval_loss", noise)}
    r8, r16 = effects["lora.r"].levels
    assert (r8.stat.mean, r16.stat.mean) == (pytest.approx(2.9), pytest.approx(2.85))
    # Each level mean is over 4 runs: half-width t(0.975, 4) * s / sqrt(4).
    assert r8.half == pytest.approx(T4 * STD / 2) and r16.half == pytest.approx(T4 * STD / 2)
    assert r8.half == pytest.approx(0.169994, abs=1e-6)
    # Without a noise estimate there is no interval.
    assert all(e.half is None for e in fx.main_effects(design, frame, "eval_loss")[0].levels)


def test_a_level_of_two_runs_has_a_std_and_a_level_without_runs_no_interval():
    runs = [run(["lora.r=8", "seed=1"], 3.0), run(["lora.r=8", "seed=2"], 3.4), run(["lora.r=16"], 2.0),
            run(["lora.r=4"], 1.0, status="failed")]
    design, frame = design_of(runs)
    noise = fx.seed_noise(design, frame, "eval_loss")  # (3.0, 3.4) around 3.2: 0.08 over 1 df
    assert noise.df == 1 and noise.std == pytest.approx(math.sqrt(0.08))
    (effect,) = fx.main_effects(design, frame, "eval_loss", noise)
    by_text = {e.level.text: e for e in effect.levels}
    assert by_text["8"].stat.std == pytest.approx(math.sqrt(0.08))  # sample std of two runs (ddof=1)
    assert by_text["8"].half == pytest.approx(12.706 * math.sqrt(0.08) / math.sqrt(2))
    assert by_text["16"].stat.std is None and by_text["16"].half == pytest.approx(12.706 * math.sqrt(0.08))
    assert by_text["4"].stat.n == 0 and by_text["4"].half is None


def test_verdicts_compare_the_best_level_with_each_other_level(grid):
    design, frame = grid
    noise = fx.seed_noise(design, frame, "eval_loss")
    effects = fx.main_effects(design, frame, "eval_loss", noise)
    half = T4 * STD / 2  # 0.17 for every level here: two levels are told apart when their means differ by > 0.24
    by_factor = {v.factor: v for v in fx.verdicts(effects, maximize=False)}
    assert set(by_factor) == {"lora.r", "optim.lr"}
    r = by_factor["lora.r"]  # 2.85 (r=16) against 2.9 (r=8): 0.05 apart, within noise
    assert (r.best.level.text, r.other.level.text, r.within_noise) == ("16", "8", True)
    lr = by_factor["optim.lr"]  # 2.55 (3e-4) against 3.2 (1e-4): 0.65 apart, more than sqrt(2) * 0.17
    assert (lr.best.level.text, lr.other.level.text, lr.within_noise) == ("3e-4", "1e-4", False)
    assert lr.half == pytest.approx(math.sqrt(2) * half) and r.half == pytest.approx(math.sqrt(2) * half)
    # Higher is better: the other level is the best one.
    flipped = {v.factor: v for v in fx.verdicts(effects, maximize=True)}
    assert (flipped["optim.lr"].best.level.text, flipped["lora.r"].best.level.text) == ("1e-4", "8")
    assert flipped["optim.lr"].within_noise is False


def effect(name, *levels):
    return fx.MainEffect(F.Factor(name, [F.level_of(t) for t, _, _ in levels]),
                         [fx.LevelEffect(F.level_of(t), T.Stat(mean, None, 2 if mean is not None else 0), half)
                          for t, mean, half in levels])


def test_verdicts_test_the_difference_not_the_overlap_of_two_intervals():
    # Means 1.0 and 1.5 with half-widths 0.3 and 0.4: the difference's half-width is sqrt(0.3² + 0.4²) = 0.5, which
    # the difference of 0.5 just touches: within noise.
    (v,) = fx.verdicts([effect("x", ("1", 1.0, 0.3), ("2", 1.5, 0.4))], maximize=False)
    assert (v.factor, v.best.level.text, v.other.level.text, v.within_noise) == ("x", "1", "2", True)
    assert (v.gap, v.half) == (pytest.approx(0.5), pytest.approx(0.5))
    # Half-widths 0.3 each: the intervals [0.7, 1.3] and [1.2, 1.8] overlap, yet the difference's interval,
    # 0.5 ± 0.42, does not hold 0.
    (v,) = fx.verdicts([effect("x", ("1", 1.0, 0.3), ("2", 1.5, 0.3))], maximize=False)
    assert v.half == pytest.approx(math.sqrt(0.18)) and v.within_noise is False
    # Three levels: the best against each of the other two, in order of their means.
    three = fx.verdicts([effect("x", ("1", 2.0, 0.1), ("2", 1.0, 0.1), ("3", 1.1, 0.1))], maximize=False)
    assert [(v.best.level.text, v.other.level.text, v.within_noise) for v in three] == [
        ("2", "3", True), ("2", "1", False)]
    three = fx.verdicts([effect("x", ("1", 2.0, 0.1), ("2", 1.0, 0.1), ("3", 1.1, 0.1))], maximize=True)
    assert [(v.best.level.text, v.other.level.text) for v in three] == [("1", "3"), ("1", "2")]
    # A level without a mean or without an interval is left out; one level left: no verdict.
    assert fx.verdicts([effect("x", ("1", 1.0, 0.1), ("2", None, None), ("3", 2.0, None))], maximize=False) == []
    assert fx.verdicts([effect("x", ("1", 1.0, None), ("2", 2.0, None))], maximize=False) == []
    # A factor without verdicts does not stop the ones after it.
    after = fx.verdicts([effect("x", ("1", 1.0, None), ("2", 2.0, None)), effect("y", ("a", 1.0, 0.1), ("b", 2.0, 0.1))],
                        maximize=False)
    assert [(v.factor, v.best.level.text, v.within_noise) for v in after] == [("y", "a", False)]


def points(line):
    level, pts = line
    return level.text, [(p.level.text, None if p.stat.mean is None else round(p.stat.mean, 9), p.stat.n) for p in pts]


def test_two_factors_give_both_views_with_cell_means(grid):
    design, frame = grid
    noise = fx.seed_noise(design, frame, "eval_loss")
    views = fx.interactions(design, frame, "eval_loss", noise)
    assert [(v.x.name, v.by.name) for v in views] == [("lora.r", "optim.lr"), ("optim.lr", "lora.r")]
    r_by_lr = views[0]
    assert [points(line) for line in r_by_lr.lines] == [
        ("1e-4", [("8", 3.1, 2), ("16", 3.3, 2)]),
        ("3e-4", [("8", 2.7, 2), ("16", 2.4, 2)])]
    # The interaction on the 2x2 grid, by hand: (2.4 - 2.7) - (3.3 - 3.1) = -0.5.
    (_, low), (_, high) = r_by_lr.lines
    contrast = (high[1].stat.mean - high[0].stat.mean) - (low[1].stat.mean - low[0].stat.mean)
    assert contrast == pytest.approx(-0.5)
    # Each cell mean is over 2 runs: half-width t(0.975, 4) * s / sqrt(2).
    assert all(p.half == pytest.approx(T4 * STD / math.sqrt(2)) for _, pts in r_by_lr.lines for p in pts)
    assert [points(line) for line in views[1].lines] == [
        ("8", [("1e-4", 3.1, 2), ("3e-4", 2.7, 2)]),
        ("16", [("1e-4", 3.3, 2), ("3e-4", 2.4, 2)])]
    # No noise estimate: no intervals.
    assert all(p.half is None for v in fx.interactions(design, frame, "eval_loss") for _, pts in v.lines for p in pts)


def test_one_factor_gives_no_interaction_and_three_give_each_pair_once():
    design, frame = design_of([run(["lora.r=8"], 3.0), run(["lora.r=16"], 2.0)])
    assert fx.interactions(design, frame, "eval_loss") == []
    runs = [run([f"a={a}", f"b={b}", f"c={c}"], 1.0 + a + 2 * b + 4 * c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
    design, frame = design_of(runs)
    views = fx.interactions(design, frame, "eval_loss")
    assert [(v.x.name, v.by.name) for v in views] == [("a", "b"), ("a", "c"), ("b", "c")]
    # a against b, over both levels of c: at b=1, a=0 is the mean of 3 (c=0) and 7 (c=1).
    assert [points(line) for line in views[0].lines] == [("0", [("0", 3.0, 2), ("1", 4.0, 2)]),
                                                         ("1", [("0", 5.0, 2), ("1", 6.0, 2)])]


def test_the_first_six_pairs_of_many_factors_are_shown():
    # 4 factors make 6 pairs; 5 factors make 10, of which the pairs of the first ones are kept.
    runs = [run([f"f{i}={(j >> i) & 1}" for i in range(5)], float(j)) for j in range(32)]
    design, frame = design_of(runs)
    views = fx.interactions(design, frame, "eval_loss")
    assert fx.MAX_INTERACTIONS == 6
    assert [(v.x.name, v.by.name) for v in views] == [("f0", "f1"), ("f0", "f2"), ("f0", "f3"), ("f0", "f4"),
                                                      ("f1", "f2"), ("f1", "f3")]


def test_a_view_needs_a_line_of_two_points_and_no_more_lines_than_colours():
    # A search's sampled learning rates: each rate ran with one r only. Along r, every line (one per rate)
    # has a single point and says nothing; along the rate, each r is a line of two points.
    runs = [run(["lora.r=8", "optim.lr=1e-4"], 3.0), run(["lora.r=16", "optim.lr=2e-4"], 2.9),
            run(["lora.r=8", "optim.lr=3e-4"], 2.8), run(["lora.r=16", "optim.lr=4e-4"], 2.7),
            run(["lora.r=32", "optim.lr=4e-4"], 1.0, status="failed")]
    design, frame = design_of(runs)
    (view,) = fx.interactions(design, frame, "eval_loss")
    assert (view.x.name, view.by.name) == ("optim.lr", "lora.r")
    # r=32 has no ok run: no line for it.
    assert [points(line) for line in view.lines] == [
        ("8", [("1e-4", 3.0, 1), ("2e-4", None, 0), ("3e-4", 2.8, 1), ("4e-4", None, 0)]),
        ("16", [("1e-4", None, 0), ("2e-4", 2.9, 1), ("3e-4", None, 0), ("4e-4", 2.7, 1)])]
    assert all(p.half is None for _, pts in view.lines for p in pts)
    # Exactly MAX_LINES lines are still shown; one more and the panel is left out.
    assert fx.MAX_LINES == 10
    ten = design_of([run([f"b={b}", f"x={x}"], float(b + x)) for b in range(10) for x in (0, 1)])
    assert [(v.x.name, v.by.name, len(v.lines)) for v in fx.interactions(*ten, "eval_loss")] == [
        ("b", "x", 2), ("x", "b", 10)]
    eleven = design_of([run([f"b={b}", f"x={x}"], float(b + x)) for b in range(11) for x in (0, 1)])
    assert [(v.x.name, v.by.name, len(v.lines)) for v in fx.interactions(*eleven, "eval_loss")] == [("b", "x", 2)]


def test_a_factor_with_one_level_is_no_axis_of_an_interaction(grid):
    design, frame = grid
    only = F.Design(design.runs, [design.factors[0], F.Factor("seedless", [F.level_of("1")])],
                    design.levels, design.seeds, design.sweeps)
    assert fx.interactions(only, frame, "eval_loss") == []


def test_no_ok_run_gives_no_interaction(grid):
    design, frame = grid
    failed = frame.assign(status="failed")
    assert fx.interactions(design, failed, "eval_loss") == []


def test_a_grid_of_twelve_levels_a_side_is_drawn_and_thirteen_is_not():
    for n, drawn in ((12, True), (13, False)):
        design, frame = design_of([run([f"a={a}", f"b={b}"], float(a + b)) for a in range(n) for b in (0, 1)])
        configs = T.configurations(design, frame, "eval_loss", maximize=False)
        grid = fx.two_factor_grid(design, configs, "eval_loss")
        assert (grid is not None) is drawn
        if drawn:
            assert len(grid.cells) == 24 and grid.cells[(F.level_of("11").key, F.level_of("1").key)].mean == 12.0


def test_data_size_series_label_names_every_other_factor():
    runs = [run([f"data.n={n}", f"lora.r={r}", f"optim.lr={lr}"], loss)
            for n, r, lr, loss in [(100, 8, "1e-4", 3.0), (10, 8, "1e-4", 4.0), (10, 16, "3e-4", 3.5)]]
    design, frame = design_of(runs)
    configs = T.configurations(design, frame, "eval_loss", maximize=False)
    series = fx.data_size_series(design, configs, "eval_loss")
    assert [s.label for s in series] == ["lora.r=8, optim.lr=1e-4", "lora.r=16, optim.lr=3e-4"]
    assert [(x, p.mean) for x, p in series[0].points] == [(10.0, 4.0), (100.0, 3.0)]


def test_the_difference_of_two_configurations_means_gets_the_seeds_interval():
    noise = fx.Noise(std=0.3, df=4)
    # t(0.975, 4) x s x sqrt(1/3 + 1/3): 3 seeds each; and sqrt(1/1 + 1/4) for 1 seed against 4.
    assert noise.difference_half_width(3, 3) == pytest.approx(2.7764 * 0.3 * math.sqrt(2 / 3), rel=1e-3)
    one_and_four = pytest.approx(2.7764 * 0.3 * math.sqrt(1.25), rel=1e-3)
    assert noise.difference_half_width(1, 4) == noise.difference_half_width(4, 1) == one_and_four
    with pytest.raises(ValueError, match="a mean needs at least one run, got 0 and 3"):
        noise.difference_half_width(0, 3)


def test_crossing_lines_name_the_best_level_at_each_level_of_the_other(grid):
    design, frame = grid
    noise = fx.seed_noise(design, frame, "eval_loss")
    views = fx.interactions(design, frame, "eval_loss", noise)
    # r: 8 best at lr 1e-4 (3.1 against 3.3), 16 at 3e-4 (2.4 against 2.7). lr: 3e-4 best at both ranks.
    (rev,) = fx.reversals(views, maximize=False)
    assert (rev.x.name, rev.by.name) == ("lora.r", "optim.lr")
    assert [(b.text, best.level.text, nxt.level.text) for b, best, nxt in rev.bests] == [("1e-4", "8", "16"),
                                                                                         ("3e-4", "16", "8")]
    assert [abs(best.stat.mean - nxt.stat.mean) for _, best, nxt in rev.bests] == [pytest.approx(0.2), pytest.approx(0.3)]
    # Each cell is a mean of 2 seeds: half-width T4 * STD / sqrt(2) = 0.24, so the difference's is T4 * STD = 0.34.
    assert [rev.within_noise(i) for i in range(2)] == [True, True]
    (rev,) = fx.reversals(fx.interactions(design, frame, "eval_loss"), maximize=False)
    assert rev.within_noise(0) is None  # no noise estimate given
    # Higher is better: 16 at 1e-4, 8 at 3e-4; lr still the same (1e-4) at both ranks.
    (up,) = fx.reversals(views, maximize=True)
    assert [(b.text, best.level.text) for b, best, _ in up.bests] == [("1e-4", "16"), ("3e-4", "8")]


def test_parallel_lines_and_ties_are_no_reversal_and_lines_compare_the_levels_they_share():
    def reversals(cells):
        design, frame = design_of([run([f"lora.r={r}", f"optim.lr={lr}"], loss) for (r, lr), loss in cells.items()])
        return fx.reversals(fx.interactions(design, frame, "eval_loss"), maximize=False)

    assert reversals({("8", "1e-4"): 3.0, ("8", "3e-4"): 2.0, ("16", "1e-4"): 3.5, ("16", "3e-4"): 2.5}) == []
    # At lr 1e-4 the ranks tie, so that line names no best rank (not the first of the tied), and r=16's win at
    # lr 3e-4 crosses nothing.
    assert reversals({("8", "1e-4"): 3.0, ("8", "3e-4"): 2.5, ("16", "1e-4"): 3.0, ("16", "3e-4"): 2.0}) == []
    # r=16 ran only at lr 3e-4 (best there): each line is read over the ranks both have, 8 and 32.
    (rev,) = [r for r in reversals({("8", "1e-4"): 3.0, ("8", "3e-4"): 2.0, ("16", "3e-4"): 1.5, ("32", "1e-4"): 2.5,
                                    ("32", "3e-4"): 2.6}) if r.x.name == "lora.r"]
    assert [(b.text, best.level.text, nxt.level.text) for b, best, nxt in rev.bests] == [("1e-4", "32", "8"),
                                                                                         ("3e-4", "8", "32")]


def test_a_crossing_is_measured_against_the_level_that_wins_elsewhere_not_the_runner_up():
    # Two seeds a cell, 0.02 apart: s = 0.0141 over 12 - 6 = 6 df; a cell's half-width t(6) x s / sqrt(2) = 0.0245,
    # a difference's sqrt(2) x 0.0245 = 0.035.
    cells = {("8", "1e-4"): 2.00, ("16", "1e-4"): 2.50, ("32", "1e-4"): 2.60,
             ("8", "3e-4"): 2.50, ("16", "3e-4"): 2.00, ("32", "3e-4"): 2.01}
    design, frame = design_of([run([f"lora.r={r}", f"optim.lr={lr}", f"seed={s}"], loss + 0.02 * (s == "2"))
                               for (r, lr), loss in cells.items() for s in "12"])
    noise = fx.seed_noise(design, frame, "eval_loss")
    assert noise.df == 6 and noise.std == pytest.approx(math.sqrt(6 * 0.0002 / 6))
    (rev,) = [v for v in fx.reversals(fx.interactions(design, frame, "eval_loss", noise), maximize=False)
              if v.x.name == "lora.r"]
    # At lr 3e-4, r=16 leads r=32 by 0.01 but r=8, the best at lr 1e-4, by 0.5: the crossing is 16 against 8.
    assert [(b.text, best.level.text, rival.level.text) for b, best, rival in rev.bests] == [("1e-4", "8", "16"),
                                                                                           ("3e-4", "16", "8")]
    assert [rev.within_noise(i) for i in range(2)] == [False, False]


def test_reversals_skip_lines_and_views_that_cannot_cross():
    def views(cells):
        design, frame = design_of([run([f"lora.r={r}", f"optim.lr={lr}"], loss) for (r, lr), loss in cells.items()])
        return fx.interactions(design, frame, "eval_loss")

    crossing = {("8", "1e-4"): 3.0, ("16", "1e-4"): 3.3, ("8", "3e-4"): 3.2, ("16", "3e-4"): 2.9}
    # A third rate where only r=8 ran is a line of one point: left out, not a shrinking of the shared levels to one.
    (rev,) = [v for v in fx.reversals(views(crossing | {("8", "1e-3"): 2.5}), maximize=False) if v.x.name == "lora.r"]
    assert [b.text for b, _, _ in rev.bests] == ["1e-4", "3e-4"]
    # Two lines that share one level: nothing to compare, and the views after it are still read.
    shared_one = {("8", "1e-4"): 3.0, ("16", "1e-4"): 3.3, ("32", "3e-4"): 3.2, ("16", "3e-4"): 2.9}
    assert [v.x.name for v in fx.reversals(views(shared_one), maximize=False)] == []
    first, second = views(crossing)
    assert len(fx.reversals([fx.Interaction(first.x, first.by, first.lines[:1]), second], maximize=False)) == 1
    # Every line a single point (a search's sampled values): no view to read, no error.
    single = views(crossing)[0]
    assert fx.reversals([fx.Interaction(single.x, single.by, [(b, pts[:1]) for b, pts in single.lines])], False) == []


def test_a_reversal_without_an_interval_on_either_side_has_no_noise_verdict(grid):
    design, frame = grid
    noise = fx.seed_noise(design, frame, "eval_loss")
    (rev,) = fx.reversals(fx.interactions(design, frame, "eval_loss", noise), maximize=False)
    b, best, rival = rev.bests[0]
    one_sided = fx.Reversal(rev.x, rev.by, [(b, best, fx.LevelEffect(rival.level, rival.stat, None))])
    assert one_sided.within_noise(0) is None
    one_sided = fx.Reversal(rev.x, rev.by, [(b, fx.LevelEffect(best.level, best.stat, None), rival)])
    assert one_sided.within_noise(0) is None


def test_the_best_configuration_against_the_next_over_seeds(grid):
    design, frame = grid
    configs = T.configurations(design, frame, "eval_loss", False)
    noise = fx.seed_noise(design, frame, "eval_loss")
    seeds = fx.best_against_next_over_seeds(configs, noise, "eval_loss")
    # Best (16, 3e-4) 2.4, next (8, 3e-4) 2.7, two seeds each: 0.3 +- T4 x STD x sqrt(1/2 + 1/2) = 0.34.
    assert (seeds.best.label, seeds.next.label) == ("lora.r=16, optim.lr=3e-4", "lora.r=8, optim.lr=3e-4")
    assert seeds.gap == pytest.approx(0.3) and seeds.half == pytest.approx(T4 * STD, rel=1e-3)
    assert seeds.within_noise is True
    assert fx.best_against_next_over_seeds(configs, None, "eval_loss") is None
    assert fx.best_against_next_over_seeds(configs[:1], noise, "eval_loss") is None
    assert fx.best_against_next_over_seeds(configs[:2], noise, "eval_loss").next.label == "lora.r=8, optim.lr=3e-4"
    assert fx.best_against_next_over_seeds([c for c in configs if c.rank != 1] + [configs[0]], noise, "eval_loss").gap \
        == pytest.approx(0.3)  # ranked by rank, not by list order
