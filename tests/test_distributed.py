"""One cell over 2 processes (torchrun, gloo on CPU): same effective batch, rank 0 alone writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import FAST

from ftsweep import artifacts
from ftsweep.distributed import accumulation

ARGS = [*FAST, "optim.max_steps=3", "optim.micro_batch_size=4", "optim.grad_accum=2", "eval.every_n_steps=0",
        "train.logging_steps=1"]


def test_accumulation_keeps_the_effective_batch():
    assert accumulation(4, 1) == 4
    assert accumulation(4, 2) == 2  # 8 micro x 4 accum x 1 = 8 x 2 x 2 = 32 sequences/step
    assert accumulation(3, 2) == 1  # not divisible: the nearest lower per-rank value (and a warning)
    assert accumulation(1, 4) == 1


@pytest.mark.slow
def test_torchrun_two_processes_train_one_cell_like_one_process(cli, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env["OMP_NUM_THREADS"] = "1"
    # A fresh home, as on a first use: the ranks must not race to create the built-in model (rank 1's copy, which
    # transformers leaves without weights in a process group, was sometimes the one renamed into place).
    env["FTSWEEP_HOME"] = str(tmp_path / "fresh-home")
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541",
                           "-m", "ftsweep", *ARGS], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dirs = [p.parent for p in tmp_path.glob("outputs/*/*/summary.json")]
    assert [d.name for d in dirs] == ["torchrun-port29541"]  # one shared directory, written by rank 0 only
    assert proc.stdout.count("ok | eval_loss") == 1
    ddp = json.loads((dirs[0] / artifacts.SUMMARY).read_text())
    assert ddp["status"] == "ok" and ddp["steps"] == 3 and ddp["grad_accum"] == 1
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "fresh-home" / "tiny-llama-v1").iterdir()}

    (tmp_path / "single").mkdir()
    single = cli(ARGS, cwd=tmp_path / "single")
    assert single.returncode == 0, single.stderr[-2000:]
    one = next((tmp_path / "single").glob("outputs/*/*/"))
    # Step 1 sees the same 8 sequences either way: 2 ranks x 4 micro x 1 accum = 1 x 4 micro x 2 accum.
    step1 = [r for r in artifacts.read_metrics(dirs[0] / artifacts.METRICS) if r["split"] == "train"][0]
    step1_single = [r for r in artifacts.read_metrics(one / artifacts.METRICS) if r["split"] == "train"][0]
    assert step1["tokens_seen"] == step1_single["tokens_seen"]
    assert step1["loss"] == pytest.approx(step1_single["loss"], rel=1e-3)
    baseline = [r for r in artifacts.read_metrics(dirs[0] / artifacts.METRICS) if r["split"] == "eval"][0]
    assert baseline["step"] == 0
