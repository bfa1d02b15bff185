"""One cell over 2 processes (torchrun, gloo on CPU): same effective batch, same training, rank 0 alone writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, classify_data, train_lines

from ftsweep import artifacts
from ftsweep.distributed import accumulation

# lora.dropout=0: the dropout masks are drawn per rank, so with dropout the two layouts train on other draws.
# 7 held-out examples: one rank has 4, the other 3, and the held-out loss must still be the single process's.
ARGS = [*(a for a in FAST if not a.startswith("data.val_size")), "data.val_size=7", "optim.max_steps=3",
        "optim.micro_batch_size=4", "optim.grad_accum=2", "eval.every_n_steps=0", "train.logging_steps=1", "lora.dropout=0"]


def test_accumulation_keeps_the_effective_batch():
    assert accumulation(4, 1) == 4
    assert accumulation(4, 2) == 2  # 8 micro x 4 accum x 1 = 8 x 2 x 2 = 32 sequences/step
    assert accumulation(3, 2) == 1  # not divisible: the nearest lower per-rank value (and a warning)
    assert accumulation(1, 4) == 1


def _torchrun_and_one_process(cli, tmp_path: Path, args: list[str], port: int, env: dict):
    """The same cell over 2 processes and in one; returns (torchrun's output, its run dir, the single run dir)."""
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
                           "-m", "ftsweep", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = [p.parent for p in tmp_path.glob("outputs/*/*/summary.json")]
    assert [d.name for d in dirs] == [f"torchrun-port{port}"]  # one shared directory, written by rank 0 only
    (tmp_path / "single").mkdir()
    single = cli(args, cwd=tmp_path / "single", env=env)
    assert single.returncode == 0, single.stderr[-2000:]
    return proc, dirs[0], next((tmp_path / "single").glob("outputs/*/*/"))


def _trains_alike(ddp: Path, one: Path) -> None:
    """Each step sees the same 8 sequences either way (2 ranks x 4 micro x 1 accum = 1 x 4 micro x 2 accum) and the
    ranks average their gradients: every step's loss and gradient norm, and every held-out loss, are the single
    process's."""
    ddp_steps, single_steps = train_lines(ddp), train_lines(one)
    assert list(ddp_steps) == list(single_steps) == [1, 2, 3]
    for step, line in ddp_steps.items():
        assert line["tokens_seen"] == single_steps[step]["tokens_seen"]
        assert line["loss"] == pytest.approx(single_steps[step]["loss"], rel=1e-5), step
        assert line["grad_norm"] == pytest.approx(single_steps[step]["grad_norm"], rel=1e-4), step
    evals = [[(r["step"], r["eval_loss"]) for r in artifacts.read_metrics(d / artifacts.METRICS) if r["split"] == "eval"]
             for d in (ddp, one)]
    assert [s for s, _ in evals[0]] == [0, 3]
    assert [x for _, x in evals[0]] == pytest.approx([x for _, x in evals[1]], rel=1e-5)
    # Each rank scored every world-size-th example; put back in order, example by example, they are one process's.
    held_out = [json.loads((d / artifacts.HELD_OUT_LOSSES).read_text()) for d in (ddp, one)]
    assert held_out[0]["tokens"] == held_out[1]["tokens"]
    assert held_out[0]["loss_sums"] == pytest.approx(held_out[1]["loss_sums"], rel=1e-4)


@pytest.mark.slow
def test_torchrun_two_processes_train_one_cell_like_one_process(cli, tmp_path):
    """Before, the baseline evaluation left the model marked as prepared and train() never wrapped it for data
    parallelism: each rank trained its own adapter on its half of the data (step 1 gradient norm 1.7047 against
    1.6050; from step 3 on, once the warm-up's learning rate is above 0, other losses: 5.57216 against 5.57173).
    And the held-out loss was rank 0's 4 examples alone (5.4786 against 5.5875)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    # A fresh home, as on a first use: the ranks must not race to create the built-in model (rank 1's copy, which
    # transformers leaves without weights in a process group, was sometimes the one renamed into place).
    env["FTSWEEP_HOME"] = str(tmp_path / "fresh-home")
    proc, ddp_dir, one = _torchrun_and_one_process(cli, tmp_path, ARGS, 29541, env)
    assert proc.stdout.count("ok | eval_loss") == 1
    ddp = json.loads((ddp_dir / artifacts.SUMMARY).read_text())
    assert ddp["status"] == "ok" and ddp["steps"] == 3 and ddp["grad_accum"] == 1
    # Each process accumulates 1 of the config's 2 micro batches; the step trains what one process would: 4 x 2 x 1.
    single = json.loads((one / artifacts.SUMMARY).read_text())
    assert [(s["processes"], s["effective_batch"]) for s in (ddp, single)] == [(2, 8), (1, 8)]
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "fresh-home" / "tiny-llama-v1").iterdir()}
    _trains_alike(ddp_dir, one)


@pytest.mark.slow
def test_torchrun_trains_a_classifier_like_one_process(cli, tmp_path, tiny_model_dir):
    """Classification predicts the held-out classes at every evaluation, the baseline too, with transformers'
    prediction loop, which marks the bare model as prepared: train() must still wrap it for data parallelism."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    args = [*ARGS, "task=classify", "task.num_labels=4", "data=alpaca", "data.format=multiple_choice",
            f"data.path={classify_data(tmp_path)}"]
    _, ddp_dir, one = _torchrun_and_one_process(cli, tmp_path, args, 29543, env)
    _trains_alike(ddp_dir, one)
    accuracy = [[r["accuracy"] for r in artifacts.read_metrics(d / artifacts.METRICS) if r["split"] == "eval"]
                for d in (ddp_dir, one)]
    assert accuracy[0] == accuracy[1]
    samples = [(d / artifacts.SAMPLES).read_text() for d in (ddp_dir, one)]  # every held-out example, in order
    assert samples[0] == samples[1]


@pytest.mark.slow
def test_a_non_finite_loss_on_one_rank_fails_the_job_with_that_cause(tmp_path):
    """Rank 1's loss is NaN at step 2, rank 0's is finite: both stop there, and the run is recorded as failed by the
    non-finite loss. Rank 1 stopping alone broke rank 0's next all-reduce: the run was recorded as failed by gloo's
    "Connection closed by peer"."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(OMP_NUM_THREADS="1", FTSWEEP_INJECT_NAN_RANK="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29544",
                           "-m", "ftsweep", *ARGS, "hydra.run.dir=run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 1
    summary = json.loads((tmp_path / "run" / artifacts.SUMMARY).read_text())
    assert summary["status"] == "failed" and summary["error"] == {
        "type": "NonFiniteLoss",
        "message": "training loss is not finite on another rank at step 2; lower optim.lr or check the data"}
    assert "ftsweep: error: training loss is nan at step 2" in proc.stderr  # rank 1's own line


@pytest.mark.slow
def test_an_out_of_memory_error_on_one_rank_fails_the_job_at_once_with_that_cause(tmp_path):
    """Rank 1 runs out of memory at step 2 while rank 0 is inside that step's gradient exchange. Before, rank 1
    retried alone and the job hung until the collective timed out (stopped here after 300 s, summary `running`).
    Now rank 1 exits with one line that names the fix, torchrun stops rank 0, and the run records rank 1's cause."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(OMP_NUM_THREADS="1", FTSWEEP_INJECT_OOM="2", FTSWEEP_INJECT_OOM_RANK="1")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29545",
                           "-m", "ftsweep", *ARGS, "hydra.run.dir=run"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=180)
    assert proc.returncode == 1
    message = ("rank 1 of 2 ran out of GPU memory at step 2; a torchrun job cannot retry on one rank: lower "
               "optim.micro_batch_size (now 4) and raise optim.grad_accum to keep the batch")
    summary = json.loads((tmp_path / "run" / artifacts.SUMMARY).read_text())
    assert summary["status"] == "failed" and summary["error"] == {"type": "OutOfMemoryError", "message": message}
    assert f"ftsweep: error: {message}" in proc.stderr


def _worker_of_rank(launcher_pid: int, rank: int) -> int:
    """The PID of torchrun's worker process with this RANK (from its environment)."""
    from conftest import descendants

    for child in descendants(launcher_pid):
        if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            return child
    raise AssertionError(f"no worker with RANK={rank} under {launcher_pid}")


@pytest.mark.slow
def test_torchrun_ranks_stop_after_the_same_step_when_one_is_signalled(tmp_path):
    """SIGTERM reaching one rank stops every rank after the same step: the run is `interrupted` with a checkpoint
    holding both ranks' random states at that step, and the same command resumes it. A rank that stopped alone
    left the other waiting in the next step's all-reduce: the job hung (still running 120 s later)."""
    import signal
    import time

    from conftest import train_steps

    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    args = [a for a in ARGS if not a.startswith("optim.max_steps")] + ["optim.max_steps=24", "train.save_steps=100",
                                                                       "hydra.run.dir=run"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29542", "-m",
           "ftsweep", *args]
    whole = subprocess.run([*cmd[:-1], "hydra.run.dir=whole"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]
    proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: a hung job is killed whole
    metrics, deadline = tmp_path / "run" / artifacts.METRICS, time.monotonic() + 300
    try:
        # Past step 12: in the second epoch (72 examples / 8 per step = 9 steps an epoch), where a resume must find
        # the epoch's own order.
        while max(train_steps(metrics), default=0) < 12:
            assert proc.poll() is None and time.monotonic() < deadline, "the job ended or never reached step 12"
            time.sleep(0.02)
        os.kill(_worker_of_rank(proc.pid, 1), signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # hung: the launcher and its workers go, not left to load the machine
            os.killpg(proc.pid, signal.SIGKILL)

    summary = json.loads((tmp_path / "run" / artifacts.SUMMARY).read_text())
    assert summary["status"] == "interrupted", (summary.get("error"), err[-3000:])
    checkpoints = list((tmp_path / "run" / "checkpoints").iterdir())
    assert len(checkpoints) == 1, checkpoints
    step = json.loads((checkpoints[0] / "trainer_state.json").read_text())["global_step"]
    assert {"rng_state_0.pth", "rng_state_1.pth"} <= {p.name for p in checkpoints[0].iterdir()}
    assert train_steps(metrics)[-1] == step and 12 <= step < 24

    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = json.loads((tmp_path / "run" / artifacts.SUMMARY).read_text())
    assert resumed["status"] == "ok" and resumed["resumed_from"] == checkpoints[0].name
    assert train_steps(metrics) == list(range(1, 25)), "every step once"
    # After the checkpoint the resumed job trains on the batches the uninterrupted one does.
    # and trains as it does: the same adapter, optimizer state and per-rank random state from the checkpoint on.
    whole_steps, resumed_steps = train_lines(tmp_path / "whole"), train_lines(tmp_path / "run")
    assert {s: r["tokens_seen"] for s, r in whole_steps.items()} == {s: r["tokens_seen"] for s, r in resumed_steps.items()}
    assert [resumed_steps[s]["loss"] for s in whole_steps] == pytest.approx([r["loss"] for r in whole_steps.values()], rel=1e-6)
