"""Hydra callback for a multirun: sweep.json at start and end, the report, failed runs."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ftsweep.artifacts import SUMMARY, SWEPT_KEYS_ENV, atomic_write_json, now_iso, read_json
from ftsweep.sweep import outcome

log = logging.getLogger("ftsweep.sweep")


def _grid(overrides: list[str]) -> dict[str, list[str]]:
    """'lora.r=8,16' -> {'lora.r': ['8', '16']} (sweep syntax kept as written when not a plain list)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    grid: dict[str, list[str]] = {}
    for ov in OverridesParser.create().parse_overrides(overrides):
        if ov.is_sweep_override():
            grid[ov.get_key_element()] = [str(v) for v in ov.sweep_string_iterator()] if not ov.is_hydra_override() else []
        else:
            grid[ov.get_key_element()] = [ov.get_value_element_as_str()]
    return grid


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = list(config.hydra.overrides.task)
        self.started = now_iso()
        previous = read_json(sweep_dir / "sweep.json") or {}
        self.info = {
            "id": "_".join(sweep_dir.resolve().parts[-2:]),
            # Launcher and sweeper choices (hydra/launcher=gpu_pool ...) belong to the command too; the sweep dir does not.
            "command": "python -m ftsweep -m " + " ".join(
                [o for o in config.hydra.overrides.hydra if not o.startswith(("hydra.sweep.dir=", "hydra.run.dir=", "hydra.mode="))] + overrides),
            "overrides": overrides,
            "grid": _grid(overrides),
            "started_at": self.started,
            "finished_at": None,
            "counts": None,
            "failed_runs": [],
            "previous_invocations": previous.get("previous_invocations", []) + ([{k: previous.get(k) for k in ("command", "started_at", "finished_at", "counts")}] if previous else []),
        }
        atomic_write_json(sweep_dir / "sweep.json", self.info)
        outcome.record_failed([])
        # Run directories are named by what varies: the CLI's sweep overrides and the sweeper's own params.
        swept = [k for k, v in self.info["grid"].items() if len(v) != 1]
        swept += [str(k) for k in (config.hydra.sweeper.get("params") or {})]
        os.environ[SWEPT_KEYS_ENV] = ",".join(sorted(set(swept)))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        counts = {"total": 0, "ok": 0, "failed": 0, "interrupted": 0, "running": 0, "skipped": 0}
        failed = []
        started = getattr(self, "started", None)
        for summary_path in sorted(sweep_dir.glob(f"*/{SUMMARY}")):
            s = read_json(summary_path) or {}
            status = s.get("status", "running")
            if status == "ok" and started and (s.get("finished_at") or "") < started:
                status = "skipped"  # finished ok by an earlier invocation of this sweep (ISO times sort as text)
            counts["total"] += 1
            counts[status] = counts.get(status, 0) + 1
            if status in ("failed", "interrupted", "running"):
                failed.append((summary_path.parent.name, (s.get("error") or {}).get("message") or status))
        info = getattr(self, "info", {})
        info.update(finished_at=now_iso(), counts=counts, failed_runs=[{"run": n, "reason": r} for n, r in failed])
        atomic_write_json(sweep_dir / "sweep.json", info)
        outcome.record_failed(failed, sweep=True)
        if config.get("mode") == "plan":
            from ftsweep.plan import write_table

            print(f"plan: {write_table(sweep_dir)}", flush=True)
            return
        try:
            from ftsweep.report import build_report

            path = build_report([sweep_dir])
            print(f"report: {path}", flush=True)
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001 - a report problem must not hide the runs' results
            print(f"ftsweep: the report could not be built: {type(exc).__name__}: {exc}", file=sys.stderr)
