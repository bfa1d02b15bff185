"""SLURM through submitit (its local executor here) and Optuna search, through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys

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
    assert launcher["max_num_timeout"] == 3  # a time limit requeues the task, which resumes at its checkpoint


def test_submitit_local_runs_every_cell(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(["-m", "lora.r=4,8", "hydra/launcher=slurm_local", *SHORT, f"hydra.sweep.dir={sweep}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("lora.r=4", "lora.r=8"):
        assert json.loads((sweep / name / "summary.json").read_text())["status"] == "ok"
    assert (sweep / ".submitit").is_dir() and (sweep / "report.md").exists()


def _submitit_task(root_pid: int) -> int | None:
    """The PID of the submitit task (`python -m submitit.core._submit ...`) among a process's descendants."""
    from pathlib import Path

    from conftest import descendants

    return next((pid for pid in descendants(root_pid) if b"submitit.core._submit" in Path(f"/proc/{pid}/cmdline").read_bytes()),
                None)


def test_a_preempted_slurm_task_checkpoints_where_it_stopped_and_its_requeue_resumes_there(tmp_path):
    """submitit's notice (SIGUSR2, sent before a SLURM time limit or on preemption) stops the run at a step's end
    with a checkpoint, then goes on to submitit's handler, which requeues the task; the requeued task resumes at
    that step. Before, the handler requeued at once, mid-step: the task restarted from its last periodic
    checkpoint (here none: from step 0), so a run longer than the time limit never finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import train_steps

    sweep = tmp_path / "sweep"
    args = [a for a in FAST if not a.startswith(("optim.max_steps", "train.save_steps", "train.logging_steps"))]
    cmd = [sys.executable, "-m", "ftsweep", "-m", "hydra/launcher=slurm_local", *args, "optim.max_steps=200",
           "train.save_steps=1000", "train.logging_steps=1", "eval.every_n_steps=0", f"hydra.sweep.dir={sweep}"]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    deadline = time.monotonic() + 300
    try:
        while not (runs := list(sweep.glob("*/metrics.jsonl"))) or max(train_steps(runs[0]), default=0) < 50:
            assert proc.poll() is None and time.monotonic() < deadline, "the task ended or never reached step 50"
            time.sleep(0.02)
        os.kill(_submitit_task(proc.pid), signal.SIGUSR2)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err[-3000:]

    summary = json.loads((runs[0].parent / "summary.json").read_text())
    assert summary["status"] == "ok", summary.get("error")
    assert summary["resumed_from"] and int(summary["resumed_from"].split("-")[1]) >= 50, summary["resumed_from"]
    assert train_steps(runs[0]) == list(range(1, 201)), "every step once: none lost, none trained twice"
    log = "".join(p.read_text() for p in (sweep / ".submitit").rglob("*_log.*"))
    assert "Caught signal SIGUSR2" in log and f"stopping when step {summary['resumed_from'].split('-')[1]} is complete" in log


def test_optuna_search_minimizes_the_runs_eval_loss(cli, tmp_path):
    sweep = tmp_path / "sweep"
    # A dimension given on the command line replaces the file's (lora.r: choice(4, 8, 16, 32)).
    proc = cli(["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", "lora.r=choice(2, 3)", *SHORT,
                f"hydra.sweep.dir={sweep}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sweep.glob("*/summary.json")]
    losses = [s["eval_loss"] for s in summaries]
    assert len(losses) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(min(losses))
    assert set(best["best_params"]) == {"optim.lr", "lora.r"} and best["best_params"]["lora.r"] in (2, 3)


def test_the_default_search_lets_tpe_propose_after_its_random_start(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ftsweep", "hparams_search=optuna", "--cfg", "hydra"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    sweeper = yaml.safe_load(proc.stdout)["hydra"]["sweeper"]
    assert sweeper["sampler"]["_target_"] == "optuna.samplers.TPESampler"
    # Optuna's TPE draws its first n_startup_trials at random; as many as n_trials would make the search random.
    assert 0 < sweeper["sampler"]["n_startup_trials"] < sweeper["n_trials"]
