"""Every Hydra sweep form, run for real (two steps a cell): sweep.json is complete and names are clean.

The forms: a glob over a config group's options, range(), choice(), a plain group sweep and
an Optuna search. Each sweep's record must hold its id, the command, the grid with the values
Hydra ran and the swept keys; each cell's directory and the report must show the values as
typed or as the shortest decimal (0.0003, never 0.00030000000000000003), while the manifest's
command still reproduces the exact float Hydra passed.
"""

from __future__ import annotations

import json
import re
import shlex

import pytest
import yaml

pytestmark = pytest.mark.slow

TINY = ["optim.max_steps=2", "eval.num_samples=2", "logger=none", "data.num_records=80", "data.val_size=8",
        "eval.every_n_steps=0", "train.progress=false"]


def run_sweep(cli, sweep, args: list[str]) -> dict:
    proc = cli(["-m", *args, *TINY, f"hydra.sweep.dir={sweep}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((sweep / "sweep.json").read_text())
    assert record["id"] and record["finished_at"]
    assert record["command"].startswith("python -m ftsweep -m ")
    assert (sweep / "report.md").read_text().startswith(f"# Ablation report: {record['id']}\n")
    return record


def cells(sweep) -> list[str]:
    return sorted(p.name for p in sweep.iterdir() if (p / "summary.json").exists())


def statuses(sweep) -> set[str]:
    return {json.loads((sweep / c / "summary.json").read_text())["status"] for c in cells(sweep)}


def test_glob_over_a_group(cli, tmp_path):
    sweep = tmp_path / "glob"
    record = run_sweep(cli, sweep, ["lora=glob(*ora)"])
    variants = ["adalora", "dora", "lora", "olora", "rslora"]
    assert record["grid"]["lora"] == variants and record["swept"] == ["lora"]
    assert "lora=glob(*ora)" in record["command"]
    # Named by the swept key alone: optim.max_steps=2 and the rest are the same in every cell.
    assert cells(sweep) == [f"lora={v}" for v in variants]
    assert statuses(sweep) == {"ok"}
    md = (sweep / "report.md").read_text()
    assert "Swept: `lora` (adalora, dora, lora, olora, rslora)." in md
    assert record["counts"]["total"] == 5 and record["counts"]["ok"] == 5


def test_an_interpolated_override_is_resolved_per_cell_and_recorded_as_typed(cli, tmp_path):
    """'lora.alpha=${lora.r}' (the report's advice for a rank sweep at one alpha/r): each cell's alpha is its own
    rank, and sweep.json's command keeps the interpolation. Before, the record resolved it once against the sweep's
    config, lora.alpha=8, a command that would rerun r=16 at another scale."""
    sweep = tmp_path / "alpha"
    record = run_sweep(cli, sweep, ["lora.r=8,16", "lora.alpha=${lora.r}"])
    assert "'lora.alpha=${lora.r}'" in record["command"] and record["swept"] == ["lora.r"]
    alphas = {c: json.loads((sweep / c / "manifest.json").read_text())["config"]["lora"]["alpha"] for c in cells(sweep)}
    assert alphas == {"lora.r=8": 8, "lora.r=16": 16}
    assert "update scale" not in (sweep / "report.md").read_text()


def test_range_of_floats_names_cells_by_the_shortest_decimal(cli, tmp_path):
    sweep = tmp_path / "range"
    record = run_sweep(cli, sweep, ["optim.lr=range(1e-4,4e-4,1e-4)"])
    # The grid holds what Hydra ran; the names show it without float noise.
    assert record["grid"]["optim.lr"] == ["0.0001", "0.0002", "0.00030000000000000003"]
    assert record["swept"] == ["optim.lr"]
    assert cells(sweep) == ["optim.lr=0.0001", "optim.lr=0.0002", "optim.lr=0.0003"]
    assert statuses(sweep) == {"ok"}
    manifest = json.loads((sweep / "optim.lr=0.0003" / "manifest.json").read_text())
    assert manifest["run_name"] == "optim.lr=0.0003"
    lr = next(a for a in shlex.split(manifest["command"]) if a.startswith("optim.lr="))
    assert float(lr.partition("=")[2]) == 1e-4 + 2e-4  # the exact float of the cell, not 0.0003
    md = (sweep / "report.md").read_text()
    assert "Swept: `optim.lr` (0.0001, 0.0002, 0.0003)." in md
    # The noisy text appears only in the commands that reproduce the runs.
    before_commands = md.split("### Commands", 1)[0]
    assert "00000000000" not in before_commands
    csv = (sweep / "runs.csv").read_text()
    assert "optim.lr=0.0003" in csv and ",0.0003," in csv


def test_choice_and_a_plain_group_sweep(cli, tmp_path):
    sweep = tmp_path / "choice"
    record = run_sweep(cli, sweep, ["lora.r=choice(4,8)", "lora=lora,dora"])
    assert record["grid"]["lora.r"] == ["4", "8"] and record["grid"]["lora"] == ["lora", "dora"]
    assert record["swept"] == ["lora", "lora.r"]
    assert cells(sweep) == ["lora.r=4,lora=dora", "lora.r=4,lora=lora", "lora.r=8,lora=dora", "lora.r=8,lora=lora"]
    assert statuses(sweep) == {"ok"}
    md = (sweep / "report.md").read_text()
    assert "Swept: `lora.r` (4, 8), `lora` (dora, lora)." in md
    # Two factors: the interaction view and the grid are drawn.
    assert "](plots/interactions.png)" in md and "](plots/heatmap.png)" in md


def test_optuna_search_records_its_sampled_values(cli, tmp_path):
    sweep = tmp_path / "optuna"
    record = run_sweep(cli, sweep, ["hparams_search=optuna", "hydra.sweeper.n_trials=3"])
    assert record["swept"] == ["lora.r", "optim.lr"]
    overrides = [yaml.safe_load((sweep / c / ".hydra" / "overrides.yaml").read_text()) for c in cells(sweep)]
    ran = {key: sorted({o.partition("=")[2] for ovs in overrides for o in ovs if o.startswith(key + "=")})
           for key in ("lora.r", "optim.lr")}
    assert {k: sorted(v) for k, v in record["grid"].items() if k in ran} == ran


def test_optuna_search_cells_have_clean_names(cli, tmp_path):
    sweep = tmp_path / "optuna"
    record = run_sweep(cli, sweep, ["hparams_search=optuna", "hydra.sweeper.n_trials=3"])
    assert record["swept"] == ["lora.r", "optim.lr"]
    names = cells(sweep)
    assert len(names) == 3 and statuses(sweep) == {"ok"}
    for name in names:
        lr = re.fullmatch(r"lora\.r=(4|8|16|32),optim\.lr=([0-9.e-]+)", name)
        assert lr, name
        digits = lr.group(2).split("e")[0].replace(".", "").lstrip("0")
        assert len(digits) <= 12, name  # a sampled float, rounded to 12 significant digits at most
    md = (sweep / "report.md").read_text()
    assert "](plots/effects.png)" in md and "no ok run" not in md
