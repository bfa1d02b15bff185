"""Ctrl-C and SIGTERM stop what the user stopped: the running cell checkpoints, no further cell starts."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAST

pytestmark = pytest.mark.slow

CELLS = ["lora.r=4", "lora.r=8", "lora.r=16"]


def _sweep_args(sweep_dir: Path) -> list[str]:
    fast = [a for a in FAST if not a.startswith(("optim.max_steps", "train.save_steps", "train.logging_steps"))]
    return ["-m", *fast, "optim.max_steps=40", "train.save_steps=4", "train.logging_steps=1", "eval.every_n_steps=0",
            "lora.r=4,8,16", f"hydra.sweep.dir={sweep_dir}"]


def _train_steps(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    lines = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    return [r["step"] for r in lines if r.get("split") == "train"]


# SIGTERM takes the same path with exit code 143: tests/test_sweep.py sends it to a single run.
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130)])
def test_a_signal_stops_the_sweep_and_the_same_command_resumes_it(tmp_path, tiny_model_dir, sig, code):
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "ftsweep", *_sweep_args(sweep_dir)]
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = sweep_dir / CELLS[0] / "metrics.jsonl"
    deadline = time.time() + 240
    while max(_train_steps(first), default=0) < 6:  # past the checkpoint at step 4
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "cell 1 never reached step 6"
        time.sleep(0.2)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=240)

    assert proc.returncode == code, err
    summary = json.loads((sweep_dir / CELLS[0] / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert not (sweep_dir / CELLS[1]).exists() and not (sweep_dir / CELLS[2]).exists(), "a cell started after the stop"
    assert "not yet run: lora.r=8, lora.r=16" in err, err
    resume_cmd = err.split("resume with: ", 1)[1].strip()
    assert resume_cmd.startswith("python -m ftsweep -m") and "lora.r=4,8,16" in resume_cmd, err
    assert f"hydra.sweep.dir={sweep_dir.resolve()}" in resume_cmd, "the printed command must resume this sweep, not start a new one"
    assert "failed" not in err.lower(), err  # interrupted is not failed
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["counts"]["interrupted"] == 1 and record["counts"]["failed"] == 0

    # The printed command, as a user would paste it, resumes the same sweep.
    again = subprocess.run([sys.executable, "-m", "ftsweep", *shlex.split(resume_cmd)[3:]], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    for cell in CELLS:
        assert json.loads((sweep_dir / cell / "summary.json").read_text())["status"] == "ok", cell
    resumed = json.loads((sweep_dir / CELLS[0] / "summary.json").read_text())
    assert resumed["resumed_from"] and resumed["resumed_from"].startswith("checkpoint-")
    assert _train_steps(first) == list(range(1, 41)), "every step once, none lost or repeated"
