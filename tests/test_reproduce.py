"""Reproducible means checked: a finished sweep cell, re-run from the command its manifest.json records, in a
fresh directory, gives the same metrics.jsonl and the same adapter, bit for bit on CPU.

Only timing cannot repeat bitwise and is left out of the comparison: `time` (seconds since the run started)
and `tokens_per_second` on metrics.jsonl lines. Everything else on every line (losses, learning rates,
gradient norms, token counts, evaluation losses) must be equal as written.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest
from conftest import FAST, run_cli

from ftsweep import artifacts

TIMING = ("time", "tokens_per_second")


def without_timing(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k not in TIMING} for line in lines]


def tensors(adapter_dir):
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


@pytest.mark.slow
def test_a_cell_rerun_from_its_manifest_command_is_bitwise_identical(tmp_path, tiny_model_dir):
    first = tmp_path / "first"
    first.mkdir()
    sweep = first / "sweep"
    proc = run_cli(["-m", *FAST, "optim.max_steps=4", "train.logging_steps=1", "lora.r=4,8", "optim.lr=1e-3",
                    f"hydra.sweep.dir={sweep}"], cwd=first)
    assert proc.returncode == 0, proc.stderr[-2000:]
    cell = sweep / "lora.r=4"
    manifest = json.loads((cell / artifacts.MANIFEST).read_text())

    # The manifest of a real run: what was run, with what, on what.
    assert manifest["command"].startswith("python -m ftsweep ") and "lora.r=4" in manifest["command"]
    assert "lora.r=8" not in manifest["command"]  # the cell's own value, not the sweep's list
    assert manifest["config"]["lora"]["r"] == 4 and manifest["seed"] == manifest["config"]["seed"]
    summary = json.loads((cell / artifacts.SUMMARY).read_text())
    assert manifest["config_hash"] == summary["config_hash"] and len(manifest["config_hash"]) == 12
    assert {"torch", "transformers", "peft", "bitsandbytes", "hydra-core"} <= {k for k, v in manifest["packages"].items() if v}
    assert manifest["device"]["type"] == "cpu" and manifest["python"].count(".") == 2
    assert manifest["sweep"]["dir"] == str(sweep.resolve()) and len(manifest["data_fingerprint"]) >= 8
    assert len(manifest["git"]["commit"] or "x" * 40) == 40

    # A fresh directory, the command exactly as recorded (python is this interpreter).
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    argv = shlex.split(manifest["command"])
    assert argv[:3] == ["python", "-m", "ftsweep"]
    again = subprocess.run([sys.executable, *argv[1:]], cwd=fresh, capture_output=True, text=True, timeout=600,
                           env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"})
    assert again.returncode == 0, again.stderr[-2000:]
    (rerun,) = [p.parent for p in fresh.glob("outputs/*/*/summary.json")]

    assert json.loads((rerun / artifacts.SUMMARY).read_text())["config_hash"] == manifest["config_hash"]
    old = artifacts.read_metrics(cell / artifacts.METRICS)
    new = artifacts.read_metrics(rerun / artifacts.METRICS)
    assert [r["loss"] for r in old if r["split"] == "train"] == [r["loss"] for r in new if r["split"] == "train"]
    assert len([r for r in old if r["split"] == "train"]) == 4
    assert without_timing(old) == without_timing(new)

    import torch

    a, b = tensors(cell / artifacts.ADAPTER), tensors(rerun / artifacts.ADAPTER)
    assert a.keys() == b.keys() and a
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert a[key].view(-1).view(torch.uint8).equal(b[key].view(-1).view(torch.uint8)), key  # bits, not values
