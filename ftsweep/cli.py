"""The ``@hydra.main`` entry: ``python -m ftsweep`` and the ``ftsweep`` script.

Validates the composed config (once, here), then picks train / plan / preview.
Heavy imports (torch, transformers) happen only inside the mode that needs
them, so ``--help`` and ``--cfg job`` answer fast.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from ftsweep import artifacts, runtime
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
runtime.quiet_imports()
runtime.skip_exit_collection()


class Stopped(BaseException):
    """Ctrl-C or SIGTERM interrupted a run: it saved a checkpoint; nothing further starts.

    A BaseException, like the KeyboardInterrupt it stands for: Hydra's launchers catch
    Exceptions per job and go on with the next cell.
    """

    def __init__(self, summary: dict, run_dir: Path, sweep: dict | None):
        self.run_dir, self.sweep = run_dir, sweep
        message = (summary.get("error") or {}).get("message") or ""
        self.exit_code = runtime.exit_code(message)
        super().__init__(message)


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


class Escaped(BaseException):
    """Carries a single run's error past Hydra's job wrapper, which would print its own
    "Error executing job with overrides" line to stderr for any Exception; main() unwraps it."""

    def __init__(self, error: Exception):
        self.error = error
        super().__init__(str(error))


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="config")
def app(cfg: DictConfig):
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return _dispatch(cfg)
    except Exception as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the launcher records the cell as failed and goes on
        raise Escaped(exc) from exc


def _dispatch(cfg: DictConfig):
    run_dir, name, overrides, sweep, swept = _job_context()
    if cfg.mode in ("plan", "preview"):
        config_mod.validate(cfg)  # planning and previewing need no GPU: device rules do not apply
        if cfg.mode == "plan":
            from ftsweep import plan

            return plan.main(cfg, run_dir, name)
        from ftsweep.data import preview

        return preview.main(cfg)

    from ftsweep import distributed
    from ftsweep.run import describe

    summary = train(cfg, run_dir, name, overrides, sweep, swept)
    if summary["status"] == artifacts.INTERRUPTED:
        raise Stopped(summary, run_dir, sweep)
    if sweep is None and summary["status"] in artifacts.UNFINISHED:
        raise RunFailed((summary.get("error") or {}).get("message") or summary["status"], run_dir)
    if distributed.is_main():
        print(describe(summary, run_dir), flush=True)
    # The Optuna sweeper optimizes what the job returns.
    return _objective(summary, cfg.get("hparams_search_metric") or "eval_loss")


def train(cfg: DictConfig, run_dir: Path, name: str, overrides: list[str], sweep: dict | None = None,
          swept: list[str] | None = None) -> dict:
    """Validate the config (with the device rules), then run; a refused config is recorded as failed."""
    import torch

    from ftsweep.run import Run

    run = Run(cfg, run_dir, name, overrides, sweep, swept)
    try:
        config_mod.validate(cfg, cuda=torch.cuda.is_available())
    except config_mod.ConfigError as exc:
        return run.execute(refused=exc)  # like any other failure: a sweep goes on
    return run.execute()


def _objective(summary: dict, metric: str) -> float:
    """The value a search sweeper optimizes; a run without it scores the worst value for the direction."""
    from hydra.core.hydra_config import HydraConfig

    from ftsweep import metrics

    value = metrics.summary_value(summary, metric)
    if value is not None and summary.get("status") in artifacts.HAS_RESULT:
        return value
    return metrics.worst(str(HydraConfig.get().sweeper.get("direction", "minimize")) == "maximize")


def _stopped_message(exc: Stopped) -> str:
    """What was stopped, what never started, and the command that goes on from there."""
    signame = "SIGTERM" if exc.exit_code == 143 else "Ctrl-C"
    if exc.sweep is None:
        return (f"stopped by {signame}; the run saved a checkpoint (run dir: {exc.run_dir}); "
                "re-run the same command to resume from it")
    from ftsweep.sweep.callbacks import close_sweep, unstarted_cells

    record = close_sweep(Path(exc.sweep["dir"]))
    waiting = unstarted_cells(Path(exc.sweep["dir"]), record)
    not_run = ", ".join(waiting) if waiting is not None else "the remaining cells"
    resume_cmd = f"{record.get('command')} hydra.sweep.dir={shlex.quote(str(exc.sweep['dir']))}"  # the same sweep dir resumes
    return (f"stopped by {signame} during {exc.run_dir.name} (checkpoint saved); no further cell was started; "
            f"not yet run: {not_run or 'none'}; resume with: {resume_cmd}")


def main() -> None:
    """Run the Hydra app; turn any error into one line and a non-zero exit code.

    HYDRA_FULL_ERROR=1 (set by the user) keeps the full traceback.
    """
    from ftsweep import distributed
    from ftsweep.errors import one_line
    from ftsweep.sweep.callbacks import SweepFailed

    sys.argv += distributed.launcher_overrides(sys.argv[1:])  # torchrun: one shared run directory
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if user_full_error:
        os.environ["FTSWEEP_DEBUG"] = "1"  # a run's own failure prints its traceback too (it is caught to be recorded)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's multi-line print
    try:
        try:
            app()
        except Escaped as escaped:
            raise escaped.error from None
    except SystemExit:
        raise
    except Stopped as exc:
        print(f"ftsweep: {_stopped_message(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a run: stop at once
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
