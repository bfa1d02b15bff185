"""hydra/launcher=gpu_pool with fake device ids: never more jobs at once than slots, one device per job."""

from __future__ import annotations

import json

import pytest
from conftest import FAST

pytestmark = pytest.mark.slow


def test_four_jobs_over_two_fake_devices(cli, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli(["-m", "seed=1,2,3,4", "hydra/launcher=gpu_pool", "hydra.launcher.gpus=[7,9]", *FAST, "optim.max_steps=2",
                "eval.every_n_steps=0", f"hydra.sweep.dir={sweep}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = [json.loads(line) for line in (sweep / "gpu_pool.jsonl").read_text().splitlines()]
    assert sorted(j["job"] for j in jobs) == [0, 1, 2, 3] and all(j["status"] == "completed" for j in jobs)
    # At any job's start, count the jobs running: never more than the 2 slots, never 2 on one device.
    for j in jobs:
        running = [k for k in jobs if k["start"] <= j["start"] < k["end"]]
        assert len(running) <= 2
        assert len({k["device"] for k in running}) == len(running)
    # Both devices were used, and each job saw exactly the one device the pool gave it.
    assert {j["device"] for j in jobs} == {"7", "9"}
    for j in jobs:
        seed = next(o for o in j["overrides"] if o.startswith("seed=")).split("=")[1]
        summary = json.loads((sweep / f"seed={seed}" / "summary.json").read_text())
        assert summary["status"] == "ok" and summary["cuda_visible_devices"] == j["device"]
