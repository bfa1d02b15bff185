"""The report's statistics on runs built in memory: factors and their levels, main effects (mean, sample std,
n per level), the two-factor grid, the data-size series and the improvement over the baseline. A flipped
sign or a wrong ddof here changes which configuration a reader believes is better."""

from __future__ import annotations

import statistics

import pandas as pd
import pytest
from lane import report_run
from lane import report_sweep as sweep

from ftsweep.report import effects as fx
from ftsweep.report import factors as F
from ftsweep.report import table as T
from ftsweep.report.collect import Run


def run(overrides, eval_loss=3.0, status="ok", sweep="s1", config=None, summary=None, manifest=None) -> Run:
    """lane.report_run with a baseline of 5.0 and a config that sets lora.r: 8 unless the test says otherwise."""
    return report_run(overrides, eval_loss, status, sweep, config if config is not None else {"lora": {"r": 8, "name": "lora"}, "seed": 1},
                      {"baseline_eval_loss": 5.0} | (summary or {}), manifest)


# (r, lr, seed) -> eval_loss: every mean and std below is computed by hand from these.
LOSSES = {("8", "1e-4", "1"): 3.6, ("8", "1e-4", "2"): 3.7, ("8", "3e-4", "1"): 3.3, ("8", "3e-4", "2"): 3.4,
          ("16", "1e-4", "1"): 3.5, ("16", "1e-4", "2"): 3.5, ("16", "3e-4", "1"): 3.1, ("16", "3e-4", "2"): 3.3}


@pytest.fixture
def grid():
    runs = [run([f"lora.r={r}", f"optim.lr={lr}", f"seed={s}"], loss) for (r, lr, s), loss in LOSSES.items()]
    design = F.build_design([sweep(runs, grid={"lora.r": ["8", "16"], "optim.lr": ["1e-4", "3e-4"], "seed": ["1", "2"]})])
    return design, T.runs_frame(design, "eval_loss")


def test_factors_are_the_varied_keys_in_grid_order_and_seed_is_a_replicate(grid):
    design, _ = grid
    assert [f.name for f in design.factors] == ["lora.r", "optim.lr"]
    assert [lv.text for lv in design.factors[0].levels] == ["8", "16"]  # numeric order, not text order
    assert [lv.text for lv in design.factors[1].levels] == ["1e-4", "3e-4"]
    assert design.seeds == ["1", "2"] * 4
    assert design.label(design.configuration(0)) == "lora.r=8, optim.lr=1e-4"
    assert design.factors[0].numeric and not design.multi_sweep


def test_main_effects_are_level_means_with_sample_std(grid):
    design, frame = grid
    effects = {e.factor.name: e for e in fx.main_effects(design, frame, "eval_loss")}
    r8, r16 = effects["lora.r"].levels
    assert r8.level.text == "8" and r8.stat.n == 4
    assert r8.stat.mean == pytest.approx(3.5) and r16.stat.mean == pytest.approx(3.35)
    assert r8.stat.std == pytest.approx(statistics.stdev([3.6, 3.7, 3.3, 3.4]))  # ddof=1
    lo, hi = effects["optim.lr"].levels
    assert (lo.stat.mean, hi.stat.mean) == (pytest.approx(3.575), pytest.approx(3.275))
    # The spread is best minus worst level mean: positive, whichever level is better.
    assert effects["lora.r"].spread == pytest.approx(0.15)
    assert effects["optim.lr"].spread == pytest.approx(0.30)


def test_failed_runs_and_missing_values_never_enter_a_mean():
    runs = [run(["lora.r=8"], 3.0), run(["lora.r=8"], 9.0, status="failed"), run(["lora.r=16"], 2.0),
            run(["lora.r=16"], None), run(["lora.r=4"], 1.0, status="failed")]
    design = F.build_design([sweep(runs)])
    frame = T.runs_frame(design, "eval_loss")
    (effect,) = fx.main_effects(design, frame, "eval_loss")
    stats = {e.level.text: e.stat for e in effect.levels}
    assert stats["8"] == T.Stat(3.0, None, 1)  # n=1: no std
    assert stats["16"] == T.Stat(2.0, None, 1)
    assert stats["4"] == T.Stat(None, None, 0)
    assert effect.spread == pytest.approx(1.0)


def test_no_ok_run_gives_empty_levels():
    runs = [run(["lora.r=8"], 3.0, status="failed"), run(["lora.r=16"], 2.0, status="failed")]
    design = F.build_design([sweep(runs)])
    (effect,) = fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss")
    assert [e.stat for e in effect.levels] == [T.Stat(None, None, 0)] * 2 and effect.spread is None


def test_configurations_rank_best_first_in_the_metric_direction(grid):
    design, frame = grid
    best_low = T.configurations(design, frame, "eval_loss", maximize=False)
    assert [c.label for c in best_low][:2] == ["lora.r=16, optim.lr=3e-4", "lora.r=8, optim.lr=3e-4"]
    assert [c.rank for c in best_low] == [1, 2, 3, 4]
    top = best_low[0].stats["eval_loss"]
    assert (top.mean, top.n) == (pytest.approx(3.2), 2) and top.std == pytest.approx(statistics.stdev([3.1, 3.3]))
    assert best_low[-1].label == "lora.r=8, optim.lr=1e-4"
    assert T.configurations(design, frame, "eval_loss", maximize=True)[0].label == "lora.r=8, optim.lr=1e-4"


def test_improvement_is_baseline_minus_final():
    good = run(["lora.r=8"], 3.0, summary={"baseline_eval_loss": 5.0})
    worse = run(["lora.r=8"], 6.0, summary={"baseline_eval_loss": 5.0})
    assert T.run_value(good, T.IMPROVEMENT) == pytest.approx(2.0)  # training lowered the loss: positive
    assert T.run_value(good, T.IMPROVEMENT_PCT) == pytest.approx(40.0)
    assert T.run_value(worse, T.IMPROVEMENT) == pytest.approx(-1.0)
    assert T.run_value(worse, T.IMPROVEMENT_PCT) == pytest.approx(-20.0)
    assert T.run_value(run(["a=1"], None), T.IMPROVEMENT) is None
    assert T.run_value(run(["a=1"], 1.0, summary={"baseline_eval_loss": 0.0}), T.IMPROVEMENT_PCT) is None


def test_two_factor_grid_holds_each_configuration_mean(grid):
    design, frame = grid
    configs = T.configurations(design, frame, "eval_loss", maximize=False)
    g = fx.two_factor_grid(design, configs, "eval_loss")
    assert (g.rows.name, g.cols.name) == ("lora.r", "optim.lr")
    key = (F.level_of("16").key, F.level_of("3e-4").key)
    assert g.cells[key].mean == pytest.approx(3.2) and len(g.cells) == 4
    one = F.build_design([sweep([run(["lora.r=8"]), run(["lora.r=16"])])])
    assert fx.two_factor_grid(one, [], "eval_loss") is None


def test_data_size_series_one_line_per_other_level_sorted_by_size():
    runs = [run([f"data.n={n}", f"lora.r={r}"], loss) for n, r, loss in
            [(100, 8, 3.0), (10, 8, 4.0), (100, 16, 2.5), (10, 16, 3.5), ("null", 8, 2.0)]]
    design = F.build_design([sweep(runs)])
    configs = T.configurations(design, T.runs_frame(design, "eval_loss"), "eval_loss", False)
    series = fx.data_size_series(design, configs, "eval_loss")
    assert [s.label for s in series] == ["lora.r=8", "lora.r=16"]
    assert [(x, p.mean) for x, p in series[0].points] == [(10.0, 4.0), (100.0, 3.0)]  # null (all records) left out
    assert [(x, p.mean) for x, p in series[1].points] == [(10.0, 3.5), (100.0, 2.5)]
    only_n = F.build_design([sweep([run(["data.n=10"], 4.0), run(["data.n=20"], 3.0)])])
    configs = T.configurations(only_n, T.runs_frame(only_n, "eval_loss"), "eval_loss", False)
    assert [s.label for s in fx.data_size_series(only_n, configs, "eval_loss")] == ["eval_loss"]
    assert fx.data_size_series(F.build_design([sweep([run(["lora.r=8"]), run(["lora.r=4"])])]), [], "eval_loss") == []


def test_a_key_set_in_one_run_and_from_config_in_another_is_one_factor():
    runs = [run(["lora.r=16"]), run([], config={"lora": {"r": 8}, "seed": 1}), run([], config={"seed": 1})]
    design = F.build_design([sweep(runs)])
    (factor,) = design.factors
    assert [lv.text for lv in factor.levels] == ["8", "16", F.NOT_SET]


def test_neutral_keys_and_seed_are_never_factors():
    runs = [run(["logger=none", "train.progress=true", "seed=1", "hydra.job.x=1", "mode=train"]),
            run(["logger=wandb", "train.progress=false", "seed=2", "hydra.job.x=2", "mode=plan"])]
    assert F.build_design([sweep(runs)]).factors == []


def test_config_groups_level_by_their_name_and_numbers_compare_as_numbers():
    runs = [run(["lora=dora"]), run([], config={"lora": {"name": "lora", "r": 8}}), run(["optim.lr=0.0001"]),
            run(["optim.lr=1e-4"])]
    design = F.build_design([sweep(runs)])
    names = {f.name: [lv.text for lv in f.levels] for f in design.factors}
    assert names["lora"] == ["dora", "lora"]
    assert len(names["optim.lr"]) == 2  # 0.0001 and 1e-4 are one level (plus not set)
    assert "0.0001" in names["optim.lr"] and F.NOT_SET in names["optim.lr"]


def test_level_sort_order_and_texts():
    keys = [F.level_of(v) for v in ("abc", "null", "true", "2", "10", "1.5")]
    assert [lv.text for lv in sorted(keys, key=lambda lv: lv.key)] == ["1.5", "2", "10", "true", "abc", "null"]
    assert F.level_of("1e-4").number == 0.0001 and F.level_of("abc").number is None
    assert F.level_of("true").number is None
    assert F.level_of(0.5).text == "0.5" and F.level_of(None).text == "null" and F.level_of(False).text == "false"
    assert F.level_of(float("inf")).key[0] == 2  # not a number on the axis
    assert F.level_of("~").key == F.level_of(None).key and F.level_of("None").key == F.level_of(None).key
    assert F.level_of("FALSE").key == F.level_of(False).key


def test_seeds_read_from_overrides_manifest_summary_or_config():
    runs = [run(["seed=7", "lora.r=1"]), run(["lora.r=2"], manifest={"seed": 3}), run(["lora.r=3"], summary={"seed": 4}),
            run(["lora.r=4"], config={"seed": 5}), run(["lora.r=5"], config={})]
    assert F.build_design([sweep(runs)]).seeds == ["7", "3", "4", "5", None]


def test_the_sweep_is_a_factor_only_when_nothing_else_tells_runs_apart():
    a = sweep([run(["lora.r=8"], sweep="a"), run(["lora.r=16"], sweep="a")], label="a")
    b = sweep([run(["lora.r=8"], sweep="b"), run(["lora.r=16"], sweep="b")], label="b")
    design = F.build_design([a, b])
    assert [f.name for f in design.factors] == [F.SWEEP, "lora.r"]
    assert [lv.text for lv in design.factors[0].levels] == ["a", "b"] and design.multi_sweep
    c = sweep([run(["lora=dora"], sweep="c")], label="c")
    d = sweep([run(["lora=lora"], sweep="d")], label="d")
    assert [f.name for f in F.build_design([c, d]).factors] == ["lora"]


def test_typed_text_is_kept_for_the_level_label():
    runs = [run(["optim.lr=3e-4"]), run([], config={"optim": {"lr": 0.0003}}), run(["optim.lr=1e-4"])]
    (factor,) = F.build_design([sweep(runs)]).factors
    assert [lv.text for lv in factor.levels] == ["1e-4", "3e-4"]  # 0.0003 from config is the typed 3e-4
    runs = [run([], config={"optim": {"lr": 0.0003}}), run(["optim.lr=1e-4"])]
    (factor,) = F.build_design([sweep(runs)]).factors
    assert [lv.text for lv in factor.levels] == ["1e-4", "0.0003"]


def test_a_bad_override_line_is_no_factor():
    assert F.parse_override("lora.r=[1,") is None
    assert F.parse_override("lora.r=8") == ("lora.r", "8")
    assert isinstance(T.runs_frame(F.build_design([sweep([run(["lora.r=[1,"])])]), "eval_loss"), pd.DataFrame)


# ---- paired intervals over the held-out examples (report/paired.py) ----------------------------------------------

def test_a_paired_interval_over_examples_of_one_token_is_the_paired_t_interval():
    from ftsweep.report import paired

    # d = b - a = (0.1, 0.3, 0.2, 0.2): mean 0.2; sample std sqrt(0.02 / 3) = 0.08165; SE = 0.08165 / 2 = 0.040825;
    # t(0.975, 3) = 3.182: half-width 0.12990.
    a = pd.Series([1.0, 2.0, 3.0, 4.0]).to_numpy()
    got = paired.compare("x", a, "y", a + [0.1, 0.3, 0.2, 0.2], pd.Series([1.0] * 4).to_numpy())
    assert (got.better, got.worse, got.examples) == ("x", "y", 4)
    assert got.diff == pytest.approx(0.2) and got.low == pytest.approx(0.2 - 0.12990, abs=1e-5)
    assert got.high == pytest.approx(0.2 + 0.12990, abs=1e-5) and got.stands_out


def test_a_paired_interval_weighs_examples_by_their_tokens():
    from ftsweep.report import paired

    # tokens (2, 1, 1), d = (0.4, 0.1, 0.3): D = 0.8 / 4 = 0.2; residuals d - D t = (0, -0.1, 0.1), squares 0.02;
    # SE = sqrt(3 / 2 * 0.02) / 4 = 0.043301; t(0.975, 2) = 4.303: half-width 0.18633, so 0 is inside: within noise.
    a = pd.Series([3.0, 1.0, 2.0]).to_numpy()
    got = paired.compare("x", a, "y", a + [0.4, 0.1, 0.3], pd.Series([2.0, 1.0, 1.0]).to_numpy())
    assert got.diff == pytest.approx(0.2) and got.high - got.diff == pytest.approx(0.18633, abs=1e-5)
    assert got.low == pytest.approx(0.2 - 0.18633, abs=1e-5) and got.stands_out is (got.low > 0) is True
    wide = paired.compare("x", a, "y", a + [0.4, -0.2, 0.6], pd.Series([2.0, 1.0, 1.0]).to_numpy())
    assert wide.low < 0 < wide.high and not wide.stands_out


def _with_losses(run_, sums, tokens=(1, 1, 1, 1), fingerprint="f1") -> Run:
    run_._held_out = (list(sums), list(tokens))
    run_.manifest = {"held_out_fingerprint": fingerprint}
    return run_


def test_level_differences_are_the_effects_table_means_paired_over_examples(grid):
    from ftsweep.report import paired

    design, frame = grid
    # Each run's four examples: its eval_loss spread as (loss - 0.3, loss - 0.1, loss + 0.1, loss + 0.3) plus a
    # per-example offset that r=16 shifts, so each run's mean over its 4 tokens is its eval_loss.
    for run_ in design.runs:
        loss = run_.summary["eval_loss"]
        tilt = 0.02 if "lora.r=16" in run_.name else 0.0
        _with_losses(run_, [loss - 0.3 - tilt, loss - 0.1 + tilt, loss + 0.1 - tilt, loss + 0.3 + tilt])
    found = dict(paired.level_differences(design, frame, "eval_loss", higher=False))
    effects = {e.factor.name: {lv.level.text: lv.stat.mean for lv in e.levels} for e in fx.main_effects(design, frame, "eval_loss")}
    assert found["lora.r"].better == "16" and found["lora.r"].worse == "8"
    assert found["lora.r"].diff == pytest.approx(effects["lora.r"]["8"] - effects["lora.r"]["16"])  # 3.5 - 3.35
    assert found["optim.lr"].better == "3e-4"
    assert found["optim.lr"].diff == pytest.approx(effects["optim.lr"]["1e-4"] - effects["optim.lr"]["3e-4"])
    assert paired.level_differences(design, frame, "rougeL", higher=True) == []  # only the loss has per-example parts
    # One run scored other examples (another fingerprint) or kept none: nothing is paired for that parameter.
    _with_losses(design.runs[0], [1, 2, 3, 4], fingerprint="f2")
    assert paired.level_differences(design, frame, "eval_loss", higher=False) == []
    _with_losses(design.runs[0], [1, 2, 3, 4], tokens=(1, 1, 1, 2))  # same fingerprint, other tokens: not paired
    assert paired.per_example(design, [0, 1]) is None
    design.runs[0]._held_out = ()
    assert paired.per_example(design, [0, 1]) is None
    assert paired.per_example(design, [1, 2]) is not None


def test_the_best_configuration_is_paired_with_the_second(grid):
    from ftsweep.report import paired

    design, frame = grid
    for run_ in design.runs:
        loss = run_.summary["eval_loss"]
        _with_losses(run_, [loss - 0.2, loss, loss, loss + 0.2])
    configs = T.configurations(design, frame, "eval_loss", maximize=False)
    got = paired.best_against_next(design, configs, "eval_loss", higher=False)
    # best: r=16, lr=3e-4 (3.1, 3.3: mean 3.2); second: r=8, lr=3e-4 (3.3, 3.4: 3.35)
    assert (got.better, got.worse) == ("lora.r=16, optim.lr=3e-4", "lora.r=8, optim.lr=3e-4")
    assert got.diff == pytest.approx(0.15) and got.low == pytest.approx(0.15) == got.high  # the same shift on every example


def test_a_best_level_at_an_end_of_the_range_is_found_with_the_next_value_beyond(grid):
    design, frame = grid
    # r=16 (mean 3.35) beats r=8 (3.5) and lr 3e-4 (3.275) beats 1e-4 (3.575): both the largest tried.
    found = fx.edges(fx.main_effects(design, frame, "eval_loss"), maximize=False)
    assert [(e.factor, e.level.text, e.end) for e in found] == [("lora.r", "16", "largest"), ("optim.lr", "3e-4", "largest")]
    assert found[0].beyond == pytest.approx(32) and found[1].beyond == pytest.approx(9e-4)  # 16 x 16/8; 3e-4 x 3
    # Maximizing, the other ends win: 8 is the smallest, and one step below it is 8 x 8/16 = 4.
    low = fx.edges(fx.main_effects(design, frame, "eval_loss"), maximize=True)
    assert [(e.level.text, e.end, e.beyond) for e in low][0] == ("8", "smallest", pytest.approx(4))


def test_a_best_level_next_to_one_that_gave_no_result_points_between_them():
    """lr 3e-4, 0.5 and 50 on the built-in data: 50 went to nan at step 5, 0.5 was best. Stepping past the ok levels
    suggested lr 830 (0.5 x 0.5/3e-4) beyond the 50 that had just failed; halfway on the levels' scale is 5."""
    runs = [run(["optim.lr=3e-4"], 5.11), run(["optim.lr=0.5"], 4.99), run(["optim.lr=50"], None, status="failed")]
    design = F.build_design([sweep(runs, grid={"optim.lr": ["3e-4", "0.5", "50"]})])
    (edge,) = fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False)
    assert (edge.level.text, edge.end, edge.short_of.text) == ("0.5", "largest", "50")
    assert edge.beyond == pytest.approx(5.0)  # sqrt(0.5 x 50)
    # At the small end, in whole numbers: r=4 best, r=2 failed -> 3.
    runs = [run(["lora.r=2"], None, status="failed"), run(["lora.r=4"], 3.0), run(["lora.r=8"], 3.2)]
    design = F.build_design([sweep(runs, grid={"lora.r": ["2", "4", "8"]})])
    (edge,) = fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False)
    assert (edge.end, edge.short_of.text, edge.beyond) == ("smallest", "2", 3.0)  # round(sqrt(8)) = 3
    # A level still running, or stopped, bounds nothing: resuming tells more. The step past the range again.
    runs = [run(["optim.lr=3e-4"], 5.11), run(["optim.lr=0.5"], 4.99), run(["optim.lr=50"], None, status="interrupted")]
    design = F.build_design([sweep(runs, grid={"optim.lr": ["3e-4", "0.5", "50"]})])
    (edge,) = fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False)
    assert edge.short_of is None and edge.beyond == 830.0  # 0.5 x 0.5 / 3e-4 = 833, in two digits
    # Whole numbers stay whole (max_steps 50, 100 best, 110 failed: 105, not 1e+02); others are rounded to two
    # digits as the report writes them, and a value already tried is no suggestion (dropout 0.1 best, 0.101
    # failed: halfway 0.1005 is 0.1).
    runs = [run(["optim.max_steps=50"], 3.2), run(["optim.max_steps=100"], 3.0), run(["optim.max_steps=110"], None, status="failed")]
    design = F.build_design([sweep(runs, grid={"optim.max_steps": ["50", "100", "110"]})])
    (edge,) = fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False)
    assert (edge.short_of.text, edge.beyond) == ("110", 105.0)
    runs = [run(["lora.dropout=0.05"], 3.2), run(["lora.dropout=0.1"], 3.0), run(["lora.dropout=0.101"], None, status="failed")]
    design = F.build_design([sweep(runs, grid={"lora.dropout": ["0.05", "0.1", "0.101"]})])
    assert fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False) == []  # 0.1005 -> 0.1
    # Nothing lies between adjacent whole numbers: r=4 best, r=5 failed.
    runs = [run(["lora.r=3"], 3.2), run(["lora.r=4"], 3.0), run(["lora.r=5"], None, status="failed")]
    design = F.build_design([sweep(runs, grid={"lora.r": ["3", "4", "5"]})])
    assert fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False) == []


def test_a_best_level_inside_the_range_or_over_data_n_is_not_an_edge():
    losses = {"1e-4": 3.6, "3e-4": 3.2, "1e-3": 3.4, }
    runs = [run([f"optim.lr={lr}"], loss) for lr, loss in losses.items()]
    design = F.build_design([sweep(runs, grid={"optim.lr": list(losses)})])
    assert fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False) == []
    runs = [run([f"data.n={n}"], loss) for n, loss in (("100", 3.6), ("400", 3.2))]
    design = F.build_design([sweep(runs, grid={"data.n": ["100", "400"]})])
    assert fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False) == []
    # Levels at or below zero step by their difference: -1 and 0, the best 0 -> 1.
    runs = [run([f"x.shift={v}"], loss) for v, loss in (("-1", 3.6), ("0", 3.2))]
    design = F.build_design([sweep(runs, grid={"x.shift": ["-1", "0"]})])
    (edge,) = fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False)
    assert (edge.end, edge.beyond) == ("largest", 1)
    # Nothing below a bound the levels keep: dropout tried from 0 (0 best), a rank tried from 1 (1 best).
    for key, values in (("lora.dropout", ("0", "0.05")), ("lora.r", ("1", "2"))):
        runs = [run([f"{key}={v}"], loss) for v, loss in zip(values, (3.2, 3.6))]
        design = F.build_design([sweep(runs, grid={key: list(values)})])
        assert fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False) == [], key


def _edges_of(key, levels, maximize=False):
    """Edges of one swept key; ``levels``: (value, eval_loss or None for a level whose run failed)."""
    runs = [run([f"{key}={v}"], loss, status="ok" if loss is not None else "failed") for v, loss in levels]
    design = F.build_design([sweep(runs, grid={key: [v for v, _ in levels]})])
    return fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=maximize)


@pytest.mark.parametrize("key, levels, expected", [
    # Two failed levels below the best: halfway to the nearer one, sqrt(1e-3 x 1e-4), not to the farther.
    ("optim.lr", [("1e-5", None), ("1e-4", None), ("1e-3", 3.0), ("1e-2", 3.2)], ("1e-4", 0.00032)),
    # Halfway arithmetically when an end is at or below zero: 0 best, 8 failed -> 4; 0.01 best, 0 failed -> 0.005.
    ("x.shift", [("-4", 3.2), ("0", 3.0), ("8", None)], ("8", 4.0)),
    ("lora.dropout", [("0", None), ("0.01", 3.0), ("0.02", 3.2)], ("0", 0.005)),
    # Geometrically between two positive levels, even below 1: 4 best, 0.5 failed -> sqrt(2) = 1.4.
    ("x.scale", [("0.5", None), ("4", 3.0), ("8", 3.2)], ("0.5", 1.4)),
    # One step further by the difference when a level is at or below zero: 0 and 2 (2 best) -> 4; -1 and 2 -> 5;
    # -2 and -1 (-1 best) -> 0; -1 and 0 (-1 best) -> -2, no floor below negative levels.
    ("x.shift", [("0", 3.2), ("2", 3.0)], (None, 4.0)),
    ("x.shift", [("-1", 3.2), ("2", 3.0)], (None, 5.0)),
    ("x.shift", [("-2", 3.2), ("-1", 3.0)], (None, 0.0)),
    ("x.shift", [("-1", 3.0), ("0", 3.2)], (None, -2.0)),
    # A rank tried from 2 (2 best): one step below is 1, which a rank may be; a rate below 1 has no floor of 1.
    ("lora.r", [("2", 3.0), ("4", 3.2)], (None, 1.0)),
    ("optim.lr", [("1e-4", 3.0), ("3e-4", 3.2)], (None, 3.3e-05)),
])
def test_the_value_past_an_edge_on_each_kind_of_scale(key, levels, expected):
    (edge,) = _edges_of(key, levels)
    assert (edge.short_of.text if edge.short_of else None, edge.beyond) == (expected[0], pytest.approx(expected[1]))


def test_a_parameter_without_an_edge_does_not_hide_the_next_ones():
    runs = [run([f"lora.r={r}", f"optim.lr={lr}"], loss)
            for (r, lr), loss in {("8", "1e-4"): 3.0, ("16", "1e-4"): 3.0, ("8", "3e-4"): 2.5, ("16", "3e-4"): 2.5}.items()]
    design = F.build_design([sweep(runs, grid={"lora.r": ["8", "16"], "optim.lr": ["1e-4", "3e-4"]})])
    # r: 8 and 16 tied (no edge); lr: 3e-4 the largest and best.
    found = fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False)
    assert [(e.factor, e.level.text) for e in found] == [("optim.lr", "3e-4")]


def _effects_of(key, levels):
    runs = [run([f"{key}={v}"], loss, status="ok" if loss is not None else "failed") for v, loss in levels]
    design = F.build_design([sweep(runs, grid={key: [v for v, _ in levels]})])
    return fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss")


@pytest.mark.parametrize("first", [
    _effects_of("data.n", [("100", 3.2), ("400", 3.0)]),  # data.n: no edge by design
    _effects_of("lora", [("lora", 3.2), ("dora", 3.0)]),  # not numbers
    _effects_of("optim.lr", [("1e-4", 3.6), ("3e-4", 3.2), ("1e-3", 3.4)]),  # best inside the range
    _effects_of("lora.dropout", [("0.05", 3.2), ("0.1", 3.0), ("0.101", None)]),  # the value past is one tried
    _effects_of("lora.r", [("1", 3.0), ("2", 3.2)]),  # below the floor
], ids=["data.n", "categorical", "inside", "tried", "floor"])
def test_every_kind_of_parameter_without_an_edge_leaves_the_next_ones_read(first):
    edge = _effects_of("optim.lr", [("1e-4", 3.2), ("3e-4", 3.0)])
    assert [(e.factor, e.beyond) for e in fx.edges(first + edge, maximize=False)] == [("optim.lr", pytest.approx(9e-4))]


def test_a_configuration_repeated_with_more_seeds_counts_once_in_its_levels_mean():
    """A 2 x 2 grid of one seed each, then the best cell (r=8, lr=3e-4) again with seeds 2 to 4. Pooling runs,
    r=8's mean weighed that cell 4 times and the other once: (5.0 + 4 x 4.0) / 5 = 4.2 against r=16's 4.75, a gap
    of 0.55 where the cells differ by 0.0 at lr 1e-4 and 0.5 at 3e-4. The means of the cells give 4.5 and 4.75."""
    cells = {("8", "1e-4"): [5.0], ("8", "3e-4"): [4.0, 4.1, 3.9, 4.0], ("16", "1e-4"): [5.0], ("16", "3e-4"): [4.5]}
    runs = [run([f"lora.r={r}", f"optim.lr={lr}", f"seed={k + 1}"], loss)
            for (r, lr), losses in cells.items() for k, loss in enumerate(losses)]
    design = F.build_design([sweep(runs, grid={"lora.r": ["8", "16"], "optim.lr": ["1e-4", "3e-4"], "seed": ["1", "2", "3", "4"]})])
    frame = T.runs_frame(design, "eval_loss")
    noise = fx.seed_noise(design, frame, "eval_loss")  # (0, 0.1, -0.1, 0) around 4.0: s = sqrt(0.02 / 3), 7 - 4 = 3 df
    assert noise.df == 3 and noise.std == pytest.approx((0.02 / 3) ** 0.5)
    effects = {e.factor.name: {lv.level.text: lv for lv in e.levels} for e in fx.main_effects(design, frame, "eval_loss", noise)}
    r8, r16 = effects["lora.r"]["8"], effects["lora.r"]["16"]
    assert r8.stat.mean == pytest.approx(4.5) and r16.stat.mean == pytest.approx(4.75)
    assert r8.stat.n == 5 and r8.stat.std == pytest.approx(statistics.stdev([5.0, 4.0, 4.1, 3.9, 4.0]))
    # SE of r=8's mean: s * sqrt(1/1 + 1/4) / 2; of r=16's: s * sqrt(1/1 + 1/1) / 2 = s / sqrt(2); t(0.975, 3) = 3.182.
    t = 3.182
    assert r8.half == pytest.approx(t * noise.std * 1.25 ** 0.5 / 2) and r16.half == pytest.approx(t * noise.std / 2 ** 0.5)


def test_a_score_kept_per_sample_is_paired_higher_being_better(grid):
    """accuracy (a classifier's) and exact_match are the mean of samples.jsonl's exact_match; rougeL of its rougeL.
    Runs pair only over the same prompts in the same order."""
    from ftsweep.report import paired

    design, frame = grid
    prompts = [f"p{k}" for k in range(4)]
    for run_ in design.runs:
        right = 3 if "optim.lr=3e-4" in run_.name else 1  # lr 3e-4 gets 3 of the 4 right, 1e-4 one
        run_._samples = [{"prompt": p, "exact_match": k < right, "rougeL": 0.5} for k, p in enumerate(prompts)]
        run_.summary["task_metrics"] = {"accuracy": right / 4}
    frame = T.runs_frame(design, "accuracy")
    found = dict(paired.level_differences(design, frame, "accuracy", higher=True))
    # lr: d = (0, 1, 1, 0) per example in every configuration: D = 0.5, residuals (-0.5, 0.5, 0.5, -0.5),
    # SE = sqrt(4/3 * 1) / 4 = 0.288675; t(0.975, 3) = 3.182: half-width 0.91856, so within the sample's noise.
    assert (found["optim.lr"].better, found["optim.lr"].worse) == ("3e-4", "1e-4")
    assert found["optim.lr"].diff == pytest.approx(0.5) and found["optim.lr"].high == pytest.approx(0.5 + 0.91856, abs=1e-4)
    assert not found["optim.lr"].stands_out
    assert found["lora.r"].diff == pytest.approx(0.0)
    assert dict(paired.level_differences(design, T.runs_frame(design, "rougeL"), "rougeL", higher=True)) == {}  # no run has a value
    design.runs[0]._samples = [{**r, "prompt": r["prompt"] + "!"} for r in design.runs[0]._samples]  # other prompts
    assert paired.per_example(design, [0, 1], "accuracy") is None
    assert not paired.pairable("bleu") and not paired.pairable("f1")  # a corpus score, a macro average


def test_two_runs_pair_over_the_same_examples_or_not_at_all():
    """paired.between (the sweep's closing console lines): a loss over tokens, a score per sample (higher better),
    and None, never an exception, for what has no per-example parts: a corpus score, a sample without the field
    (samples.jsonl written before rougeL was kept per sample), a single held-out example (no spread to estimate)."""
    from ftsweep.report import paired

    a = _with_losses(run(["lora.r=8"], 2.5), [2.0, 3.0], tokens=(1, 1))
    b = _with_losses(run(["lora.r=16"], 2.75), [2.5, 3.0], tokens=(1, 1))
    got = paired.between(a, b)
    # d = (0.5, 0.0): D = 0.25, residuals (0.25, -0.25), SE = sqrt(2 * 0.125) / 2 = 0.25; t(0.975, 1) = 12.706.
    assert (got.better, got.worse, got.examples) == ("lora.r=8", "lora.r=16", 2)
    assert got.diff == pytest.approx(0.25) and got.high == pytest.approx(0.25 + 12.706 * 0.25, abs=1e-3)
    for run_, right in ((a, (1.0, 1.0, 0.0)), (b, (0.0, 1.0, 0.0))):
        run_._samples = [{"prompt": f"p{k}", "exact_match": bool(r), "rougeL": r / 2} for k, r in enumerate(right)]
    assert paired.between(a, b, "rougeL", higher=True).diff == pytest.approx(0.5 / 3)
    assert paired.between(b, a, "rougeL", higher=True).diff == pytest.approx(-0.5 / 3)
    assert paired.between(a, b, "bleu", higher=True) is None
    b._samples = [{k: v for k, v in row.items() if k != "rougeL"} if i == 1 else row for i, row in enumerate(b._samples)]
    assert paired.between(a, b, "rougeL", higher=True) is None
    assert paired.between(a, b, "exact_match", higher=True).diff == pytest.approx(1 / 3)
    _with_losses(a, [2.0], tokens=(1,)), _with_losses(b, [2.5], tokens=(1,))
    assert paired.between(a, b) is None


def test_the_best_of_two_configurations_is_paired_by_the_metric_ranked_on():
    """Two configurations ranked by accuracy (higher better): the pair is over samples' exact_match, not the loss."""
    from ftsweep.report import paired

    prompts = [f"p{k}" for k in range(4)]
    runs = []
    for lr, right in (("1e-4", 1), ("3e-4", 3)):
        run_ = _with_losses(run([f"optim.lr={lr}"], 3.0, summary={"task_metrics": {"accuracy": right / 4}}), [3.0] * 4)
        run_._samples = [{"prompt": p, "exact_match": k < right} for k, p in enumerate(prompts)]
        runs.append(run_)
    design = F.build_design([sweep(runs, grid={"optim.lr": ["1e-4", "3e-4"]})])
    frame = T.runs_frame(design, "accuracy")
    got = paired.best_against_next(design, T.configurations(design, frame, "accuracy", maximize=True), "accuracy", higher=True)
    assert (got.better, got.worse, got.diff) == ("optim.lr=3e-4", "optim.lr=1e-4", pytest.approx(0.5))
    # Ranked by a corpus score there is nothing to pair.
    assert paired.best_against_next(design, T.configurations(design, frame, "accuracy", maximize=True), "bleu", higher=True) is None


def test_level_differences_go_on_past_a_parameter_they_cannot_pair():
    """A parameter whose runs lack per-example losses, whose levels were not compared at matched settings, or whose
    runs hold a single level is passed over; the next is still paired. Only the effects given are used."""
    import dataclasses

    from ftsweep.report import paired

    losses = {("8", "1e-4"): 3.0, ("8", "3e-4"): 2.8, ("16", "1e-4"): 2.9, ("16", "3e-4"): 2.7}
    runs = [_with_losses(run([f"lora.r={r}", f"optim.lr={lr}"], loss), [loss - 0.1, loss + 0.1, loss - 0.1, loss + 0.1])
            for (r, lr), loss in losses.items()]
    runs.append(run(["lora.r=32", "optim.lr=3e-4"], 2.6))  # kept no held_out_losses.json
    design = F.build_design([sweep(runs)])
    frame = T.runs_frame(design, "eval_loss")
    r, lr = fx.main_effects(design, frame, "eval_loss")
    assert r.factor.name == "lora.r" and 4 in r.runs
    found = dict(paired.level_differences(design, frame, "eval_loss", higher=False, effects=[r, lr]))
    assert list(found) == ["optim.lr"] and found["optim.lr"].diff == pytest.approx(0.2)
    r8 = [i for i, run_ in enumerate(design.runs) if "lora.r=8," in run_.name]
    kept = [i for i in r.runs if "lora.r=32" not in design.runs[i].name]  # r=8 and r=16 at lr 3e-4, losses kept
    for skipped in (dataclasses.replace(r, matched=False, runs=kept),  # means over different settings
                    dataclasses.replace(r, runs=r8)):  # one level
        assert list(dict(paired.level_differences(design, frame, "eval_loss", False, effects=[skipped, lr]))) == ["optim.lr"]
    assert paired.level_differences(design, frame, "eval_loss", False, effects=[]) == []


def test_runs_equal_on_every_example_are_a_tie_and_tied_levels_no_edge():
    """Ranked by rougeL, three of the demo's four cells answered "is is is ..." to every prompt: the best and the
    next were equal example by example ("0.0000 higher, interval 0.0000 to 0.0000"), and r=8 and r=16 had the same
    mean, yet r=8 was called "the smallest tried" with r=4 to add."""
    from ftsweep.report import paired

    same = pd.Series([0.5, 0.2, 0.0]).to_numpy()
    ones = pd.Series([1.0, 1.0, 1.0]).to_numpy()
    assert paired.compare("x", same, "y", same.copy(), ones, higher=True).tied
    assert not paired.compare("x", same, "y", same - 0.1, ones, higher=True).tied  # the same shift everywhere: no tie
    assert not paired.compare("x", same, "y", same[::-1].copy(), ones, higher=True).tied  # D = 0, spread: no tie
    runs = [run(["lora.r=8", f"optim.lr={lr}"], loss) for lr, loss in (("1e-4", 3.2), ("3e-4", 3.0))]
    runs += [run(["lora.r=16", f"optim.lr={lr}"], loss) for lr, loss in (("1e-4", 3.2), ("3e-4", 3.0))]
    design = F.build_design([sweep(runs, grid={"lora.r": ["8", "16"], "optim.lr": ["1e-4", "3e-4"]})])
    found = fx.edges(fx.main_effects(design, T.runs_frame(design, "eval_loss"), "eval_loss"), maximize=False)
    assert [e.factor for e in found] == ["optim.lr"]


def test_paired_level_differences_leave_out_the_runs_the_effects_table_leaves_out():
    """2 x 2 grid, (r=16, lr=3e-4) failed: lr's levels compare at r=8 alone (3.0 against 2.8), not with r=16's 2.0."""
    from ftsweep.report import paired

    losses = {("8", "1e-4"): 3.0, ("8", "3e-4"): 2.8, ("16", "1e-4"): 2.0}
    runs = [_with_losses(run([f"lora.r={r}", f"optim.lr={lr}"], loss), [loss - 0.1, loss + 0.1, loss - 0.1, loss + 0.1])
            for (r, lr), loss in losses.items()]
    runs.append(run(["lora.r=16", "optim.lr=3e-4"], None, status="failed"))
    design = F.build_design([sweep(runs, grid={"lora.r": ["8", "16"], "optim.lr": ["1e-4", "3e-4"]})])
    frame = T.runs_frame(design, "eval_loss")
    found = dict(paired.level_differences(design, frame, "eval_loss", higher=False))
    assert (found["optim.lr"].better, found["optim.lr"].worse) == ("3e-4", "1e-4")
    assert found["optim.lr"].diff == pytest.approx(0.2)
