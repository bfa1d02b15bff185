"""The ``@hydra.main`` entry: ``python -m ftsweep`` and the ``ftsweep`` script.

Picks train / plan / preview. Heavy imports (torch, transformers) happen only
inside the mode that needs them, so ``--help`` and ``--cfg job`` answer fast.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ftsweep import config as config_mod
from ftsweep.artifacts import run_name

log = logging.getLogger("ftsweep")


def config_dir() -> str:
    """conf/ ships inside the package in a wheel and sits beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").exists():
            return str(candidate)
    raise FileNotFoundError("ftsweep's conf/ directory is missing from this installation; reinstall the package")


OmegaConf.register_new_resolver("ftsweep_run_name", run_name, replace=True)
config_mod.register()


def _job_context():
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hc.sweep.dir).resolve()
        sweep = {"id": "_".join(sweep_dir.parts[-2:]), "dir": str(sweep_dir)}
        name = run_dir.name
    else:
        sweep, name = None, run_name(hc.job.override_dirname)
    return run_dir, name, overrides, sweep


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def app(cfg: DictConfig):
    run_dir, name, overrides, sweep = _job_context()
    if cfg.mode == "plan":
        from ftsweep import plan

        return plan.main(cfg, run_dir, name)
    if cfg.mode == "preview":
        from ftsweep.data import preview

        return preview.main(cfg)

    from ftsweep import distributed
    from ftsweep.run import Run, describe

    from ftsweep.sweep import outcome

    summary = Run(cfg, run_dir, name, overrides, sweep).execute()
    if sweep is None and summary["status"] in ("failed", "interrupted"):
        # A single run: main() prints the one error line and exits non-zero.
        reason = (summary.get("error") or {}).get("message") or summary["status"]
        if summary["status"] == "interrupted":
            reason = f"run interrupted ({reason}); re-run the same command to resume from its last checkpoint"
        outcome.record_failed([(str(run_dir), reason)])
    elif distributed.is_main():
        print(describe(summary, run_dir), flush=True)
    # The Optuna sweeper optimizes what the job returns.
    return _objective(summary, cfg.get("hparams_search_metric") or "eval_loss")


def _objective(summary: dict, metric: str) -> float:
    """The value a search sweeper optimizes; a run without it scores the worst value for the direction."""
    from hydra.core.hydra_config import HydraConfig

    value = summary.get(metric, (summary.get("task_metrics") or {}).get(metric))
    if isinstance(value, (int, float)) and summary.get("status") in ("ok", "skipped"):
        return float(value)
    maximize = str(HydraConfig.get().sweeper.get("direction", "minimize")) == "maximize"
    return float("-inf") if maximize else float("inf")


def main() -> None:
    """Run the Hydra app; turn any error into one line and a non-zero exit code.

    HYDRA_FULL_ERROR=1 (set by the user) keeps the full traceback.
    """
    from ftsweep.errors import one_line
    from ftsweep.sweep import outcome

    from ftsweep import distributed

    sys.argv += distributed.launcher_overrides(sys.argv[1:])  # torchrun: one shared run directory
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's multi-line print
    try:
        app()
    except SystemExit:
        raise
    except KeyboardInterrupt:
        print("ftsweep: interrupted; re-run the same command to resume", file=sys.stderr)
        sys.exit(130)
    except BaseException as exc:  # noqa: BLE001
        if user_full_error:
            raise
        print(f"ftsweep: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    finally:
        if not user_full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)
    failed = outcome.failed_runs()
    if len(failed) == 1 and not outcome.was_sweep():
        run_dir, reason = failed[0]
        print(f"ftsweep: error: {reason} (run dir: {run_dir})", file=sys.stderr)
        sys.exit(1)
    if failed:
        print(f"ftsweep: {len(failed)} run(s) failed: " + "; ".join(f"{n} ({r})" for n, r in failed), file=sys.stderr)
        sys.exit(1)
