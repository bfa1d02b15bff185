"""SLURM through submitit (its local executor here) and Optuna search, through the real CLI."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import FAST

pytestmark = pytest.mark.slow

SHORT = [*FAST, "optim.max_steps=2", "eval.every_n_steps=0"]


def test_slurm_config_composes_with_its_overrides(cli):
    proc = cli(["lora.r=8", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=720",
                "--cfg", "hydra"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    launcher = yaml.safe_load(proc.stdout)["hydra"]["launcher"]
    assert launcher["_target_"].endswith("SlurmLauncher")
    assert launcher["partition"] == "gpu" and launcher["timeout_min"] == 720 and launcher["gpus_per_task"] == 1


def test_submitit_local_runs_every_cell(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(["-m", "lora.r=4,8", "hydra/launcher=slurm_local", *SHORT, f"hydra.sweep.dir={sweep}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("lora.r=4", "lora.r=8"):
        assert json.loads((sweep / name / "summary.json").read_text())["status"] == "ok"
    assert (sweep / ".submitit").is_dir() and (sweep / "report.md").exists()


def test_optuna_search_minimizes_the_runs_eval_loss(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *SHORT, f"hydra.sweep.dir={sweep}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = [json.loads(p.read_text())["eval_loss"] for p in sweep.glob("*/summary.json")]
    assert len(losses) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(losses))
    assert set(best["best_params"]) == {"optim.lr", "lora.r"}
