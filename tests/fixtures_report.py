"""Writers of fake run and sweep directories, in the formats of docs/run-directory.md.

The report tests (and bench/report_100.py) build their inputs with these, so
every number a test checks is one the test chose.
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

# The package is not installed in every checkout; the tests run from the repo.
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PACKAGES = {
    "ftsweep": "0.1.0",
    "torch": "2.13.0",
    "transformers": "5.23.0",
    "peft": "0.21.2",
    "bitsandbytes": "0.50.2",
    "datasets": "5.2.0",
    "hydra-core": "1.3.8",
}

BASE_CONFIG: dict[str, Any] = {
    "mode": "train",
    "seed": 42,
    "project": "ftsweep",
    "model": {"name": "tiny", "name_or_path": "tiny"},
    "lora": {"name": "lora", "method": "lora", "r": 8, "alpha": 16, "dropout": 0.05},
    "optim": {"name": "adamw", "lr": 0.0002, "max_steps": 150},
    "data": {"name": "synthetic", "n": None, "max_length": 128},
    "task": {"name": "sft"},
    "logger": {"name": "none"},
}


def _parse(value: str) -> Any:
    loaded = yaml.safe_load(value)
    return loaded if isinstance(loaded, (int, float, bool)) or loaded is None else value


def config_for(overrides: list[str]) -> dict[str, Any]:
    """BASE_CONFIG with the overrides applied (group overrides set the group's name)."""
    config = copy.deepcopy(BASE_CONFIG)
    for text in overrides:
        key, _, value = text.lstrip("+").partition("=")
        node = config
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(node.get(last), dict):
            node[last]["name"] = value
            option = ROOT / "conf" / key / f"{value}.yaml"  # a group option sets what its file sets (method, use_rslora)
            if key == "lora" and option.exists():
                node[last].update({k: v for k, v in (yaml.safe_load(option.read_text()) or {}).items() if k != "defaults"})
        else:
            node[last] = _parse(value)
    return config


def write_sweep_json(sweep_dir: Path, sweep_id: str, command: str, grid: dict[str, list[str]], **extra: Any) -> None:
    sweep_dir.mkdir(parents=True, exist_ok=True)
    meta = {
        "id": sweep_id,
        "command": command,
        "overrides": [f"{k}={','.join(v)}" for k, v in grid.items()],
        "grid": grid,
        "started_at": "2026-11-22T14:03:11Z",
        "finished_at": "2026-11-22T14:06:40Z",
    } | extra
    (sweep_dir / "sweep.json").write_text(json.dumps(meta, indent=2))


def curve(final: float, steps: int = 150, start: float = 5.0) -> list[dict[str, Any]]:
    """metrics.jsonl lines: train loss falling linearly to final + 0.2, evals at 0, steps/2, steps."""
    lines = []
    for step in range(10, steps + 1, 10):
        frac = step / steps
        lines.append(
            {
                "split": "train",
                "step": step,
                "epoch": round(frac * 1.2, 4),
                "tokens_seen": step * 800,
                "loss": round(start + (final + 0.2 - start) * frac, 6),
                "learning_rate": 0.0003,
                "grad_norm": 1.0,
                "tokens_per_second": 2450.0,
                "padding_efficiency": 0.93,
                "time": step * 0.3,
            }
        )
    for step in (0, steps // 2, steps):
        frac = step / steps
        loss = round(start + 0.5 + (final - start - 0.5) * frac, 6)
        lines.append(
            {"split": "eval", "step": step, "epoch": frac * 1.2, "tokens_seen": step * 800, "eval_loss": loss,
             "perplexity": round(2.718281828 ** loss, 4), "time": step * 0.3}
        )
    return sorted(lines, key=lambda r: (r["step"], r["split"] == "train"))


def write_run(
    sweep_dir: Path,
    overrides: list[str],
    *,
    name: str | None = None,
    status: str = "ok",
    eval_loss: float | None = 3.5,
    task_metrics: dict[str, float] | None = None,
    error: dict[str, str] | None = None,
    packages: dict[str, str] | None = None,
    metrics: list[dict[str, Any]] | None = None,
    summary: dict[str, Any] | None = None,
    hydra_only: bool = False,
    write_summary: bool = True,
    sweep_id: str | None = "2026-11-22_14-03-11",
    manifest: dict[str, Any] | None = None,
    held_out: tuple[list[float], list[int]] | None = None,
) -> Path:
    """One run directory. ``hydra_only`` leaves only .hydra/ (a cell that never started)."""
    name = name or ",".join(overrides) or "run"
    run_dir = sweep_dir / name
    (run_dir / ".hydra").mkdir(parents=True, exist_ok=True)
    config = config_for(overrides)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (run_dir / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if hydra_only:
        return run_dir

    config_hash = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    manifest = {
        "run_name": name,
        "overrides": overrides,
        "command": "python -m ftsweep " + " ".join(overrides),
        "config": config,
        "config_hash": config_hash,
        "seed": config["seed"],
        "sweep": {"id": sweep_id, "dir": str(sweep_dir)} if sweep_id else None,
        "git": {"commit": "abc123def4567890", "dirty": False},
        "packages": packages or PACKAGES,
        "python": "3.11.7",
        "platform": "Linux-6.1-x86_64",
        "device": {"type": "cpu", "name": "cpu", "count": 0},
        "data_fingerprint": "9b1c" + str(config["data"]["n"]),
        "created_at": "2026-11-22T14:03:12Z",
    } | (manifest or {})
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2))

    if metrics is None:
        metrics = curve(eval_loss if eval_loss is not None else 4.0)
        if status != "ok":
            metrics = metrics[: len(metrics) // 2]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))

    if held_out is not None:  # held_out_losses.json: (loss sums, tokens) per held-out example
        (run_dir / "held_out_losses.json").write_text(json.dumps({"step": 150, "loss_sums": held_out[0], "tokens": held_out[1]}))

    if write_summary:
        done = status == "ok"
        body = {
            "status": status,
            "run_name": name,
            "config_hash": config_hash,
            "eval_loss": eval_loss if done else None,
            "best_eval_loss": eval_loss if done else None,
            "best_step": 150 if done else None,
            "baseline_eval_loss": 5.5,
            "perplexity": round(2.718281828 ** eval_loss, 4) if done and eval_loss is not None else None,
            "train_loss": eval_loss + 0.2 if done and eval_loss is not None else None,
            "task_metrics": task_metrics or {},
            "trainable_params": 68224 * config["lora"]["r"] // 8,
            "total_params": 431360,
            "trainable_share": 0.158,
            "steps": 150 if done else 70,
            "tokens_seen": 120000,
            "tokens_per_second": 2900.0,
            "padding_efficiency": 0.93,
            "wall_seconds": 48.2,
            "train_seconds": 40.1,
            "eval_seconds": 4.3,
            "peak_memory_bytes": 812000000,
            "memory_estimate_bytes": None,
            "oom_retries": 0,
            "started_at": "2026-11-22T14:03:12Z",
            "finished_at": "2026-11-22T14:04:00Z" if done else None,
            "error": error,
        } | (summary or {})
        (run_dir / "summary.json").write_text(json.dumps(body, indent=2))
    return run_dir


# The 2x2 sweep of the docs (lora.r=8,16 x optim.lr=1e-4,3e-4) with two seeds per cell.
# eval_loss by (r, lr, seed): chosen so every mean and std is easy to check by hand.
GRID_2X2 = {
    ("8", "1e-4"): (3.60, 3.70),
    ("8", "3e-4"): (3.30, 3.40),
    ("16", "1e-4"): (3.50, 3.50),
    ("16", "3e-4"): (3.10, 3.30),
}


def write_2x2(sweep_dir: Path, seeds: bool = True) -> Path:
    write_sweep_json(
        sweep_dir,
        "2026-11-22_14-03-11",
        "python -m ftsweep -m lora.r=8,16 optim.lr=1e-4,3e-4" + (" seed=1,2" if seeds else ""),
        {"lora.r": ["8", "16"], "optim.lr": ["1e-4", "3e-4"]} | ({"seed": ["1", "2"]} if seeds else {}),
    )
    for (r, lr), losses in GRID_2X2.items():
        for seed, loss in zip(("1", "2"), losses if seeds else losses[:1]):
            overrides = [f"lora.r={r}", f"optim.lr={lr}"] + ([f"seed={seed}"] if seeds else [])
            write_run(sweep_dir, overrides, eval_loss=loss)
    return sweep_dir


# ---- sweeps of one, two and three factors and a search, for the figures' tests and a look by eye

VARIANT_LOSSES = {"lora": (3.40, 3.46, 3.43), "dora": (3.38, 3.44, 3.41), "rslora": (3.20, 3.24, 3.22),
                  "pissa": (3.60, 3.50, 3.55)}


def write_variants(sweep_dir: Path) -> Path:
    """One factor, categorical: four LoRA variants, three seeds each."""
    write_sweep_json(sweep_dir, "2026-11-22_15-00-00", "python -m ftsweep -m lora=lora,dora,rslora,pissa seed=1,2,3",
                     {"lora": list(VARIANT_LOSSES), "seed": ["1", "2", "3"]}, swept=["lora", "seed"])
    for variant, losses in VARIANT_LOSSES.items():
        for seed, loss in zip(("1", "2", "3"), losses):
            write_run(sweep_dir, [f"lora={variant}", f"seed={seed}"], eval_loss=loss)
    return sweep_dir


def write_three(sweep_dir: Path) -> Path:
    """Three factors, one of them a long list: lora.r x optim.lr x lora.target_modules, one seed."""
    targets = {"[q_proj,v_proj]": 0.0, "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]": -0.2}
    write_sweep_json(sweep_dir, "2026-11-22_16-00-00",
                     "python -m ftsweep -m lora.r=8,16 optim.lr=1e-4,3e-4 lora.target_modules=" + ",".join(targets),
                     {"lora.r": ["8", "16"], "optim.lr": ["1e-4", "3e-4"], "lora.target_modules": list(targets)})
    for (r, lr), (loss, _) in GRID_2X2.items():
        for target, shift in targets.items():
            write_run(sweep_dir, [f"lora.r={r}", f"optim.lr={lr}", f"lora.target_modules={target}"],
                      name=f"r{r}-lr{lr}-t{len(target)}", eval_loss=round(loss + shift, 4))
    return sweep_dir


# Trials an Optuna study sampled: (lr as Hydra passes it, lora.r, eval_loss or None for a failed trial).
OPTUNA_TRIALS = [
    ("0.00012345678901234567", "8", 3.42),
    ("0.0006789012345678901", "16", 3.18),
    ("3.3333333333333335e-05", "4", 3.81),
    ("0.00030000000000000003", "16", 3.25),
    ("0.0009123456789012345", "32", None),
    ("0.00045678901234567891", "8", 3.29),
]


def write_optuna(sweep_dir: Path) -> Path:
    """A search: every trial a different learning rate, so most (lr, r) cells were never tried."""
    write_sweep_json(sweep_dir, "2026-11-22_17-00-00", "python -m ftsweep -m hparams_search=optuna",
                     {"hparams_search": ["optuna"], "optim.lr": [lr for lr, _, _ in OPTUNA_TRIALS],
                      "lora.r": sorted({r for _, r, _ in OPTUNA_TRIALS}, key=int)},
                     swept=["lora.r", "optim.lr"])
    for i, (lr, r, loss) in enumerate(OPTUNA_TRIALS):
        overrides = [f"optim.lr={lr}", f"lora.r={r}"]
        if loss is None:
            write_run(sweep_dir, overrides, name=f"trial{i}", status="failed",
                      error={"type": "ValueError", "message": "loss is nan at step 4"})
        else:
            write_run(sweep_dir, overrides, name=f"trial{i}", eval_loss=loss)
    return sweep_dir
