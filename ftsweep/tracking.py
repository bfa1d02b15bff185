"""One tracker interface for a run: metrics.jsonl always, SwanLab and W&B behind it.

Each backend gets exactly one run per sweep cell, opened before training and
finished in a ``finally`` - the stock transformers integrations do neither, so
in a multirun the second job would log into the first job's run. A backend
that raises never fails training: it warns once and is switched off.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("ftsweep.tracking")


def _clean(metrics: dict) -> dict[str, float]:
    """Numbers only, finite only: trackers reject None / NaN."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class SwanLabBackend:
    name = "swanlab"

    def __init__(self, *, project, run_name, group, tags, config, mode, logdir):
        import swanlab

        self.swanlab = swanlab
        self.run = swanlab.init(project=project, experiment_name=run_name, group=group, tags=tags, config=config,
                                mode=mode, logdir=str(logdir))

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict) -> None:
        self.run.log({f"summary/{k}": v for k, v in summary.items()})
        self.swanlab.finish()


class WandbBackend:
    name = "wandb"

    def __init__(self, *, project, run_name, group, tags, config, mode, logdir):
        import wandb

        if mode == "local":
            mode = "offline"
        if os.environ.get("WANDB_MODE"):
            mode = os.environ["WANDB_MODE"]
        elif mode == "offline" and os.environ.get("WANDB_API_KEY"):
            mode = "online"  # credentials present: sync live
        Path(logdir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=project, name=run_name, group=group, tags=tags, config=config, mode=mode,
                              dir=str(logdir), reinit="finish_previous")

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict) -> None:
        for k, v in summary.items():
            self.run.summary[k] = v
        self.run.finish()


BACKENDS = {"swanlab": SwanLabBackend, "wandb": WandbBackend}


class Tracker:
    """Fan-out to the configured backends; every call is guarded."""

    def __init__(self, backends: list[Any]):
        self.backends = backends

    @classmethod
    def open(cls, logger_cfg, *, run_name: str, group: str | None, tags: list[str], config: dict, root: Path) -> "Tracker":
        backends = []
        if logger_cfg.mode == "disabled":
            return cls([])
        for name in logger_cfg.backends:
            logdir = root / ("swanlog" if name == "swanlab" else "wandb_runs")
            try:
                backends.append(BACKENDS[name](project=logger_cfg.project, run_name=run_name, group=group, tags=tags,
                                               config=config, mode=logger_cfg.mode, logdir=logdir))
            except Exception as exc:  # not installed, no network, bad key: train anyway
                log.warning("tracker %s could not start (%s: %s); training goes on, metrics.jsonl is complete",
                            name, type(exc).__name__, exc)
        return cls(backends)

    def _guard(self, backend, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            log.warning("tracker %s failed on %s (%s: %s); it is switched off for this run", backend.name, what, type(exc).__name__, exc)
            self.backends = [b for b in self.backends if b is not backend]

    def log(self, record: dict) -> None:
        step = int(record.get("step", 0))
        prefix = "eval/" if record.get("split") == "eval" else "train/"
        metrics = {prefix + k: v for k, v in _clean(record).items() if k not in ("step", "time")}
        for b in list(self.backends):
            self._guard(b, "log", b.log, metrics, step)

    def finish(self, summary: dict) -> None:
        values = _clean({k: v for k, v in summary.items() if k != "task_metrics"} | dict(summary.get("task_metrics") or {}))
        for b in list(self.backends):
            self._guard(b, "finish", b.finish, values)
        self.backends = []
