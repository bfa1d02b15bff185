"""No internet, as on a cluster's compute node: a hub model in the local cache trains, one that is not fails at once.

The hub is an address nothing listens on (HF_ENDPOINT=http://127.0.0.1:<closed port>), and HF_HUB_OFFLINE is not
set, as on a user's machine. Before, huggingface_hub retried every request 5 times with backoff: 53 s and 40 lines
before the error, and the same wait before a cached model loaded.
"""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from conftest import FAST, run_cli

from ftsweep import artifacts

pytestmark = pytest.mark.slow

REPO = "ftsweep-test/tiny"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: a connection to it is refused


@pytest.fixture
def no_internet(tmp_path, tiny_model_dir) -> dict:
    """The environment of a machine without internet whose hub cache holds the tiny model as ftsweep-test/tiny."""
    cache = tmp_path / "hub-cache"
    repo = cache / ("models--" + REPO.replace("/", "--"))
    shutil.copytree(tiny_model_dir, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    endpoint = f"http://127.0.0.1:{closed_port()}"
    # The test session runs offline (conftest); a user's shell sets none of these.
    return {"HF_HUB_CACHE": str(cache), "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": "", "TRANSFORMERS_OFFLINE": "",
            "HF_DATASETS_OFFLINE": ""}


def test_a_cached_hub_model_trains_without_waiting_on_the_hub(tmp_path, no_internet):
    proc = run_cli([*FAST, f"model.name_or_path={REPO}", "hydra.run.dir=run"], cwd=tmp_path, env=no_internet, fresh=True)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert json.loads((tmp_path / "run" / artifacts.SUMMARY).read_text())["status"] == "ok"
    assert f"the hub ({no_internet['HF_ENDPOINT']}) cannot be reached" in out
    assert "Retrying in" not in out and "thrown while requesting" not in out
    assert "Could not find a config file" not in out  # PEFT's vocabulary check at every save, moot here


@pytest.mark.parametrize("override, words", [
    ("model.name_or_path=someone/not-downloaded", "model.name_or_path=someone/not-downloaded: not in the local hub cache"),
    ("data.path=someone/not-downloaded-data", "data.path=someone/not-downloaded-data: not in the local datasets cache"),
])
def test_a_hub_id_not_in_the_cache_fails_at_once_with_one_line(tmp_path, no_internet, override, words):
    data = ["data=alpaca"] if override.startswith("data.") else []
    proc = run_cli([*FAST, *data, override, "hydra.run.dir=run"], cwd=tmp_path, env=no_internet, fresh=True)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ftsweep: error:")]
    assert len(errors) == 1 and words in errors[0], proc.stderr[-3000:]
    assert f"{no_internet['HF_ENDPOINT']} cannot be reached (HF_ENDPOINT names a mirror)" in errors[0]
    assert "Retrying in" not in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
