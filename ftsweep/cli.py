"""The ``@hydra.main`` entry: ``python -m ftsweep`` and the ``ftsweep`` script.

Validates the composed config (once, here), then picks train / plan / preview.
Heavy imports (torch, transformers) happen only inside the mode that needs
them, so ``--help`` and ``--cfg job`` answer fast.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ftsweep import artifacts
from ftsweep import config as config_mod

log = logging.getLogger("ftsweep")


def config_dir() -> str:
    """conf/ ships inside the package in a wheel and sits beside it in a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "config.yaml").exists():
            return str(candidate)
    raise FileNotFoundError("ftsweep's conf/ directory is missing from this installation; reinstall the package")


def _cell_name(overrides, sweep_dir: str) -> str:
    """Resolver for hydra.sweep.subdir: a cell's directory is named by the keys its sweep varies."""
    return artifacts.run_name(list(overrides), artifacts.swept_keys(sweep_dir))


OmegaConf.register_new_resolver("ftsweep_run_name", _cell_name, replace=True)
config_mod.register()


class RunFailed(Exception):
    """A single run (no -m) that did not finish ok: the CLI prints one line naming its directory."""

    def __init__(self, reason: str, run_dir: Path):
        self.run_dir = run_dir
        super().__init__(f"{reason} (run dir: {run_dir})")


def _job_context():
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    overrides = list(hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN:
        sweep_dir = Path(hc.sweep.dir).resolve()
        sweep = {"id": "_".join(sweep_dir.parts[-2:]), "dir": str(sweep_dir)}
        return run_dir, run_dir.name, overrides, sweep, artifacts.swept_keys(sweep_dir)
    return run_dir, artifacts.run_name(overrides), overrides, None, None


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def app(cfg: DictConfig):
    run_dir, name, overrides, sweep, swept = _job_context()
    if cfg.mode != "train":
        config_mod.validate(cfg)  # planning and previewing need no GPU: device rules do not apply
        if cfg.mode == "plan":
            from ftsweep import plan

            return plan.main(cfg, run_dir, name)
        from ftsweep.data import preview

        return preview.main(cfg)

    import torch

    from ftsweep import distributed
    from ftsweep.run import Run, describe

    run = Run(cfg, run_dir, name, overrides, sweep, swept)
    try:
        config_mod.validate(cfg, cuda=torch.cuda.is_available())
    except config_mod.ConfigError as exc:
        summary = run.execute(refused=exc)  # recorded as failed like any other failure; a sweep goes on
    else:
        summary = run.execute()
    if sweep is None and summary["status"] in artifacts.UNFINISHED:
        reason = (summary.get("error") or {}).get("message") or summary["status"]
        if summary["status"] == artifacts.INTERRUPTED:
            reason = f"run interrupted ({reason}); re-run the same command to resume from its last checkpoint"
        raise RunFailed(reason, run_dir)
    if distributed.is_main():
        print(describe(summary, run_dir), flush=True)
    # The Optuna sweeper optimizes what the job returns.
    return _objective(summary, cfg.get("hparams_search_metric") or "eval_loss")


def _objective(summary: dict, metric: str) -> float:
    """The value a search sweeper optimizes; a run without it scores the worst value for the direction."""
    from hydra.core.hydra_config import HydraConfig

    from ftsweep import metrics

    value = metrics.summary_value(summary, metric)
    if value is not None and summary.get("status") in artifacts.HAS_RESULT:
        return value
    return metrics.worst(str(HydraConfig.get().sweeper.get("direction", "minimize")) == "maximize")


def main() -> None:
    """Run the Hydra app; turn any error into one line and a non-zero exit code.

    HYDRA_FULL_ERROR=1 (set by the user) keeps the full traceback.
    """
    from ftsweep import distributed
    from ftsweep.errors import one_line
    from ftsweep.sweep.callbacks import SweepFailed

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
    except SweepFailed as exc:
        print(f"ftsweep: {exc}", file=sys.stderr)
        sys.exit(1)
    except RunFailed as exc:
        print(f"ftsweep: error: {exc}", file=sys.stderr)
        sys.exit(1)
    except BaseException as exc:  # noqa: BLE001
        if user_full_error:
            raise
        print(f"ftsweep: error: {one_line(exc)}", file=sys.stderr)
        sys.exit(1)
    finally:
        if not user_full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)
