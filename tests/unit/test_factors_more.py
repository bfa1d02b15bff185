"""Factors and levels read from the runs (ftsweep.report.factors): the order factors appear in, which text a level
is shown with, where "(not set)" sorts, config groups without a name, and the sweep as a factor."""

from __future__ import annotations

from lane import report_run as run
from lane import report_sweep as sweep

from ftsweep.report import factors as F
from ftsweep.report import table as T


def names(design):
    return [f.name for f in design.factors]


def texts(factor):
    return [lv.text for lv in factor.levels]


def test_factors_follow_the_grid_order_then_first_appearance():
    runs = [run(["lora.r=8", "optim.lr=1e-4"]), run(["lora.r=16", "optim.lr=3e-4"])]
    assert names(F.build_design([sweep(runs)])) == ["lora.r", "optim.lr"]
    # The sweep's grid was typed lr first: that is the order of the factors.
    assert names(F.build_design([sweep(runs, grid={"optim.lr": ["1e-4", "3e-4"], "lora.r": ["8", "16"]})])) == [
        "optim.lr", "lora.r"]
    # A grid key typed with + (append to the config) is the same key.
    assert names(F.build_design([sweep(runs, grid={"+optim.lr": ["1e-4", "3e-4"], "lora.r": ["8", "16"]})])) == [
        "optim.lr", "lora.r"]
    # A grid that is not a mapping says nothing about the order.
    assert names(F.build_design([sweep(runs, grid=["optim.lr", "lora.r"])])) == ["lora.r", "optim.lr"]


def test_the_grids_of_all_sweeps_are_read_in_order():
    a = sweep([run(["lora.r=8", "optim.lr=1e-4"], sweep="a")], label="a", grid={"optim.lr": ["1e-4"], "lora.r": ["8"]})
    b = sweep([run(["lora.r=16", "optim.lr=3e-4"], sweep="b")], label="b", grid={"lora.r": ["16"]})
    assert names(F.build_design([a, b])) == ["optim.lr", "lora.r"]


def test_a_key_that_does_not_vary_is_skipped_and_later_keys_still_count():
    runs = [run(["optim.lr=1e-4", "lora.r=8", "lora.alpha=16"]), run(["optim.lr=1e-4", "lora.r=16", "lora.alpha=32"])]
    design = F.build_design([sweep(runs, grid={"optim.lr": ["1e-4"], "lora.r": ["8", "16"], "lora.alpha": ["16", "32"]})])
    assert names(design) == ["lora.r", "lora.alpha"]


def test_a_typed_value_names_the_level_even_after_a_config_value():
    # The config's 0.0003 comes first, but the typed 3e-4 (the same number) is the level's text.
    runs = [run([], config={"optim": {"lr": 0.0003}}), run(["optim.lr=3e-4"]), run(["optim.lr=1e-4"])]
    (factor,) = F.build_design([sweep(runs)]).factors
    assert texts(factor) == ["1e-4", "3e-4"]


def test_not_set_sorts_as_text_and_null_last():
    # Levels sort numbers, booleans, text, null; "(not set)" is text, and "(" sorts before letters
    # and after the empty string.
    runs = [run(["data.system=abc"]), run(["data.system=null"]), run([]), run(["data.system=''"]),
            run(["data.system=true"]), run(["data.system=2"])]
    (factor,) = F.build_design([sweep(runs)]).factors
    assert texts(factor) == ["2", "true", "", F.NOT_SET, "abc", "null"]


def test_a_config_group_without_a_name_is_not_set():
    runs = [run(["lora=dora"]), run([], config={"lora": {"r": 8}, "seed": 1})]
    (factor,) = F.build_design([sweep(runs)]).factors
    assert texts(factor) == [F.NOT_SET, "dora"]  # text levels in text order: "(" before letters


def test_booleans_and_lists_from_a_config_are_shown_as_typed():
    assert F.level_of(True).text == "true" and F.level_of(False).text == "false"
    assert F.level_of(["q_proj", "v_proj"]).text == "q+v_proj"
    assert F.level_of([0.1, 2]).text == "0.1+2"
    runs = [run(["lora.target_modules=[q_proj,v_proj]"]),
            run([], config={"lora": {"target_modules": ["q_proj", "k_proj", "v_proj"]}}),
            run(["lora.use_dora=true"]), run([], config={"lora": {"use_dora": False}})]
    design = F.build_design([sweep(runs)])
    by_name = {f.name: texts(f) for f in design.factors}
    assert by_name["lora.target_modules"] == [F.NOT_SET, "q+k+v_proj", "q+v_proj"]
    assert by_name["lora.use_dora"] == ["false", "true", F.NOT_SET]  # booleans before text


def test_a_typed_list_and_the_same_list_from_a_config_are_one_level():
    # One sweep typed the list, another left the config's default (the same list): one level, not two levels
    # that would both read q+v_proj. A space after the comma, or 1e-4 for 0.0001, changes nothing either.
    runs = [run(["lora.target_modules=[q_proj,v_proj]", "optim.lr=1e-4"]),
            run([], config={"lora": {"target_modules": ["q_proj", "v_proj"]}, "optim": {"lr": 2e-4}}),
            run(["lora.target_modules=[q_proj, v_proj]", "optim.lr=1e-4"]),
            run(["lora.target_modules=[q_proj,k_proj,v_proj]", "optim.lr=1e-4"])]
    design = F.build_design([sweep(runs)])
    by_name = {f.name: texts(f) for f in design.factors}
    assert by_name["lora.target_modules"] == ["q+k+v_proj", "q+v_proj"]
    assert len({design.levels[i]["lora.target_modules"] for i in range(3)}) == 1
    assert F.level_of("[1e-4, 2]").key == F.level_of([0.0001, 2]).key
    assert F.level_of("[1e-4, 2]").text == "1e-4+2"  # shown as typed
    assert F.level_of("[]").key == F.level_of([]).key and F.level_of("[]").text == "[]"


def test_one_configuration_is_labelled_all_runs():
    design = F.build_design([sweep([run(["seed=1"]), run(["seed=2"])])])
    assert design.factors == [] and design.label(design.configuration(0)) == "all runs"
    assert set(T.runs_frame(design, "eval_loss")["configuration"]) == {"all runs"}


def test_the_sweep_factor_labels_each_configuration_and_is_not_numeric():
    a = sweep([run(["lora.r=8"], sweep="b"), run(["lora.r=16"], sweep="b")], label="b")
    b = sweep([run(["lora.r=8"], sweep="a"), run(["lora.r=16"], sweep="a")], label="a")
    design = F.build_design([a, b])
    sweep_factor = design.factors[0]
    assert sweep_factor.name == F.SWEEP and texts(sweep_factor) == ["b", "a"]  # in the order given, not sorted
    assert not sweep_factor.numeric and sweep_factor.levels[0].number is None
    assert [design.label(design.configuration(i)) for i in range(4)] == [
        "sweep=b, lora.r=8", "sweep=b, lora.r=16", "sweep=a, lora.r=8", "sweep=a, lora.r=16"]
