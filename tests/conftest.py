"""Shared test setup: offline, a per-session FTSWEEP_HOME with the tiny model, CLI helpers."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: the first example pays for imports, and CI machines are shared.
settings.register_profile("ftsweep", deadline=None)
settings.load_profile("ftsweep")

# Offline everywhere, before anything imports transformers or a tracker.
_HOME = Path(os.environ.get("FTSWEEP_TEST_HOME") or tempfile.mkdtemp(prefix="ftsweep-test-home-"))
os.environ["FTSWEEP_HOME"] = str(_HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the demo test

REPO = Path(__file__).resolve().parent.parent

# Overrides that make a real run take seconds: few steps, small data, few samples.
FAST = [
    "logger=none",
    "optim.max_steps=6",
    "optim.micro_batch_size=4",
    "eval.every_n_steps=3",
    "eval.num_samples=4",
    "eval.generation.max_new_tokens=8",
    "data.num_records=80",
    "data.val_size=8",
    "train.logging_steps=2",
    "train.save_steps=3",
    "train.progress=false",
]


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from ftsweep.models import ensure_tiny_model

    return ensure_tiny_model()


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m ftsweep ARGS` in a subprocess, as a user would."""
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", "ftsweep", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path, tiny_model_dir):
    """cli(args) runs the real CLI with tmp_path as the working directory."""

    def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
        return run_cli(args, cwd=kw.pop("cwd", tmp_path), **kw)

    return _run
