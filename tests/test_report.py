"""The ablation report, built from run directories these tests write themselves.

Every expected number is computed here from the losses the fixtures chose, with
the textbook formulas (mean, sample std with n-1), not with the report's code.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures_report import GRID_2X2, PACKAGES, ROOT, write_2x2, write_run, write_sweep_json

from ftsweep.report import build_report
from ftsweep.report.__main__ import main as report_cli

SCRIPT = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"


# ----------------------------------------------------------------- helpers


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def std(xs: list[float]) -> float:
    m = mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def md_table(md: str, heading: str) -> list[dict[str, str]]:
    """The first pipe table after ``heading``, as dicts keyed by header (markup kept)."""
    lines = md.split(heading, 1)[1].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, row)) for row in body]


def outside_code(md: str) -> str:
    """report.md without its fenced code blocks and code spans."""
    md = re.sub(r"```.*?```", "", md, flags=re.S)
    return re.sub(r"`[^`]*`", "", md)


# ---------------------------------------------------- the 2x2 sweep with seeds


@pytest.fixture(scope="module")
def sweep_2x2(tmp_path_factory) -> Path:
    """lora.r=8,16 x optim.lr=1e-4,3e-4, two ok seeds per cell, plus a third seed that
    failed in one cell, is still running in another and never started in a third."""
    sweep = write_2x2(tmp_path_factory.mktemp("multirun") / "14-03-11")
    write_run(
        sweep,
        ["lora.r=8", "optim.lr=1e-4", "seed=3"],
        status="failed",
        error={"type": "ValueError", "message": f"loss is nan {SCRIPT}"},
    )
    write_run(sweep, ["lora.r=16", "optim.lr=3e-4", "seed=3"], status="running")
    write_run(sweep, ["lora.r=16", "optim.lr=1e-4", "seed=3"], hydra_only=True)
    build_report([sweep])
    return sweep


def test_runs_table_averages_seeds_and_ranks_best_first(sweep_2x2):
    md = (sweep_2x2 / "report.md").read_text()
    rows = md_table(md, "## Runs")
    assert [(r["lora.r"], r["optim.lr"]) for r in rows] == [
        ("`16`", "`3e-4`"),  # 3.20
        ("`8`", "`3e-4`"),  # 3.35
        ("`16`", "`1e-4`"),  # 3.50
        ("`8`", "`1e-4`"),  # 3.65
    ]
    for row in rows:
        losses = GRID_2X2[(row["lora.r"].strip("`"), row["optim.lr"].strip("`"))]
        expected = f"{mean(losses):.4f} ± {std(losses):.4f}"
        assert row["eval loss ↓"].strip("*") == expected
        assert row["n"] == "2"  # failed and running seeds enter no mean
    assert rows[0]["rank"] == "**★ 1**"
    assert rows[0]["eval loss ↓"] == "**3.2000 ± 0.1414**"
    assert [r["rank"] for r in rows[1:]] == ["2", "3", "4"]
    # The status column says what happened to the third seeds.
    status = {(r["lora.r"], r["optim.lr"]): r["status"] for r in rows}
    assert status[("`8`", "`1e-4`")] == "2 ok, 1 failed"
    assert status[("`16`", "`3e-4`")] == "2 ok, 1 running"
    assert status[("`16`", "`1e-4`")] == "2 ok, 1 not started"
    assert status[("`8`", "`3e-4`")] == "ok"
    # Cost columns: trainable params is a mean with thousands separators.
    assert rows[0]["trainable params"] == "136,448"
    assert rows[0]["peak memory (GiB)"] == f"{812000000 / 2**30:.2f}"
    assert "Best: `lora.r=16, optim.lr=3e-4` with eval_loss 3.2000 ± 0.1414 (n=2)." in md


def test_effects_are_means_over_other_factors_and_seeds(sweep_2x2):
    rows = md_table((sweep_2x2 / "report.md").read_text(), "## Effects")
    got = {(r["parameter"].strip("`"), r["level"].strip("`")): r for r in rows}
    levels = {
        ("lora.r", "8"): [loss for (r, _), ls in GRID_2X2.items() if r == "8" for loss in ls],
        ("lora.r", "16"): [loss for (r, _), ls in GRID_2X2.items() if r == "16" for loss in ls],
        ("optim.lr", "1e-4"): [loss for (_, lr), ls in GRID_2X2.items() if lr == "1e-4" for loss in ls],
        ("optim.lr", "3e-4"): [loss for (_, lr), ls in GRID_2X2.items() if lr == "3e-4" for loss in ls],
    }
    assert list(got) == list(levels)  # numeric order of levels, factors as swept
    for key, losses in levels.items():
        assert got[key]["eval_loss mean"] == f"{mean(losses):.4f}"
        assert got[key]["std"] == f"{std(losses):.4f}"
        assert got[key]["n"] == "4"
    # By hand: lora.r=8 -> 3.6, 3.7, 3.3, 3.4: mean 3.5, std sqrt(0.10/3).
    assert got[("lora.r", "8")]["eval_loss mean"] == "3.5000"
    assert got[("lora.r", "8")]["std"] == "0.1826"
    assert got[("optim.lr", "3e-4")]["eval_loss mean"] == "3.2750"


def test_report_files_and_plots(sweep_2x2):
    md = (sweep_2x2 / "report.md").read_text()
    for name in ("effects", "interactions", "heatmap", "loss_curves"):
        assert (sweep_2x2 / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](plots/{name}.png)" in md
    assert not (sweep_2x2 / "plots" / "data_size.png").exists()  # data.n is not swept
    html = (sweep_2x2 / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 4
    assert "plots/" not in html  # nothing to fetch: the file opens offline


def test_runs_csv_has_one_row_per_run(sweep_2x2):
    import pandas as pd

    frame = pd.read_csv(sweep_2x2 / "runs.csv")
    assert len(frame) == 11
    assert frame["status"].value_counts().to_dict() == {"ok": 8, "failed": 1, "running": 1, "not started": 1}
    ok = frame[frame["status"] == "ok"]
    assert sorted(ok["eval_loss"]) == sorted(x for losses in GRID_2X2.values() for x in losses)
    assert set(frame["seed"].astype(str)) == {"1", "2", "3"}


def test_unfinished_runs_are_listed_with_reasons(sweep_2x2):
    md = (sweep_2x2 / "report.md").read_text()
    rows = {r["run"].strip("`"): r for r in md_table(md, "## Failed and unfinished runs")}
    failed = rows["lora.r=8,optim.lr=1e-4,seed=3"]
    assert failed["status"] == "failed"
    assert failed["reason"] == f"ValueError: loss is nan {ESCAPED}"
    assert rows["lora.r=16,optim.lr=3e-4,seed=3"]["status"] == "running"
    assert rows["lora.r=16,optim.lr=3e-4,seed=3"]["progress"].startswith("step ")
    assert rows["lora.r=16,optim.lr=1e-4,seed=3"]["status"] == "not started"


def test_reproducibility_lists_every_command_and_hash(sweep_2x2):
    md = (sweep_2x2 / "report.md").read_text()
    commands = md.split("### Commands", 1)[1]
    for run_dir in sorted(p for p in sweep_2x2.iterdir() if p.is_dir() and p.name != "plots"):
        if (run_dir / "manifest.json").exists():
            manifest = __import__("json").loads((run_dir / "manifest.json").read_text())
            assert manifest["command"] in commands
            assert f"config_hash {manifest['config_hash']}" in commands
    # The cell that never started has no manifest; its overrides still give a command.
    assert "python -m ftsweep lora.r=16 optim.lr=1e-4 seed=3" in commands
    assert "| transformers | `5.23.0` |" in md
    assert "confounder" not in outside_code(md.split("## Reproducibility", 1)[1]).replace(
        "is a confounder", ""
    )


def test_rebuilding_gives_identical_files(sweep_2x2, tmp_path):
    # The sweep copied elsewhere and rebuilt: same bytes, so nothing depends on the clock,
    # on absolute paths or on the order files come from the disk.
    copy = tmp_path / "copied"
    shutil.copytree(sweep_2x2, copy)
    build_report([copy])
    for name in ("report.md", "runs.csv", "plots/effects.png", "plots/interactions.png", "plots/heatmap.png",
                 "plots/loss_curves.png"):
        assert (copy / name).read_bytes() == (sweep_2x2 / name).read_bytes(), name


# ------------------------------------------------------------------ escaping


def test_html_escapes_every_string_from_configs_and_data(tmp_path):
    sweep = tmp_path / "sweep"
    write_sweep_json(sweep, f"id-{SCRIPT}", f"python -m ftsweep -m data.system=plain,'{SCRIPT}'", {"data.system": ["plain", SCRIPT]})
    write_run(sweep, ["data.system=plain"], name="a", eval_loss=3.0)
    write_run(sweep, [f"data.system='{SCRIPT}'"], name="b", eval_loss=3.2)
    write_run(
        sweep,
        ["data.system=plain", "lora.r=4"],
        name="c",
        status="failed",
        error={"type": f"Err{SCRIPT}", "message": f"{SCRIPT} & <b>bold</b>"},
    )
    build_report([sweep])
    html = (sweep / "report.html").read_text()
    assert SCRIPT not in html and "<b>bold</b>" not in html
    assert ESCAPED in html
    assert "&lt;b&gt;bold&lt;/b&gt;" in html
    assert re.findall(r"<script", html, flags=re.I) == []
    assert 'src="data:image/png;base64,' in html
    # report.md: outside code it shows entities; GitHub renders them as text.
    md = (sweep / "report.md").read_text()
    assert SCRIPT not in outside_code(md)
    assert ESCAPED in md


# ---------------------------------------------------------------- robustness


def test_damaged_run_directories_are_reported_not_fatal(tmp_path):
    sweep = tmp_path / "sweep"
    good = write_run(sweep, ["lora.r=8"], eval_loss=3.0)
    with open(good / "metrics.jsonl", "a") as fh:
        fh.write('{"split": "train", "step": 9999, "loss": \n')  # cut by a kill
        fh.write("not json at all\n")
    write_run(sweep, ["lora.r=16"], eval_loss=3.1, write_summary=False)
    bad_summary = write_run(sweep, ["lora.r=32"], eval_loss=3.2)
    (bad_summary / "summary.json").write_text('{"status": "ok", "eval_lo')
    no_metrics = write_run(sweep, ["lora.r=64"], eval_loss=2.9)
    (no_metrics / "metrics.jsonl").unlink()
    write_run(sweep, ["lora.r=128"], hydra_only=True)
    (sweep / "lora.r=128" / ".hydra" / "overrides.yaml").write_text("[unclosed")

    build_report([sweep])
    md = (sweep / "report.md").read_text()
    problems = md.split("## Problems reading the run directories", 1)[1]
    assert "metrics.jsonl: skipped 2 unreadable line(s) (line 19, 20)" in problems
    assert "summary.json missing: status unknown" in problems
    assert "summary.json unreadable" in problems
    assert "overrides.yaml unreadable" in problems
    rows = md_table(md, "## Runs")
    assert rows[0]["lora.r"] == "`64`" and rows[0]["rank"] == "**★ 1**"  # no metrics.jsonl, summary fine
    assert {r["status"] for r in rows} >= {"ok", "unknown"}


def test_a_single_run_directory_is_a_sweep_of_one(tmp_path):
    run = write_run(tmp_path / "outputs" / "2026-11-22", ["optim.lr=1e-4"], name="14-03-11", eval_loss=3.3, sweep_id=None)
    path = build_report([run])
    assert path == run / "report.md"
    md = path.read_text()
    assert "**1 run** in 1 configuration: 1 ok." in md
    assert "No parameter differs between the runs apart from the seed." in md
    assert "## Effects" not in md
    assert (run / "plots" / "loss_curves.png").exists()


# ----------------------------------------------------------- several sweeps


def test_two_sweeps_compare_with_a_sweep_column(tmp_path):
    lora, dora = tmp_path / "lora", tmp_path / "dora"
    write_sweep_json(lora, "lora-sweep", "python -m ftsweep -m lora.r=8,16", {"lora.r": ["8", "16"]})
    write_sweep_json(dora, "dora-sweep", "python -m ftsweep -m lora=dora lora.r=8,16", {"lora.r": ["8", "16"]})
    for r, loss in (("8", 3.4), ("16", 3.3)):
        write_run(lora, [f"lora.r={r}"], eval_loss=loss)
        write_run(dora, ["lora=dora", f"lora.r={r}"], eval_loss=loss - 0.1)
    path = build_report([lora, dora])
    assert path == lora / "compare" / "report.md"  # the LoRA sweep's own report is untouched
    assert not (lora / "report.md").exists()
    md = path.read_text()
    rows = md_table(md, "## Runs")
    assert [(r["sweep"], r["lora"], r["lora.r"]) for r in rows] == [
        ("dora-sweep", "`dora`", "`16`"),
        ("dora-sweep", "`dora`", "`8`"),
        ("lora-sweep", "`lora`", "`16`"),
        ("lora-sweep", "`lora`", "`8`"),
    ]
    effects = {r["parameter"] for r in md_table(md, "## Effects")}
    assert effects == {"`lora`", "`lora.r`"}  # `lora` (from the configs) tells the sweeps apart

    # Identical grids in two sweeps (say, two commits): only the sweep tells them apart.
    again = tmp_path / "again"
    write_sweep_json(again, "again", "python -m ftsweep -m lora.r=8,16", {"lora.r": ["8", "16"]})
    for r, loss in (("8", 3.6), ("16", 3.5)):
        write_run(again, [f"lora.r={r}"], eval_loss=loss, packages=PACKAGES | {"transformers": "5.22.0"})
    md = build_report([lora, again], out_dir=tmp_path / "out").read_text()
    effects = md_table(md, "## Effects")
    assert [(r["parameter"], r["level"]) for r in effects][:2] == [("`sweep`", "`lora-sweep`"), ("`sweep`", "`again`")]
    assert effects[0]["eval_loss mean"] == f"{mean([3.4, 3.3]):.4f}"
    assert "transformers differs: 5.22.0 in 2 runs, 5.23.0 in 2 runs" in md


def test_package_differences_are_flagged_as_confounders(tmp_path):
    sweep = tmp_path / "sweep"
    for r, version in (("8", "5.23.0"), ("16", "5.23.0"), ("32", "5.22.0"), ("64", "5.23.0")):
        write_run(sweep, [f"lora.r={r}"], packages=PACKAGES | {"transformers": version})
    md = build_report([sweep]).read_text()
    assert "**Confounder:** transformers differs: 5.23.0 in 3 runs, 5.22.0 in 1 run" in md
    assert "| torch | `2.13.0` |" in md


# ------------------------------------------------- metrics, levels and views


def test_task_metric_is_maximized_unless_told_otherwise(tmp_path):
    sweep = tmp_path / "sweep"
    for r, em in (("8", 0.25), ("16", 0.5), ("32", 0.375)):
        write_run(sweep, [f"lora.r={r}"], task_metrics={"exact_match": em, "rougeL": em + 0.1})
    md = build_report([sweep], metric="exact_match").read_text()
    assert "higher is better (from its name)" in md
    rows = md_table(md, "## Runs")
    assert [r["lora.r"] for r in rows] == ["`16`", "`32`", "`8`"]
    assert rows[0]["exact_match ↑"] == "**0.5000**"
    assert rows[0]["rougeL"] == "0.6000"


def test_the_best_configurations_test_loss_is_quoted_unless_the_test_set_chose_it(tmp_path):
    sweep = tmp_path / "sweep"
    # The best by held-out loss (r=16) is not the best on the test file (r=8): the line quotes the chosen one's.
    for r, loss, test in (("8", 3.4, 3.30), ("16", 3.2, 3.35)):
        write_run(sweep, [f"lora.r={r}"], eval_loss=loss, summary={"test_loss": test, "test_perplexity": math.exp(test)})
    md = build_report([sweep]).read_text()
    assert "On the test set (`data.test_path`), which chose nothing, the best configuration's loss is 3.3500 (n=1)." in md
    assert "Ranked by a test-set figure" not in md
    md = build_report([sweep], metric="test_loss").read_text()
    assert "On the test set" not in md
    assert ("Ranked by a test-set figure: choosing the best on `data.test_path` makes it a second validation set, and "
            "the best's `test_loss` then flatters it. Rank by `eval_loss` (the default) and read the test figures "
            "beside it.") in md


def test_levels_compare_as_numbers_and_sort_numerically(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep, ["lora.r=8", "optim.lr=1e-4"], name="a", eval_loss=3.0)
    write_run(sweep, ["lora.r=32", "optim.lr=0.0001"], name="b", eval_loss=3.1)  # the same lr
    write_run(sweep, ["lora.r=16"], name="c", eval_loss=3.2)  # lr from its config: 0.0002
    md = build_report([sweep]).read_text()
    effects = md_table(md, "## Effects")
    assert [(r["parameter"], r["level"]) for r in effects] == [
        ("`lora.r`", "`8`"),
        ("`lora.r`", "`16`"),
        ("`lora.r`", "`32`"),
        ("`optim.lr`", "`1e-4`"),
        ("`optim.lr`", "`0.0002`"),
    ]
    assert effects[3]["n"] == "2"


def test_data_size_curve_and_no_heatmap_for_three_factors(tmp_path):
    sweep = tmp_path / "sweep"
    for n in ("100", "1000"):
        for r in ("8", "16"):
            for lr in ("1e-4", "3e-4"):
                write_run(sweep, [f"data.n={n}", f"lora.r={r}", f"optim.lr={lr}"], eval_loss=3.0 - len(n) * 0.1)
    md = build_report([sweep]).read_text()
    assert "](plots/data_size.png)" in md and (sweep / "plots" / "data_size.png").exists()
    assert "heatmap" not in md and not (sweep / "plots" / "heatmap.png").exists()


def test_runs_of_different_training_lengths_are_said_to_be_so_with_the_parameter_that_sets_it(tmp_path):
    """A data.n sweep at one epoch: the larger sets also trained longer, so the report says so and names data.n.
    Runs of equal length (a lora.r sweep) get no such line; a micro-batch sweep at fixed steps differs in tokens."""
    sweep = tmp_path / "sweep"
    for n, steps in (("100", 13), ("800", 100)):
        for r in ("8", "16"):
            write_run(sweep, [f"data.n={n}", f"lora.r={r}"], summary={"steps": steps, "tokens_seen": steps * 570})
    md = build_report([sweep]).read_text()
    (line,) = [ln for ln in md.splitlines() if "trained for different lengths" in ln]
    assert "(13 to 100 optimizer steps, 7.4 k to 57.0 k tokens); `data.n` sets it" in line, line
    assert "`optim.max_steps`" in line

    equal = tmp_path / "equal"
    for r in ("8", "16"):
        write_run(equal, [f"lora.r={r}"], summary={"steps": 100, "tokens_seen": 57000 + int(r)})
    assert "different lengths" not in build_report([equal]).read_text()

    batch = tmp_path / "batch"
    for micro in ("4", "8"):
        write_run(batch, [f"optim.micro_batch_size={micro}"], summary={"steps": 100, "tokens_seen": 7000 * int(micro)})
    (line,) = [ln for ln in build_report([batch]).read_text().splitlines() if "different lengths" in ln]
    assert "(100 optimizer steps each, 28.0 k to 56.0 k tokens); `optim.micro_batch_size` sets it" in line, line
    assert "equal tokens seen." in line and "max_steps" not in line


def test_runs_that_scored_other_held_out_tokens_are_said_to_compare_only_roughly(tmp_path):
    """A data.max_length sweep scores the same held-out records as other tokens in each cell (manifest
    held_out_fingerprint): the overview says so, names the parameter and the generation metric that compares."""
    sweep = tmp_path / "sweep"
    for length in ("64", "128"):
        for r in ("8", "16"):
            write_run(sweep, [f"data.max_length={length}", f"lora.r={r}"], task_metrics={"rougeL": 0.5, "exact_match": 0.1},
                      manifest={"held_out_fingerprint": f"tokens-at-{length}"})
    md = build_report([sweep]).read_text()
    (line,) = [ln for ln in md.splitlines() if "different tokens" in ln]
    assert "(`data.max_length` sets them): eval_loss averages over other tokens" in line, line
    assert "`--metric rougeL`" in line
    assert "| held-out tokens |" in md and "confounder" in md.split("| held-out tokens |")[1].splitlines()[0]
    # Ranked by a test-set metric or a generation metric, the held-out tokens do not matter; equal tokens give no line.
    assert "different tokens" not in build_report([sweep], metric="test_loss").read_text()
    assert "different tokens" not in build_report([sweep], metric="rougeL").read_text()
    assert "different tokens" in build_report([sweep], metric="perplexity").read_text()
    same = tmp_path / "same"
    for r in ("8", "16"):
        write_run(same, [f"lora.r={r}"], manifest={"held_out_fingerprint": "one"})
    md = build_report([same]).read_text()
    assert "different tokens" not in md and "| held-out tokens | `one` |" in md


def test_a_sweep_run_again_into_its_directory_started_with_its_first_invocation(tmp_path):
    """The second invocation skipped every cell in a second; the table still says when the sweep began."""
    sweep = tmp_path / "sweep"
    write_run(sweep, ["lora.r=8"])
    write_sweep_json(sweep, "2026-11-22_14-03-11", "python -m ftsweep -m lora.r=8", {"lora.r": ["8"]},
                     started_at="2026-11-23T09:00:00Z", finished_at="2026-11-23T09:00:01Z",
                     previous_invocations=[{"command": "python -m ftsweep -m lora.r=8", "started_at": "2026-11-22T14:03:11Z",
                                            "finished_at": "2026-11-22T14:06:40Z", "counts": {"total": 1, "ok": 1}}])
    (row,) = md_table(build_report([sweep]).read_text(), "# Ablation report")  # the first table: the sweeps
    assert row["started"] == "2026-11-22T14:03:11Z (the first of 2 invocations)" and row["finished"] == "2026-11-23T09:00:01Z"
    assert row["command"] == "`python -m ftsweep -m lora.r=8`"  # the same command twice: shown once
    # The best cell repeated with more seeds into the same directory: both commands made runs of the report.
    write_sweep_json(sweep, "2026-11-22_14-03-11", "python -m ftsweep -m lora.r=8 seed=1,2", {"seed": ["1", "2"]},
                     previous_invocations=[{"command": "python -m ftsweep -m lora.r=8,16", "started_at": "2026-11-22T14:03:11Z"}])
    (row,) = md_table(build_report([sweep]).read_text(), "# Ablation report")
    assert row["command"] == "`python -m ftsweep -m lora.r=8,16`, then `python -m ftsweep -m lora.r=8 seed=1,2`"


def test_a_rank_sweep_at_one_alpha_is_said_to_sweep_the_update_scale_too(tmp_path):
    """lora.r=8,16 at lora.alpha=16: alpha/r goes from 2 to 1, part of the rank's effect is a step size. With
    alpha following r, or with rsLoRA's scaling, no such line."""
    fixed = tmp_path / "fixed"
    for r in ("8", "16", "32"):
        write_run(fixed, [f"lora.r={r}"])
    (line,) = [ln for ln in build_report([fixed]).read_text().splitlines() if "update scale" in ln]
    assert "`lora.alpha` stayed 16 while `lora.r` went from 8 to 32, so the update scale alpha/r went from 2 to 0.5" in line
    assert "`'lora.alpha=${lora.r}'`" in line
    for name, extra in (("following", lambda r: [f"lora.alpha={r}"]), ("rslora", lambda r: ["lora.use_rslora=true"])):
        sweep = tmp_path / name
        for r in ("8", "16"):
            write_run(sweep, [f"lora.r={r}", *extra(r)])
        assert "update scale" not in build_report([sweep]).read_text(), name


def test_rslora_beside_other_variants_is_said_to_scale_its_update_by_another_formula(tmp_path):
    """lora=lora,dora,rslora at r=8, alpha 16: rsLoRA's scale is 16/sqrt(8) = 5.66, the others' 16/8 = 2. On the
    built-in data rsLoRA won by 0.42 at lr 3e-4, and LoRA at 2.83 x that lr beat it: a step size, not a variant."""
    sweep = tmp_path / "variants"
    for variant, loss in (("lora", 4.74), ("dora", 4.72), ("rslora", 4.33)):
        write_run(sweep, [f"lora={variant}"], eval_loss=loss)
    (line,) = [ln for ln in build_report([sweep]).read_text().splitlines() if "alpha/√r" in ln]
    assert ("At the same `lora.r` and `lora.alpha`, rsLoRA scales its update by alpha/√r (5.66 at r=8, alpha 16) and "
            "the other variants by alpha/r (2)") in line
    assert line.endswith("Sweep `optim.lr` with the variants and compare each at its best learning rate.")
    with_lr = tmp_path / "with_lr"
    for variant in ("lora", "rslora"):
        for lr in ("3e-4", "1e-3"):
            write_run(with_lr, [f"lora={variant}", f"optim.lr={lr}"])
    assert "`optim.lr` is swept too: compare each variant at its best learning rate" in build_report([with_lr]).read_text()
    # rsLoRA at two ranks, or beside LoRA at another rank only: no pair at one rank and alpha, no line.
    apart = tmp_path / "apart"
    write_run(apart, ["lora=rslora", "lora.r=16"])
    write_run(apart, ["lora=lora", "lora.r=8"])
    assert "alpha/√r" not in build_report([apart]).read_text()


def test_a_failed_cell_does_not_turn_a_parameters_effect_around(tmp_path):
    """2 x 2 grid, (r=16, lr=3e-4) failed. lr 3e-4 beat 1e-4 where both ran (r=8: 2.8 against 3.0); pooled over
    what exists, 1e-4's mean took in r=16's 2.0 and read 2.5 against 2.8, the wrong way round."""
    sweep = tmp_path / "sweep"
    for (r, lr), loss in {("8", "1e-4"): 3.0, ("8", "3e-4"): 2.8, ("16", "1e-4"): 2.0}.items():
        write_run(sweep, [f"lora.r={r}", f"optim.lr={lr}"], eval_loss=loss)
    write_run(sweep, ["lora.r=16", "optim.lr=3e-4"], status="failed", error={"type": "OutOfMemoryError", "message": "oom"})
    md = build_report([sweep]).read_text()
    effects = md_table(md, "## Effects")
    assert [(row["parameter"], row["level"], row["eval_loss mean"], row["n"]) for row in effects] == [
        ("`lora.r`", "`8`", "3.0000", "1"), ("`lora.r`", "`16`", "2.0000", "1"),
        ("`optim.lr`", "`1e-4`", "3.0000", "1"), ("`optim.lr`", "`3e-4`", "2.8000", "1")]
    assert ("- `optim.lr`: its means leave out `lora.r=16, optim.lr=1e-4`, where no other level of `optim.lr` finished at "
            "the same settings of the other parameters.") in md

    # Nowhere did both levels of a parameter run at one setting of the other: the means are said not to compare.
    diagonal = tmp_path / "diagonal"
    write_run(diagonal, ["lora.r=8", "optim.lr=1e-4"], eval_loss=3.0)
    write_run(diagonal, ["lora.r=16", "optim.lr=3e-4"], eval_loss=2.0)
    for r, lr in (("8", "3e-4"), ("16", "1e-4")):
        write_run(diagonal, [f"lora.r={r}", f"optim.lr={lr}"], status="failed", error={"type": "RuntimeError", "message": "x"})
    md = build_report([diagonal]).read_text()
    assert md.count("level means are over different settings and do not compare") == 2


# ----------------------------------------------------------------------- CLI


def test_cli_bad_input_is_one_line_and_exit_code_2(tmp_path, capsys):
    not_a_dir = tmp_path / "file.txt"
    not_a_dir.write_text("x")
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv, words in (
        ([str(tmp_path / "missing")], "no such directory"),
        ([str(not_a_dir)], "not a directory"),
        ([str(empty)], "no run directories found"),
    ):
        assert report_cli(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err and "pass" in err


def test_cli_rejects_a_metric_no_run_reports(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_run(sweep, ["lora.r=8"])
    assert report_cli([str(sweep), "--metric", "acuracy"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "eval_loss" in err
    assert not (sweep / "report.md").exists()


def test_cli_writes_to_out_and_prints_the_path(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    write_run(sweep, ["lora.r=8"], task_metrics={"accuracy": 0.5})
    write_run(sweep, ["lora.r=16"], task_metrics={"accuracy": 0.75})
    assert report_cli([str(sweep), "--out", str(tmp_path / "out"), "--metric", "accuracy", "--minimize"]) == 0
    path = Path(capsys.readouterr().out.strip())
    assert path == tmp_path / "out" / "report.md"
    md = path.read_text()
    assert [r["lora.r"] for r in md_table(md, "## Runs")] == ["`8`", "`16`"]
    assert "Primary metric: `accuracy`, lower is better (as asked)." in md
    assert (tmp_path / "out" / "runs.csv").exists() and (tmp_path / "out" / "report.html").exists()


def test_import_and_build_never_load_torch(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep, ["lora.r=8"])
    code = (
        "import sys\n"
        "from ftsweep.report import build_report\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'pandas', 'matplotlib') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        f"build_report([{str(sweep)!r}])\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'bitsandbytes') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (sweep / "report.md").exists()


# ------------------------------------------------ baseline, intervals, noise


def test_baseline_and_improvement_columns(sweep_2x2):
    rows = md_table((sweep_2x2 / "report.md").read_text(), "## Runs")
    best = rows[0]  # r=16, lr=3e-4: 3.10 and 3.30 against a baseline of 5.5 (fixtures_report.write_run)
    assert best["baseline eval loss"] == "5.5000"
    assert best["improvement"] == f"{mean([5.5 - 3.1, 5.5 - 3.3]):.4f} ± {std([5.5 - 3.1, 5.5 - 3.3]):.4f}"
    assert best["improvement %"].startswith(f"{100 * mean([2.4, 2.2]) / 5.5:.1f} ± ")
    md = (sweep_2x2 / "report.md").read_text()
    assert "from 5.5000 before training to 3.2000 for the best configuration: 2.3000 (41.8 %) less." in md


def test_a_best_configuration_worse_than_the_base_model_is_said_to_be(tmp_path):
    # Every cell diverged: the best ends above its baseline of 5.5. The line said "lowered ... -0.7000 (-12.7 %) less".
    sweep = tmp_path / "sweep"
    for lr, loss in (("1e-2", 6.2), ("3e-2", 7.9)):
        write_run(sweep, [f"optim.lr={lr}"], eval_loss=loss)
    md = build_report([sweep]).read_text()
    assert ("Training raised the held-out loss from 5.5000 before training to 6.2000 for the best configuration: "
            "0.7000 (12.7 %) more. The best configuration is worse than the base model before training") in md
    assert "lowered" not in md


def test_runs_whose_held_out_examples_were_also_trained_on_are_pointed_out(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep, ["lora.r=8"], eval_loss=3.4, summary={"held_out_in_train": 19})
    write_run(sweep, ["lora.r=16"], eval_loss=3.2, summary={"held_out_in_train": 0})
    md = build_report([sweep]).read_text()
    assert ("1 of the ok runs held out examples that were also training examples, token for token (up to 19; "
            "`held_out_in_train` in summary.json)") in md
    write_run(sweep, ["lora.r=8"], eval_loss=3.4, summary={"held_out_in_train": 0, "tested_in_train": 2})
    md = build_report([sweep]).read_text()
    assert "held out examples" not in md
    assert "1 of the ok runs tested on examples that were also training examples, token for token (up to 2" in md


def test_differences_are_weighed_against_the_held_out_samples_noise(tmp_path):
    """Every run keeps its held-out loss per example; the report pairs the best with the second, and each level with
    the best one, over those examples (the arithmetic is in tests/unit/test_report_statistics.py)."""
    sweep = tmp_path / "sweep"
    tokens = [10, 20, 10, 20]  # 60 tokens
    base = [30.0, 60.0, 30.0, 60.0]  # 180 / 60 = 3.0
    # r=8 is 0.5 lower on every token of every example; r=16 and r=32 differ by +-1 nat on alternate examples.
    write_run(sweep, ["lora.r=8"], eval_loss=2.5, held_out=([x - 0.5 * t for x, t in zip(base, tokens)], tokens))
    write_run(sweep, ["lora.r=16"], eval_loss=3.0, held_out=(base, tokens))
    write_run(sweep, ["lora.r=32"], eval_loss=3.0 + 2 / 60, held_out=([31.0, 61.0, 31.0, 59.0], tokens))
    md = build_report([sweep]).read_text()
    assert ("Against the next, `lora.r=16`, the best is 0.5000 lower (95 % interval 0.5000 to 0.5000, paired over "
            "the 4 held-out examples): more than another sample of as many held-out examples would explain. Each has "
            "one ok run, and another seed trains another adapter; repeat them with `seed=1,2,3` to weigh the difference "
            "against that too.") in md
    bullets = [line for line in md.splitlines() if line.startswith("- `lora.r`: ")]
    assert bullets[0] == "- `lora.r`: 8 beats 16 by 0.5000 (0.5000 to 0.5000): more than the sample's noise."
    assert bullets[1].startswith("- `lora.r`: 8 beats 32 by 0.5333 (") and bullets[1].endswith("more than the sample's noise.")
    # 16 against 32 alone: D = 2 / 60 = 0.0333; d - D t = (0.667, 0.333, 0.667, -2.667): within the noise.
    write_run(sweep, ["lora.r=8"], status="failed", error={"type": "X", "message": "x"})
    md = build_report([sweep]).read_text()
    assert ("Against the next, `lora.r=32`, the best is 0.0333 lower (95 % interval -0.") in md
    assert "within what another sample of 4 held-out examples could give, so this held-out set does not tell" in md
    assert "Each has one ok run" not in md  # a difference within the sample's noise is no verdict to qualify
    # A run without the file (one from before it existed): no paired statement at all.
    (sweep / "lora.r=32" / "held_out_losses.json").unlink()
    md = build_report([sweep]).read_text()
    assert "paired over" not in md and "noise of the held-out sample" not in md


def test_with_repeated_seeds_the_best_against_the_next_is_also_weighed_against_the_seeds_noise(tmp_path):
    """The held-out examples cannot show what another seed does: r=8 beats r=16 on every example of every seed,
    yet the seeds of one configuration spread more than the two configurations differ."""
    sweep = tmp_path / "sweep"
    tokens = [10, 20, 10, 20]  # 60 tokens
    for seed, (r8, r16) in enumerate([(2.6, 2.7), (2.9, 3.0), (3.2, 3.3)], 1):  # each seed: r=8 0.1 lower everywhere
        for r, loss in (("8", r8), ("16", r16)):
            write_run(sweep, [f"lora.r={r}", f"seed={seed}"], eval_loss=loss,
                      held_out=([loss * t for t in tokens], tokens))
    md = build_report([sweep]).read_text()
    # Seeds: deviations -0.3, 0, +0.3 in each configuration: s = sqrt(0.36 / 4) = 0.3 (6 runs - 2 configurations).
    # Difference 0.1 +- t(4) x 0.3 x sqrt(1/3 + 1/3) = 2.776 x 0.3 x 0.8165 = 0.680.
    half = 2.776 * 0.3 * math.sqrt(2 / 3)
    assert ("Against the next, `lora.r=16`, the best is 0.1000 lower (95 % interval 0.1000 to 0.1000, paired over the "
            "4 held-out examples): more than another sample of as many held-out examples would explain. Between seeds: "
            "the best's mean over 3 seeds is 0.1000 lower than the next's over 3, and with the spread between seeds of "
            f"one configuration (s = 0.3000, 4 degrees of freedom) that difference's 95 % interval is {0.1 - half:.4f} "
            f"to {0.1 + half:.4f}: within the seeds' noise, so other seeds could reverse the order.") in md
    assert f"`lora.r`: 8 and 16 are within noise (difference 0.1000, 95 % interval {0.1 - half:.4f}" in md


def test_crossing_lines_are_said_in_words_with_the_best_level_at_each_level_of_the_other(tmp_path):
    sweep = tmp_path / "sweep"
    for (r, lr), loss in {("8", "1e-4"): 3.0, ("8", "3e-4"): 3.2, ("16", "1e-4"): 3.3, ("16", "3e-4"): 2.9}.items():
        write_run(sweep, [f"lora.r={r}", f"optim.lr={lr}"], eval_loss=loss)
    md = build_report([sweep]).read_text()
    assert ("- The best `lora.r` depends on `optim.lr`: 8 at `optim.lr=1e-4` (by 0.3000 over 16); 16 at "
            "`optim.lr=3e-4` (by 0.3000 over 8).") in md
    assert ("- The best `optim.lr` depends on `lora.r`: 1e-4 at `lora.r=8` (by 0.2000 over 3e-4); 3e-4 at "
            "`lora.r=16` (by 0.4000 over 1e-4).") in md
    assert "Each configuration ran one seed: a reversal by less than the seeds' spread is noise" in md
    # Lines that keep their order (r=16 better at both rates, 1e-4 at both ranks): nothing to say.
    write_run(sweep, ["lora.r=16", "optim.lr=1e-4"], eval_loss=2.8)
    md = build_report([sweep]).read_text()
    assert "` depends on `" not in md and "Where lines cross" not in md


def test_a_difference_below_the_tables_digits_is_printed_with_its_own(tmp_path):
    """data.packing=true,false on the built-in data differ by 0.000025 nats: '0.0000 lower (-0.0000 to 0.0000)'
    said nothing a reader could check."""
    sweep = tmp_path / "sweep"
    tokens = [10, 20, 10, 20]
    base = [30.0, 60.0, 30.0, 60.0]
    write_run(sweep, ["data.packing=true"], eval_loss=3.0, held_out=(base, tokens))
    write_run(sweep, ["data.packing=false"], eval_loss=3.00003, held_out=([x + 0.00003 * t for x, t in zip(base, tokens)], tokens))
    md = build_report([sweep]).read_text()
    assert ("Against the next, `data.packing=false`, the best is 0.000030 lower (95 % interval 0.000030 to 0.000030, "
            "paired over the 4 held-out examples)") in md


def test_crossings_with_repeated_seeds_say_whether_each_is_beyond_the_seeds_noise(tmp_path):
    # Two seeds a cell, 0.02 apart: s = 0.0141 (4 df), a difference's half-width t(4) x s = 0.039.
    def sweep_of(name, cells):
        sweep = tmp_path / name
        for (r, lr), loss in cells.items():
            for seed in (1, 2):
                write_run(sweep, [f"lora.r={r}", f"optim.lr={lr}", f"seed={seed}"], eval_loss=loss + 0.02 * (seed - 1))
        return build_report([sweep]).read_text()

    md = sweep_of("apart", {("8", "1e-4"): 3.0, ("16", "1e-4"): 3.3, ("8", "3e-4"): 3.2, ("16", "3e-4"): 2.9})
    assert ("- The best `lora.r` depends on `optim.lr`: 8 at `optim.lr=1e-4` (by 0.3000 over 16, more than the seeds' "
            "noise); 16 at `optim.lr=3e-4` (by 0.3000 over 8, more than the seeds' noise).") in md
    assert "Where lines cross, a parameter's best level changes with another's" in md and "ran one seed" not in md
    md = sweep_of("close", {("8", "1e-4"): 3.0, ("16", "1e-4"): 3.01, ("8", "3e-4"): 3.01, ("16", "3e-4"): 3.0})
    assert "(by 0.0100 over 16, within the seeds' noise)" in md
    assert "The lines cross, but every crossing is within the seeds' noise: which level is best may not change" in md


def test_one_configuration_over_seeds_says_what_difference_its_spread_would_let_stand_out(tmp_path):
    """docs/sweeps.md's `-m lora.r=8 seed=1,2,3`: no best to name, but the seeds' spread tells how large a
    difference a comparison with as many seeds could tell from noise."""
    sweep = tmp_path / "sweep"
    for seed, loss in ((1, 2.6), (2, 2.9), (3, 3.2)):
        write_run(sweep, ["lora.r=8", f"seed={seed}"], eval_loss=loss)
    md = build_report([sweep]).read_text()
    assert "- One configuration: eval_loss 2.9000 ± 0.3000 (n=3)." in md and "Best:" not in md
    # s = 0.3 (2 df); two configurations of 3 seeds would pool 4: 2.776 x 0.3 x sqrt(2/3) = 0.680.
    assert ("- Between its seeds, s = 0.3000 (2 degrees of freedom): of two configurations run with 3 seeds each, a "
            f"measured difference of about {2.776 * 0.3 * math.sqrt(2 / 3):.4f} or more (t(0.975, 4) · s · √(2/3)) "
            "would stand out from the seeds' noise") in md
    one = tmp_path / "one"
    write_run(one, ["lora.r=8"], eval_loss=2.6)
    md = build_report([one]).read_text()
    assert "- One configuration: eval_loss 2.6000 (n=1)." in md and "Between its seeds" not in md


def test_an_edge_whose_lead_is_within_the_seeds_noise_says_so(tmp_path):
    def report(name, r16):
        sweep = tmp_path / name
        for seed in (1, 2):
            write_run(sweep, ["lora.r=8", f"seed={seed}"], eval_loss=3.0 + 0.02 * (seed - 1))
            write_run(sweep, ["lora.r=16", f"seed={seed}"], eval_loss=r16 + 0.02 * (seed - 1))
        return build_report([sweep]).read_text()

    # s = 0.0141 (2 df): r=8 ahead by 0.01 is within the seeds' noise (+-0.061), by 0.3 it is not.
    assert ("- The best `lora.r`, 8, is the smallest tried (though its lead over 16 is within the seeds' noise): the "
            "best setting may lie beyond the range") in report("close", 3.01)
    md = report("apart", 3.3)
    assert "- The best `lora.r`, 8, is the smallest tried: the best setting may lie" in md and "its lead" not in md
    # Three ranks: 8 leads 16 by noise and 32 clearly. The doubt is about its neighbour, whatever the far level says.
    sweep = tmp_path / "three"
    for seed in (1, 2):
        for r, loss in (("8", 3.0), ("16", 3.01), ("32", 3.5)):
            write_run(sweep, [f"lora.r={r}", f"seed={seed}"], eval_loss=loss + 0.02 * (seed - 1))
    assert "is the smallest tried (though its lead over 16 is within the seeds' noise)" in build_report([sweep]).read_text()


def test_runs_that_ended_above_their_lowest_held_out_loss_are_said_to_have_got_worse(tmp_path):
    sweep = tmp_path / "sweep"
    write_run(sweep, ["optim.lr=1e-3"], eval_loss=3.9, summary={"best_eval_loss": 3.6, "best_step": 100})
    write_run(sweep, ["optim.lr=3e-4"], eval_loss=3.7, summary={"best_eval_loss": 3.69, "best_step": 100})  # 0.3 %
    md = build_report([sweep]).read_text()
    assert ("1 of the ok runs ended with a held-out loss more than 1% above their lowest (`optim.lr=1e-3`: 3.9000 at "
            "the end against 3.6000 at step 100): they got worse after that point, and their adapter is the last "
            "step's, as ranked here. Fewer steps (`optim.max_steps=100`) or a lower learning rate keep the better one.") in md
    write_run(sweep, ["optim.lr=1e-3"], eval_loss=3.63, summary={"best_eval_loss": 3.6, "best_step": 100})  # 0.8 %
    assert "above their lowest" not in build_report([sweep]).read_text()


def test_unequal_seed_counts_are_said_to_change_the_intervals_formula(tmp_path):
    sweep = tmp_path / "sweep"
    for r, seeds in (("8", "123"), ("16", "12")):
        for seed in seeds:
            write_run(sweep, [f"lora.r={r}", f"seed={seed}"], eval_loss=3.0 + int(seed) / 100 + (r == "16") / 10)
    md = build_report([sweep]).read_text()
    assert "configurations ran different numbers of seeds, ± t · s · √(Σ 1/n_j) / k" in md
    (sweep / "lora.r=8,seed=3" / "summary.json").unlink()  # now 2 seeds each: the plain formula alone
    md = build_report([sweep]).read_text()
    assert "(pooled sample std, 2 degrees of freedom)." in md and "n_j" not in md


def test_a_best_level_at_an_end_of_the_range_says_what_to_add(tmp_path):
    # The demo's grid: r=8 (the smallest) and lr 3e-4 (the largest) won; lr 1e-3 trained to 4.21 against 4.74.
    sweep = tmp_path / "sweep"
    for (r, lr), loss in {("8", "1e-4"): 5.05, ("8", "3e-4"): 4.74, ("16", "1e-4"): 5.09, ("16", "3e-4"): 4.80}.items():
        write_run(sweep, [f"lora.r={r}", f"optim.lr={lr}"], eval_loss=loss)
    md = build_report([sweep]).read_text()
    assert ("- The best `lora.r`, 8, is the smallest tried, and the best `optim.lr`, 3e-4, is the largest tried: the "
            "best setting may lie beyond the range, which a wider sweep tells (e.g. add `lora.r=4`, `optim.lr=0.0009`).") in md
    write_run(sweep, ["lora.r=4", "optim.lr=3e-4"], eval_loss=4.9)  # r=4 worse: 8 is inside the range now
    write_run(sweep, ["lora.r=4", "optim.lr=1e-4"], eval_loss=5.2)
    assert "- The best `optim.lr`, 3e-4, is the largest tried: the best setting may lie beyond the range, which a wider " \
           "sweep tells (e.g. add `optim.lr=0.0009`)." in build_report([sweep]).read_text()
    # lr 1e-3 tried and diverged: the next value lies between 3e-4 and 1e-3, not past them.
    write_run(sweep, ["lora.r=8", "optim.lr=1e-3"], status="failed", eval_loss=None)
    assert "- The best `optim.lr`, 3e-4, is the largest that ran ok (every run at 1e-3 failed): the best setting may " \
           "lie between them, which a run there tells (e.g. add `optim.lr=0.00055`)." in build_report([sweep]).read_text()


def test_the_sweeps_closing_lines_say_whether_the_best_beats_the_next_by_more_than_the_samples_noise(tmp_path):
    from ftsweep.sweep.callbacks import ranking

    sweep = tmp_path / "sweep"
    tokens = [10, 20, 10, 20]
    base = [30.0, 60.0, 30.0, 60.0]
    write_run(sweep, ["lora.r=8"], eval_loss=2.5, held_out=([x - 0.5 * t for x, t in zip(base, tokens)], tokens))
    write_run(sweep, ["lora.r=16"], eval_loss=3.0, held_out=(base, tokens))
    lines = ranking(sweep)
    assert lines[-2].startswith("best: lora.r=8 (eval_loss 2.5000)")
    assert lines[-1] == ("  against the next, lora.r=16: 0.5000 better (95 % interval 0.5000 to 0.5000 over 4 held-out "
                         "examples), more than the held-out sample's noise")
    # r=16 alternately 1 nat above and below: 0 better on average, within the noise.
    write_run(sweep, ["lora.r=8"], eval_loss=2.99, held_out=([31.0, 59.0, 31.0, 59.0 - 0.6], tokens))
    assert ranking(sweep)[-1].endswith("over 4 held-out examples), within the held-out sample's noise")
    # The best two cells are one configuration's two seeds: no such line.
    seeds = tmp_path / "seeds"
    write_run(seeds, ["seed=1"], eval_loss=2.5, held_out=(base, tokens))
    write_run(seeds, ["seed=2"], eval_loss=3.0, held_out=(base, tokens))
    assert ranking(seeds)[-1].startswith("best: seed=1")


def test_the_sweeps_closing_lines_give_a_failed_cells_reason_once(tmp_path):
    from ftsweep.sweep.callbacks import ranking

    sweep = tmp_path / "sweep"
    write_run(sweep, ["lora=lora"], eval_loss=3.0)
    write_run(sweep, ["lora=pissa"], status="failed", eval_loss=None,
              error={"type": "ConfigError", "message": "lora=pissa: PiSSA initializes from the full-precision weight; "
                                                       "use quant=none"})
    assert ("  -  failed      lora=pissa: PiSSA initializes from the full-precision weight; use quant=none"
            in ranking(sweep))


def test_with_repeated_seeds_the_sweeps_closing_lines_weigh_the_best_configuration_over_its_seeds(tmp_path):
    from ftsweep.sweep.callbacks import ranking

    sweep = tmp_path / "sweep"
    for seed, (r8, r16) in enumerate([(2.6, 2.7), (2.9, 3.0), (3.2, 3.3)], 1):
        write_run(sweep, ["lora.r=8", f"seed={seed}"], eval_loss=r8)
        write_run(sweep, ["lora.r=16", f"seed={seed}"], eval_loss=r16)
    lines = ranking(sweep)
    assert lines[-3].startswith("best: lora.r=8,seed=1 (eval_loss 2.6000)")
    # s = 0.3 over 4 df; the difference 0.1 +- 2.776 x 0.3 x sqrt(1/3 + 1/3) = 0.68.
    assert lines[-2:] == ["best configuration: lora.r=8 (eval_loss 2.9000, mean of 3 seeds)",
                          "  against the next, lora.r=16 (3.0000, mean of 3): 0.1000 better (95 % interval -0.5800 to "
                          "0.7800 over seeds), within the seeds' noise"]


def test_a_best_equal_to_the_next_on_every_example_is_called_a_tie(tmp_path):
    from ftsweep.sweep.callbacks import ranking

    sweep = tmp_path / "sweep"
    base, tokens = [30.0, 60.0, 30.0, 60.0], [10, 20, 10, 20]
    write_run(sweep, ["lora.r=8"], eval_loss=3.0, held_out=(base, tokens))
    write_run(sweep, ["lora.r=16"], eval_loss=3.0, held_out=(base, tokens))
    md = build_report([sweep]).read_text()
    assert ("the best is equal on every one of the 4 held-out examples: the two are tied, and which of them ranks "
            "first says nothing.") in md
    assert "- `lora.r`: 8 and 16 are equal on every example." in md or "- `lora.r`: 16 and 8 are equal on every example." in md
    assert "smallest tried" not in md and "largest tried" not in md
    assert ranking(sweep)[-1].endswith(": equal on every one of the 4 held-out examples, a tie")


def test_runs_that_gave_one_answer_to_everything_are_pointed_out(tmp_path):
    # The built-in demo at lr 1e-4: 32 of 32 samples "is is is ..." (rougeL 0.13 scored on that text alone).
    sweep = tmp_path / "sweep"
    repeated = {"n": 32, "distinct": 1, "top": "is is is", "top_count": 32, "reference_top_count": 2}
    write_run(sweep, ["optim.lr=1e-4"], eval_loss=5.0, summary={"answer_spread": repeated})
    write_run(sweep, ["optim.lr=3e-4"], eval_loss=4.7, summary={"answer_spread": {**repeated, "distinct": 20, "top_count": 4}})
    md = build_report([sweep]).read_text()
    assert ("1 of the ok runs gave one answer to nearly every held-out example (`optim.lr=1e-4`: "
            "'is is is' for 32 of 32): its task metrics score that answer against every reference, not what each "
            "run learned; always giving the most frequent reference would be right for 2 of 32.") in md
    # The demo at lr 0.5: the lowest held-out loss, and an empty answer to every prompt. Said of the best.
    write_run(sweep, ["optim.lr=0.5"], eval_loss=4.5, summary={"answer_spread": {**repeated, "top": ""}})
    assert ("2 of the ok runs, the best configuration's included, gave one answer to nearly every held-out example "
            "(`optim.lr=0.5`, `optim.lr=1e-4`; `optim.lr=0.5`: an empty answer for 32 of 32)") in build_report([sweep]).read_text()
    (sweep / "optim.lr=0.5" / "summary.json").unlink()
    # A classifier that always says its majority class; a run with as many answers as references, not flagged.
    majority = {"n": 80, "distinct": 1, "top": 0, "top_count": 80, "reference_top_count": 41}
    write_run(sweep, ["optim.lr=1e-4"], eval_loss=5.0, summary={"answer_spread": majority})
    assert "`optim.lr=1e-4`: class 0 for 80 of 80" in build_report([sweep]).read_text()
    labels = {"n": 80, "distinct": 1, "top": 1, "top_count": 78, "reference_top_count": 78}
    write_run(sweep, ["optim.lr=1e-4"], eval_loss=5.0, summary={"answer_spread": labels})
    assert "one answer" not in build_report([sweep]).read_text()


def test_a_sweep_with_adalora_says_its_train_loss_carries_a_regulariser(tmp_path):
    # Measured on the built-in data, half an epoch: AdaLoRA's train loss 7.10 against LoRA's 5.06 at the same
    # held-out loss scale, the difference its orthogonality term.
    sweep = tmp_path / "sweep"
    write_run(sweep, ["lora=lora"], eval_loss=3.4)
    md = build_report([sweep]).read_text()
    assert "orthogonality regulariser" not in md
    write_run(sweep, ["lora=adalora"], eval_loss=3.5)
    assert "AdaLoRA's train loss includes its orthogonality regulariser" in build_report([sweep]).read_text()


def test_intervals_over_seeds_and_which_differences_are_noise(sweep_2x2):
    md = (sweep_2x2 / "report.md").read_text()
    # Pooled seed std from GRID_2X2: squared deviations 0.005 + 0.005 + 0 + 0.02 over 8 - 4 = 4 df.
    s = math.sqrt(0.03 / 4)
    half = 2.776 * s / math.sqrt(4)  # t(0.975, 4); four ok runs per level
    assert f"s = {s:.4f} the spread between seeds of one configuration (pooled sample std, 4 degrees of freedom)" in md
    effects = {(r["parameter"], r["level"]): r for r in md_table(md, "## Effects")}
    assert effects[("`lora.r`", "`8`")]["95 % interval"] == f"{3.5 - half:.4f} to {3.5 + half:.4f}"
    # r: 16 vs 8 differ by 0.15, and their difference's half-width is sqrt(2) x 0.1202 = 0.17: within noise.
    # lr: 3e-4 vs 1e-4 differ by 0.30: not.
    diff = math.sqrt(2) * half
    assert (f"`lora.r`: 16 and 8 are within noise (difference 0.1500, 95 % interval {0.15 - diff:.4f} to "
            f"{0.15 + diff:.4f}, which holds 0).") in md
    assert (f"`optim.lr`: 3e-4 beats 1e-4 by more than the seeds' noise explains (difference 0.3000, 95 % interval "
            f"{0.3 - diff:.4f} to {0.3 + diff:.4f}).") in md
    # The best configuration (16, 3e-4: 3.1 and 3.3) against the next (8, 3e-4: 3.3 and 3.4), two seeds each:
    # 0.15 apart, +- t(4) x s x sqrt(1/2 + 1/2) = 0.2404.
    pair = 2.776 * s
    assert ("Against the next, `lora.r=8, optim.lr=3e-4`, the best's mean over 2 seeds is 0.1500 lower than the next's "
            f"over 2, and with the spread between seeds of one configuration (s = {s:.4f}, 4 degrees of freedom) that "
            f"difference's 95 % interval is {0.15 - pair:.4f} to {0.15 + pair:.4f}: within the seeds' noise, so other "
            "seeds could reverse the order.") in md


def test_without_repeated_seeds_the_report_says_it_cannot_tell_noise(tmp_path):
    sweep = write_2x2(tmp_path / "sweep", seeds=False)
    md = build_report([sweep]).read_text()
    assert "| 95 % interval |" not in md and "within noise" not in md
    assert "cannot be told from seed-to-seed noise" in md


def test_a_command_rebuilt_from_hydras_overrides_gives_the_shell_the_same_words(tmp_path):
    """A run with no manifest (it never started) gets its command from .hydra/overrides.yaml: a value with a space
    or Hydra's own quotes must reach Hydra as one override, as it did the first time."""
    import shlex

    sweep = tmp_path / "sweep"
    write_run(sweep, ["lora.r=8"])
    odd = ["lora.r=4", "data.path=/data/my set.jsonl", "data.system='Be brief, please.'"]
    write_run(sweep, odd, name="odd", hydra_only=True)
    build_report([sweep])
    commands = (sweep / "report.md").read_text().split("### Commands", 1)[1]
    line = next(x for x in commands.splitlines() if x.startswith("python -m ftsweep lora.r=4"))
    assert shlex.split(line) == ["python", "-m", "ftsweep", *odd]


def test_the_closing_lines_survive_runs_the_report_cannot_read_as_a_design(tmp_path, monkeypatch, capsys):
    """The lines over seeds read the runs as the report does; if that fails, the ranking above them and the
    held-out comparison still come, with one line saying what failed."""
    from ftsweep.report import factors
    from ftsweep.sweep.callbacks import ranking

    sweep = tmp_path / "sweep"
    base, tokens = [30.0, 60.0, 30.0, 60.0], [10, 20, 10, 20]
    write_run(sweep, ["lora.r=8"], eval_loss=2.5, held_out=([x - 0.5 * t for x, t in zip(base, tokens)], tokens))
    write_run(sweep, ["lora.r=16"], eval_loss=3.0, held_out=(base, tokens))

    def unreadable(sweeps):
        raise KeyError("levels")

    monkeypatch.setattr(factors, "build_design", unreadable)
    lines = ranking(sweep)
    assert lines[-2].startswith("best: lora.r=8") and lines[-1].startswith("  against the next, lora.r=16: 0.5000 better")
    assert ("ftsweep: the best configuration over seeds could not be worked out: KeyError: 'levels'"
            in capsys.readouterr().err)
