"""What a run was, and where it ran: the facts written to manifest.json."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from ftsweep import overrides as ovr
from ftsweep.artifacts import Manifest

PACKAGES = ("ftsweep", "torch", "transformers", "peft", "bitsandbytes", "datasets", "accelerate", "hydra-core", "omegaconf")
# A name is secret when one of its parts is one of these words: HF_TOKEN, WANDB_API_KEY, access_token -
# but not max_new_tokens or tokenizer.
_SECRET_NAME = re.compile(r"(^|[_\-.])(token|secret|password|passwd|api[_\-]?key|credentials?|auth)($|[_\-.])", re.I)


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_state(path: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the ftsweep checkout, or nulls when installed from a wheel."""
    path = path or Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5)
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def device_info() -> dict[str, Any]:
    import torch

    if torch.cuda.is_available():
        return {"type": "cuda", "name": torch.cuda.get_device_name(0), "count": torch.cuda.device_count(),
                "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    return {"type": "cpu", "name": platform.processor() or platform.machine(), "count": 0,
            "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}


def secret_values() -> set[str]:
    """Values of environment variables whose names look secret (WANDB_API_KEY, HF_TOKEN, ...)."""
    return {v for k, v in os.environ.items() if _SECRET_NAME.search(k) and len(v) >= 6}


def scrub(obj: Any, secrets: set[str] | None = None) -> Any:
    """Replace secret-named keys and any value containing an environment secret by '***'."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, dict):
        return {k: ("***" if _SECRET_NAME.search(str(k)) and v not in (None, "", False) else scrub(v, secrets)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [scrub(v, secrets) for v in obj]
    if isinstance(obj, str) and any(s in obj for s in secrets):
        return "***"
    return obj


def build(*, run_name: str, overrides: list[str], config: dict, config_hash: str, seed: int,
          sweep: dict | None, data_fingerprint: str | None, created_at: str, test_fingerprint: str | None = None,
          held_out_fingerprint: str | None = None) -> Manifest:
    """manifest.json's record (fields: ftsweep.artifacts.Manifest)."""
    return {
        "run_name": run_name,
        "overrides": scrub(list(overrides)),
        "command": scrub(ovr.command(overrides)),
        "config": scrub(config),
        "config_hash": config_hash,
        "seed": seed,
        "sweep": sweep,
        "git": git_state(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "device": device_info(),
        "data_fingerprint": data_fingerprint,
        "test_fingerprint": test_fingerprint,
        "held_out_fingerprint": held_out_fingerprint,
        "argv": scrub([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "created_at": created_at,
    }
