"""hydra/launcher=ray on CPU with GPUs declared to Ray: each cell its own device, never more cells than slots."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest
from conftest import FAST, start_as_from_a_terminal, train_steps

from hydra_plugins.ftsweep_launchers.ray_cells import forwarded_env

# Two optimizer steps, no evaluation or samples: a cell is mostly its process start.
TINY = [*FAST, "optim.max_steps=2", "eval.every_n_steps=0", "eval.at_start=false", "eval.num_samples=0",
        "data.num_records=40"]


def pool_lines(sweep):
    return [json.loads(line) for line in (sweep / "gpu_pool.jsonl").read_text().splitlines()]


def most_at_once(lines):
    """The largest number of cells running at one moment (a cell is running from its start to its end)."""
    return max(sum(1 for k in lines if k["start"] <= j["start"] < k["end"]) for j in lines)


@pytest.mark.slow
def test_each_cell_its_own_gpu_a_failing_cell_does_not_stop_the_pool_a_rerun_skips_and_half_gpus_share(cli, tmp_path):
    sweep = tmp_path / "sweep"
    # Ray hands out the devices this shell made visible, as it would on a machine with GPUs 7 and 9.
    cmd = ["-m", "lora.r=4,8,-1", "hydra/launcher=ray", "hydra.launcher.ray.init.num_gpus=2", *TINY,
           f"hydra.sweep.dir={sweep}"]
    proc = cli(cmd, env={"CUDA_VISIBLE_DEVICES": "7,9"}, timeout=300, fresh=True)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 run(s) failed: lora.r=-1 (lora.r=-1: the rank must be >= 1" in proc.stderr

    lines = pool_lines(sweep)
    assert sorted(j["job"] for j in lines) == [0, 1, 2]
    assert {j["device"] for j in lines} == {"7", "9"}  # both GPUs used, each cell exactly one of them
    # Never more than 2 cells at once, and never two on one GPU.
    assert most_at_once(lines) <= 2
    for j in lines:
        running = [k for k in lines if k["start"] <= j["start"] < k["end"]]
        assert len({k["device"] for k in running}) == len(running)
    for j in lines:
        r = next(o for o in j["overrides"] if o.startswith("lora.r=")).split("=")[1]
        summary = json.loads((sweep / f"lora.r={r}" / "summary.json").read_text())
        assert summary["cuda_visible_devices"] == j["device"]
        assert summary["status"] == ("failed" if r == "-1" else "ok")
    report = (sweep / "report.md").read_text()
    assert all(f"lora.r={r}" in report for r in (4, 8))
    counts = json.loads((sweep / "sweep.json").read_text())["counts"]
    assert counts["ok"] == 2 and counts["failed"] == 1

    # The sweep widened by two cells, on one GPU shared by two cells at a time (gpus_per_cell=0.5): the finished
    # cells are skipped with their files untouched and without a worker (the driver reads their summaries), the bad
    # one fails again, the new ones share GPU 0, and the report is rebuilt with all four.
    before = {r: (sweep / f"lora.r={r}" / "summary.json").read_bytes() for r in (4, 8)}
    (sweep / "report.md").unlink()
    proc = cli(["-m", "lora.r=4,8,-1,16,32", "hydra/launcher=ray", "hydra.launcher.gpus_per_cell=0.5",
                "hydra.launcher.ray.init.num_gpus=1", *TINY, f"hydra.sweep.dir={sweep}"], timeout=300, fresh=True)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert {r: (sweep / f"lora.r={r}" / "summary.json").read_bytes() for r in (4, 8)} == before
    counts = json.loads((sweep / "sweep.json").read_text())["counts"]
    assert counts["skipped"] == 2 and counts["failed"] == 1 and counts["ok"] == 2
    assert "skip lora.r=4: finished ok with the same config" in proc.stdout, proc.stdout[-3000:]
    rerun = pool_lines(sweep)[len(lines):]
    assert sorted(next(o for o in j["overrides"] if o.startswith("lora.r=")) for j in rerun) == [
        "lora.r=-1", "lora.r=16", "lora.r=32"]  # no worker for the finished cells
    assert {j["device"] for j in rerun} == {"0"}
    assert most_at_once(rerun) == 2  # 1 GPU x 2 cells per GPU, and the pool used both slots
    for r in (16, 32):
        summary = json.loads((sweep / f"lora.r={r}" / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["cuda_visible_devices"] == "0"
    report = (sweep / "report.md").read_text()
    assert all(f"lora.r={r}" in report for r in (4, 8, 16, 32))


@pytest.mark.parametrize("knobs, message", [
    (["hydra.launcher.gpus_per_cell=1.5"], "gpus_per_cell=1.5: a share above 1 must be a whole number"),
    (["hydra.launcher.gpus_per_cell=-1"], "gpus_per_cell must be >= 0"),
    (["hydra.launcher.address=auto", "hydra.launcher.ray.init.num_gpus=2"],
     "hydra.launcher.ray.init.num_gpus only applies to a Ray started here, not to address=auto"),
])
def test_bad_launcher_knobs_fail_in_one_line_before_ray_starts(cli, tmp_path, knobs, message):
    proc = cli(["-m", "lora.r=4,8", "hydra/launcher=ray", *knobs, *TINY, f"hydra.sweep.dir={tmp_path / 's'}"], timeout=120)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ftsweep: error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr[-2000:]
    assert not list((tmp_path / "s").glob("*/summary.json"))  # no cell ran


def test_cells_that_ask_for_more_gpu_than_this_ray_has_fail_in_one_line_instead_of_waiting(cli, tmp_path):
    """Ray's autoscaler only says, every half minute, that no node can hold such a cell: the sweep waited for ever."""
    proc = cli(["-m", "lora.r=4,8", "hydra/launcher=ray", "hydra.launcher.ray.init.num_gpus=0", *TINY,
                f"hydra.sweep.dir={tmp_path / 's'}"], timeout=120, fresh=True)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ftsweep: error:")]
    assert lines == ["ftsweep: error: hydra/launcher=ray: each cell asks for 1 GPU (hydra.launcher.gpus_per_cell) and "
                     "the Ray started here has 0; on a machine without GPUs set hydra.launcher.gpus_per_cell=0 (a CPU "
                     "core per cell), or make the GPUs visible (CUDA_VISIBLE_DEVICES)"], proc.stderr[-2000:]
    assert not list((tmp_path / "s").glob("*/summary.json"))


def test_cells_get_this_shells_settings_but_not_its_secrets():
    env = {"FTSWEEP_HOME": "/data/ftsweep", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "WANDB_API_KEY": "k",
           "HF_TOKEN": "t", "SWANLAB_API_KEY": "s", "PATH": "/bin", "CUDA_VISIBLE_DEVICES": "0,1"}
    assert forwarded_env(env) == {"FTSWEEP_HOME": "/data/ftsweep", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}


@pytest.mark.slow
def test_ctrl_c_at_the_driver_stops_every_running_cell_with_a_checkpoint_and_the_printed_command_resumes(tmp_path, tiny_model_dir):
    """Ray runs the cells' workers in sessions of their own: the driver passes Ctrl-C on (ray.cancel), and each
    running cell saves where it stood and marks itself interrupted, as under the basic launcher."""
    # 120 steps of about 50 ms: the stop takes about 1 s from the driver to the workers, and with 40 steps the faster
    # cell sometimes ran to its last step in that time (checkpoint-40, nothing left to resume).
    sweep, steps = tmp_path / "sweep", 120
    cells = ["lora.r=4", "lora.r=8"]
    cmd = [sys.executable, "-m", "ftsweep", "-m", *FAST, f"optim.max_steps={steps}", "train.save_steps=5",
           "train.logging_steps=1", "eval.every_n_steps=0", "eval.num_samples=0", "lora.r=4,8", "hydra/launcher=ray",
           "hydra.launcher.ray.init.num_gpus=2", f"hydra.sweep.dir={sweep}"]
    env = {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, "CUDA_VISIBLE_DEVICES": "7,9"}
    proc = start_as_from_a_terminal(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    deadline = time.time() + 240
    while not all(len(train_steps(sweep / c / "metrics.jsonl")) >= 3 for c in cells):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the cells never got going"
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)

    assert proc.returncode == 130, err[-3000:]
    for cell in cells:
        summary = json.loads((sweep / cell / "summary.json").read_text())
        assert summary["status"] == "interrupted", (cell, summary["status"])
        saved = max(int(p.name.split("-")[1]) for p in (sweep / cell / "checkpoints").glob("checkpoint-*"))
        assert saved == train_steps(sweep / cell / "metrics.jsonl")[-1] < steps, cell  # where it stood, not the last periodic checkpoint
    record = json.loads((sweep / "sweep.json").read_text())
    assert record["counts"]["interrupted"] == 2 and record["failed_runs"] == [], record["counts"]

    resume = err.split("resume with: ", 1)[1].strip()
    again = subprocess.run([sys.executable, *shlex.split(resume)[1:]], cwd=tmp_path, env=env, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    for cell in cells:
        assert json.loads((sweep / cell / "summary.json").read_text())["status"] == "ok"
        assert train_steps(sweep / cell / "metrics.jsonl") == list(range(1, steps + 1)), cell
