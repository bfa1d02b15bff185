"""The report's caveats (report/caveats.py) on runs built in memory: each says when a number in the report does
not mean what it seems to, and stays silent otherwise. A caveat that fires on every sweep is noise a reader learns
to skip; one that never fires hides a confounded comparison."""

from __future__ import annotations

import pytest
from lane import report_run
from lane import report_sweep as sweep

from ftsweep.report import caveats
from ftsweep.report import factors as F
from ftsweep.report.render import _md_inline


def text(lines: list) -> list[str]:
    return [_md_inline(line) for line in lines]


def design(*runs, grid=None):
    return F.build_design([sweep(list(runs), grid=grid)])


def lora(r=8, alpha=16, method="lora", rslora=False) -> dict:
    return {"lora": {"method": method, "r": r, "alpha": alpha, "use_rslora": rslora}, "seed": 1}


# ---- training length --------------------------------------------------------------------------------------------

def test_runs_of_different_lengths_are_said_to_differ_in_training_length():
    equal = design(report_run(["data.n=100"], 3.0, summary={"steps": 40, "tokens_seen": 10_000}),
                   report_run(["data.n=400"], 2.9, summary={"steps": 40, "tokens_seen": 10_900}))
    assert caveats.training_length(equal, "eval_loss") == []  # 9 % more tokens: the sampled examples' lengths
    edge = design(report_run(["data.n=100"], 3.0, summary={"steps": 40, "tokens_seen": 10_000}),
                  report_run(["data.n=400"], 2.9, summary={"steps": 40, "tokens_seen": 11_000}))
    assert caveats.training_length(edge, "eval_loss") == []  # 10 % exactly: still the same length
    longer = design(report_run(["data.n=100"], 3.0, summary={"steps": 13, "tokens_seen": 7_000}),
                    report_run(["data.n=800"], 2.9, summary={"steps": 100, "tokens_seen": 56_800}))
    assert text(caveats.training_length(longer, "eval_loss")) == [
        "The ok runs trained for different lengths (13 to 100 optimizer steps, 7.0 k to 56.8 k tokens); `data.n` sets "
        "it: a difference in eval_loss is partly one of training length. The loss curves compare the runs at equal "
        "steps and tokens seen; `optim.max_steps` trains every run for the same number of steps."]
    tokens = design(report_run(["optim.micro_batch_size=4"], 3.0, summary={"steps": 40, "tokens_seen": 5_000}),
                    report_run(["optim.micro_batch_size=8"], 2.9, summary={"steps": 40, "tokens_seen": 10_000}))
    assert text(caveats.training_length(tokens, "eval_loss")) == [  # 10,000 and up: both ends in thousands
        "The ok runs trained for different lengths (40 optimizer steps each, 5.0 k to 10.0 k tokens); "
        "`optim.micro_batch_size` sets it: a difference in eval_loss is partly one of training length. The loss "
        "curves compare the runs at equal tokens seen."]
    below = design(report_run(["optim.micro_batch_size=4"], 3.0, summary={"steps": 40, "tokens_seen": 5_000}),
                   report_run(["optim.micro_batch_size=8"], 2.9, summary={"steps": 40, "tokens_seen": 9_999}))
    assert "(40 optimizer steps each, 5,000 to 9,999 tokens)" in text(caveats.training_length(below, "eval_loss"))[0]
    # Two parameters, one of which sets the length: only it is named. Both: "set it".
    grid = [report_run([f"data.n={n}", f"lora.r={r}"], 3.0, summary={"steps": n // 8, "tokens_seen": n * 30})
            for n in (100, 800) for r in (8, 16)]
    assert "); `data.n` sets it: a difference" in text(caveats.training_length(design(*grid), "eval_loss"))[0]
    # Two sweeps of one override compared (python -m ftsweep.report A B), run under other defaults: the sweeps differ
    # in length, but a sweep label is no parameter to set it with.
    a = sweep([report_run(["lora.r=8"], 3.0, sweep="a", summary={"steps": 13})], label="a")
    b = sweep([report_run(["lora.r=8"], 2.9, sweep="b", summary={"steps": 100})], label="b")
    assert [f.name for f in F.build_design([a, b]).factors] == ["sweep"]
    assert text(caveats.training_length(F.build_design([a, b]), "eval_loss"))[0].startswith(
        "The ok runs trained for different lengths (13 to 100 optimizer steps): a difference")
    both = [report_run([f"data.n={n}", f"optim.epochs={e}"], 3.0, summary={"steps": n * e // 8}) for n, e in ((100, 1), (800, 2))]
    (line,) = text(caveats.training_length(design(*both), "eval_loss"))  # no tokens_seen: steps alone
    assert line.startswith("The ok runs trained for different lengths (12 to 200 optimizer steps); `data.n`, "
                           "`optim.epochs` set it: a difference")
    # A failed run's length is no comparison; one ok run has nothing to differ from.
    failed = design(report_run(["data.n=100"], 3.0, summary={"steps": 13, "tokens_seen": 7_000}),
                    report_run(["data.n=800"], None, status="failed", summary={"steps": 100, "tokens_seen": 56_800}))
    assert caveats.training_length(failed, "eval_loss") == []


def test_a_data_size_sweep_at_equal_steps_is_said_to_repeat_its_smaller_sets():
    def run(n, steps=50, batch=8, **kw):
        return report_run([f"data.n={n}"], 3.0, summary={"steps": steps, "effective_batch": batch}, **kw)

    # 50 steps x 8 = 400 examples trained: 4 passes over 100, 0.4 over 1000 (the two seeds of 100 agree).
    assert text(caveats.repeated_data(design(run(100), run(100, config={"seed": 2}), run(1000)))) == [
        "At equal optimizer steps (50 each), the smaller `data.n` sets were gone over more times (100 "
        "examples 4 passes, 1000 examples 0.4; passes = steps × effective batch ÷ data.n): the data-size comparison "
        "is one at a fixed number of steps, with the small sets repeated. `optim.max_steps=-1` trains every set for "
        "`optim.epochs` instead."]
    assert caveats.repeated_data(design(run(100), run(1000, steps=100))) == []  # 4.0 and 0.8: training_length says it
    assert caveats.repeated_data(design(run(100), run(140))) == []  # 4.0 and 2.9 passes: less than 1.5 x apart
    assert caveats.repeated_data(design(run(100), run(150))) != []  # 4.0 and 2.7: 1.5 x
    assert caveats.repeated_data(design(run(100), run(1000, status="failed"))) == []  # one ok level
    # 10 steps x 8 over 1000 and 10000: 0.08 and 0.008 passes, nothing repeated; exactly once over 80: not repeated.
    assert caveats.repeated_data(design(run(1000, steps=10), run(10000, steps=10))) == []
    assert caveats.repeated_data(design(run(80, steps=10), run(800, steps=10))) == []
    assert caveats.repeated_data(design(run(79, steps=10), run(800, steps=10))) != []
    assert caveats.repeated_data(design(report_run(["lora.r=8"], 3.0, summary={"steps": 50, "effective_batch": 8}),
                                        report_run(["lora.r=16"], 3.0, summary={"steps": 50, "effective_batch": 8}))) == []


# ---- held-out tokens ----------------------------------------------------------------------------------------------

def test_held_out_losses_over_different_tokens_are_said_to_compare_only_roughly():
    def at(max_length, fingerprint):
        return report_run([f"data.max_length={max_length}"], 3.0, manifest={"held_out_fingerprint": fingerprint},
                          summary={"task_metrics": {"rougeL": 0.4}})

    cut = design(at(64, "a"), at(512, "b"))
    assert text(caveats.held_out_tokens(cut, "eval_loss")) == [
        "The runs scored the held-out examples as different tokens (`data.max_length` sets them): eval_loss averages "
        "over other tokens in each, so it compares those runs only roughly. The generation metrics score the same "
        "reference texts in every run: `--metric rougeL` ranks by one."]
    for metric in ("exact_match", "bleu"):  # the first generation metric the runs have
        only = [report_run([f"data.max_length={n}"], 3.0, manifest={"held_out_fingerprint": f}, summary={"task_metrics": {metric: 0.1}})
                for n, f in ((64, "a"), (512, "b"))]
        assert text(caveats.held_out_tokens(design(*only), "eval_loss"))[0].endswith(f"`--metric {metric}` ranks by one.")
    bare = [report_run([f"data.max_length={n}"], 3.0, manifest={"held_out_fingerprint": f}) for n, f in ((64, "a"), (512, "b"))]
    assert text(caveats.held_out_tokens(design(*bare), "eval_loss"))[0].endswith("compares those runs only roughly.")
    assert caveats.held_out_tokens(cut, "rougeL") == [] and caveats.held_out_tokens(cut, "test_loss") == []
    assert text(caveats.held_out_tokens(cut, "perplexity")) != []
    assert caveats.held_out_tokens(design(at(64, "a"), at(512, "a")), "eval_loss") == []


# ---- the update scale: rank at one alpha, rsLoRA beside the others -----------------------------------------------------

def test_a_rank_sweep_at_one_alpha_is_said_to_sweep_the_update_scale():
    runs = [report_run([f"lora.r={r}"], 3.0, config=lora(r)) for r in (8, 16, 32)]
    assert text(caveats.rank_scale(design(*runs))) == [
        "`lora.alpha` stayed 16 while `lora.r` went from 8 to 32, so the update scale alpha/r went from 2 to 0.5: part "
        "of what the rank did is a change of step size. To compare ranks at one scale, add `'lora.alpha=${lora.r}'` "
        "to the sweep (alpha/r = 1 at every rank)."]
    two = [report_run(["lora=vera"], 3.2, config=lora(8, method="vera")), *runs[:2]]  # a method without alpha/r first
    assert "went from 8 to 16, so the update scale alpha/r went from 2 to 1" in text(caveats.rank_scale(design(*two)))[0]
    tied = [report_run([f"lora.r={r}"], 3.0, config=lora(r, alpha=r)) for r in (8, 16)]  # 'lora.alpha=${lora.r}'
    assert caveats.rank_scale(design(*tied)) == []
    rs = [report_run([f"lora.r={r}"], 3.0, config=lora(r, rslora=True)) for r in (8, 16)]  # alpha/sqrt(r) by design
    assert caveats.rank_scale(design(*rs)) == []
    ia3 = [report_run([f"lora.r={r}"], 3.0, config=lora(r, method="vera")) for r in (8, 16)]  # no alpha/r scale
    assert caveats.rank_scale(design(*ia3)) == []
    one_ok = [runs[0], report_run(["lora.r=16"], None, status="failed", config=lora(16))]
    assert caveats.rank_scale(design(*one_ok)) == []
    alpha = [report_run(["lora.alpha=16"], 3.0, config=lora(8, 16)), report_run(["lora.alpha=32"], 3.0, config=lora(8, 32))]
    assert caveats.rank_scale(design(*alpha)) == []  # lora.r not swept


def test_rslora_beside_other_variants_at_one_rank_is_said_to_scale_differently():
    plain = report_run(["lora=lora"], 4.745, config=lora())
    rs = report_run(["lora=rslora"], 4.325, config=lora(rslora=True))
    dora = report_run(["lora=dora"], 4.7, config={"lora": {"method": "lora", "r": 8, "alpha": 16, "use_dora": True}})
    assert text(caveats.variant_scale(design(plain, rs, dora))) == [
        "At the same `lora.r` and `lora.alpha`, rsLoRA scales its update by alpha/√r (5.66 at r=8, alpha 16) and the "
        "other variants by alpha/r (2): with Adam a larger scale acts much like a larger learning rate, so part of what "
        "the variant did is a change of step size. Sweep `optim.lr` with the variants and compare each at its best "
        "learning rate."]
    with_lr = [report_run([f"lora={v}", f"optim.lr={lr}"], 4.5, config=lora(rslora=v == "rslora"))
               for v in ("lora", "rslora") for lr in ("1e-4", "3e-4")]
    (line,) = text(caveats.variant_scale(design(*with_lr)))
    assert line.endswith("`optim.lr` is swept too: compare each variant at its best learning rate (the runs table) "
                         "rather than by its mean over the learning rates.")
    assert caveats.variant_scale(design(plain, dora)) == []
    other_rank = report_run(["lora=rslora"], 4.3, config=lora(r=16, rslora=True))  # not the same r: no pair
    assert caveats.variant_scale(design(plain, other_rank)) == []


# ---- duplicates, one answer, overfitting -------------------------------------------------------------------------------

def test_held_out_or_test_examples_seen_in_training_are_counted():
    runs = [report_run(["data.n=100"], 3.0, summary={"held_out_in_train": 3}),
            report_run(["data.n=400"], 2.9, summary={"held_out_in_train": 19, "tested_in_train": 0}),
            report_run(["data.n=800"], None, status="failed", summary={"held_out_in_train": 40})]
    assert text(caveats.duplicates(design(*runs))) == [
        "2 of the ok runs held out examples that were also training examples, token for token (up to 19; "
        "`held_out_in_train` in summary.json): the data has duplicate records, and those held-out numbers partly "
        "measure recall."]
    runs = [report_run(["data.n=100"], 3.0, summary={"tested_in_train": 1})]
    assert text(caveats.duplicates(design(*runs))) == [
        "1 of the ok runs tested on examples that were also training examples, token for token (up to 1; "
        "`tested_in_train` in summary.json): the data has duplicate records, and those test numbers partly measure "
        "recall."]
    assert caveats.duplicates(design(report_run(["data.n=100"], 3.0, summary={"held_out_in_train": 0}))) == []


SPREAD = {"n": 32, "distinct": 1, "top": "is is is", "top_count": 32, "reference_top_count": 2}


def test_runs_that_give_one_answer_are_named_and_the_best_among_them_said():
    runs = [report_run(["optim.lr=1e-4"], 5.0, summary={"answer_spread": SPREAD}),
            report_run(["optim.lr=3e-4"], 4.7, summary={"answer_spread": {**SPREAD, "distinct": 20, "top_count": 4}}),
            report_run(["optim.lr=0.5"], 4.5, summary={"answer_spread": {**SPREAD, "top": ""}}),
            report_run(["optim.lr=1"], None, status="failed", summary={"answer_spread": SPREAD})]
    found = design(*runs)
    best = [i for i, run in enumerate(found.runs) if run.name == "optim.lr=0.5"]
    assert text(caveats.one_answer(found, best)) == [  # the best named first, with its own answer
        "2 of the ok runs, the best configuration's included, gave one answer to nearly every held-out example "
        "(`optim.lr=0.5`, `optim.lr=1e-4`; `optim.lr=0.5`: an empty answer for 32 of 32): their task metrics score that "
        "answer against every reference, not what each run learned; always giving the most frequent reference would "
        "be right for 2 of 32. Their `samples.jsonl` shows the answers."]
    (line,) = text(caveats.one_answer(found))
    assert line.startswith("2 of the ok runs gave one answer to nearly every held-out example (`optim.lr=1e-4`, `optim.lr=0.5`; ")
    alone = design(runs[1], runs[2])  # lr 0.5 the only one, and the best
    (line,) = text(caveats.one_answer(alone, [i for i, run in enumerate(alone.runs) if run.name == "optim.lr=0.5"]))
    assert line.startswith("The best configuration's run gave one answer to nearly every held-out example (`optim.lr=0.5`: "
                           "an empty answer for 32 of 32)")
    many = [report_run([f"optim.lr={k}e-4"], 5.0, summary={"answer_spread": SPREAD}) for k in range(1, 6)]
    five = design(*many)
    (line,) = text(caveats.one_answer(five, [i for i, run in enumerate(five.runs) if run.name == "optim.lr=5e-4"]))
    assert "(`optim.lr=5e-4`, `optim.lr=1e-4`, `optim.lr=2e-4` and 2 more; `optim.lr=5e-4`: " in line
    for top, shown in (("x" * 50, f"'{'x' * 40}…'"), ("z" * 41, f"'{'z' * 40}…'"), ("y" * 40, f"'{'y' * 40}'"),
                       ("", "an empty answer")):
        spread = {**SPREAD, "top": top}
        (line,) = text(caveats.one_answer(design(report_run(["optim.lr=1e-4"], 5.0, summary={"answer_spread": spread}))))
        assert f"(`optim.lr=1e-4`: {shown} for 32 of 32)" in line
    classes = {"n": 80, "distinct": 1, "top": 0, "top_count": 80, "reference_top_count": 41}
    (line,) = text(caveats.one_answer(design(report_run(["optim.lr=1e-4"], 5.0, summary={"answer_spread": classes}))))
    assert "(`optim.lr=1e-4`: class 0 for 80 of 80)" in line
    many = [report_run([f"optim.lr={k}e-4"], 5.0, summary={"answer_spread": SPREAD}) for k in range(1, 6)]
    assert "(`optim.lr=1e-4`, `optim.lr=2e-4`, `optim.lr=3e-4` and 2 more; " in text(caveats.one_answer(design(*many)))[0]
    assert "`optim.lr=3e-4`; " in text(caveats.one_answer(design(*many[:3])))[0]  # three: all named, no "more"
    assert "`optim.lr=3e-4` and 1 more; " in text(caveats.one_answer(design(*many[:4])))[0]
    assert caveats.one_answer(design(runs[1])) == []


@pytest.mark.parametrize(("final", "flagged"), [(4.0 * 1.011, True), (4.0 * (1 + caveats.OVERFIT), False), (4.0 * 1.009, False)])
def test_runs_that_ended_above_their_lowest_held_out_loss_are_named_past_one_percent(final, flagged):
    runs = [report_run(["optim.lr=1e-3"], final, summary={"best_eval_loss": 4.0, "best_step": 50}),
            report_run(["optim.lr=1e-4"], 4.5, summary={"best_eval_loss": 4.5, "best_step": 100})]
    lines = text(caveats.overfitting(design(*runs)))
    assert bool(lines) is flagged
    if flagged:
        assert lines[0].startswith(f"1 of the ok runs ended with a held-out loss more than 1% above their lowest "
                                   f"(`optim.lr=1e-3`: {final:.4f} at the end against 4.0000 at step 50)")
        assert "Fewer steps (`optim.max_steps=50`)" in lines[0]


def test_of_runs_that_ended_above_their_lowest_the_worst_is_named():
    """Worst by how far above (4.4 / 4.0 = 1.10 against 2.3 / 2.0 = 1.15), not by how high the loss is."""
    runs = [report_run(["optim.lr=1e-3"], 4.4, summary={"best_eval_loss": 4.0, "best_step": 50}),
            report_run(["optim.lr=3e-3"], 2.3, summary={"best_eval_loss": 2.0, "best_step": 30}),
            report_run(["optim.lr=1e-2"], 9.0, status="failed", summary={"best_eval_loss": 4.0, "best_step": 10})]
    assert text(caveats.overfitting(design(*runs))) == [
        "2 of the ok runs ended with a held-out loss more than 1% above their lowest (`optim.lr=3e-3`: 2.3000 at the "
        "end against 2.0000 at step 30): they got worse after that point, and their adapter is the last step's, as "
        "ranked here. Fewer steps (`optim.max_steps=30`) or a lower learning rate keep the better one."]
