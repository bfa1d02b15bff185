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

from ftsweep import artifacts, runtime
from ftsweep import config as config_mod
from ftsweep import overrides as ovr

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

    global _single_run
    _single_run = None if sweep else (run_dir, _single_resume(run_dir))
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
    from ftsweep.run import Run

    run = Run(cfg, run_dir, name, overrides, sweep, swept)
    try:
        config_mod.validate(cfg, cuda=_cuda() if config_mod.cpu_problems(cfg) else None)
    except config_mod.ConfigError as exc:
        return run.execute(refused=exc)  # like any other failure: a sweep goes on
    return run.execute()


def skips(cfg: DictConfig, run_dir: Path) -> bool:
    """Whether this cell's job only skips it (finished ok with the same config, skip_finished on), decided as
    ``Run.execute`` decides it first, from the run directory's summary alone: a launcher that starts a process per
    cell (Ray) runs such a cell where it is instead of starting a worker that imports torch to read one file."""
    from ftsweep import resume
    from ftsweep.config import config_hash

    if cfg.mode != "train":  # plan and preview train nothing, so skip nothing
        return False
    previous = artifacts.read_summary(run_dir)
    from ftsweep.data import cache

    return resume.decide(previous, config_hash(cfg), bool(cfg.skip_finished), None,
                         cache.data_identity(cfg.data)).action == resume.SKIP


def _cuda() -> bool:
    """Whether torch sees a CUDA GPU. Asked only for a config with a setting that needs one: the answer costs
    torch's import, which a config refused for any other reason need not wait for."""
    import torch

    return torch.cuda.is_available()


def _objective(summary: dict, metric: str) -> float:
    """The value a search sweeper optimizes; a run without it scores the worst value for the direction."""
    from hydra.core.hydra_config import HydraConfig

    from ftsweep import metrics

    value = metrics.summary_value(summary, metric)
    if value is not None and summary.get("status") in artifacts.HAS_RESULT:
        return value
    return metrics.worst(str(HydraConfig.get().sweeper.get("direction", "minimize")) == "maximize")


# The single run this command is training, and the command that resumes it, for the stop line: printed whether the
# run stopped itself or a second Ctrl-C left it at once.
_single_run: tuple[Path, str] | None = None


def _single_resume(run_dir: Path) -> str:
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    return ovr.resume_at(ovr.command(list(hc.overrides.task), hydra=list(hc.overrides.hydra)), run_dir.resolve(), multirun=False)


def _signal_name(code: int) -> str:
    """130 -> Ctrl-C, 143 -> SIGTERM, 140 -> SIGUSR2."""
    return runtime.signal_name(code - 128)


def _stopped_message(exc: Stopped) -> str:
    """What was stopped, what never started, and the command that goes on from there."""
    signame = _signal_name(exc.exit_code)
    if exc.sweep is None:
        return f"stopped by {signame}; the run saved a checkpoint (run dir: {exc.run_dir}); resume with: {_single_run[1]}"
    return f"stopped by {signame} during {exc.run_dir.name} (checkpoint saved); " + _sweep_left(Path(exc.sweep["dir"]))


def _sweep_left(sweep_dir: Path) -> str:
    """A stopped sweep: sweep.json closed with its counts, the cells that never started, the resume command."""
    from ftsweep.sweep.callbacks import close_sweep, unstarted_cells

    record = close_sweep(sweep_dir)
    waiting = unstarted_cells(sweep_dir, record)
    counts = record.get("counts") or {}
    if waiting == [] and not counts.get(artifacts.INTERRUPTED) and not counts.get(artifacts.RUNNING):
        # Every cell had run to its end: only the report was left (stopped while it was being written).
        return ("every cell had run; the report was not written; "
                f"write it with: python -m ftsweep.report {ovr.shell_word(str(sweep_dir))}")
    not_run = ", ".join(waiting) if waiting is not None else "the remaining cells"
    return (f"no further cell was started; not yet run: {not_run or 'none'}; "
            f"resume with: {ovr.resume_at(record.get('command'), sweep_dir, multirun=True)}")


def _interrupted_message(code: int) -> str:
    """A stop outside a run's own handling: between a sweep's cells, while its report is written, before a
    run started, or a second Ctrl-C while the first one's checkpoint is saved."""
    from ftsweep.sweep.callbacks import running_sweep

    sweep_dir = running_sweep()
    if sweep_dir is not None:
        return f"stopped by {_signal_name(code)}; " + _sweep_left(sweep_dir)
    if _single_run is not None:
        run_dir, resume = _single_run
        return f"stopped by {_signal_name(code)} (run dir: {run_dir}); resume with: {resume}"
    return f"stopped by {_signal_name(code)}"


def main() -> None:
    """Run the Hydra app; turn any error into one line and a non-zero exit code.

    HYDRA_FULL_ERROR=1 (set by the user) keeps the full traceback.
    """
    from ftsweep import distributed
    from ftsweep.errors import one_line
    from ftsweep.sweep.callbacks import SweepFailed, forget_running_sweep

    sys.argv += distributed.launcher_overrides(sys.argv[1:])  # torchrun: one shared run directory
    user_full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    if user_full_error:
        os.environ["FTSWEEP_DEBUG"] = "1"  # a run's own failure prints its traceback too (it is caught to be recorded)
    os.environ["HYDRA_FULL_ERROR"] = "1"  # let exceptions reach us instead of Hydra's multi-line print
    try:
        try:
            with runtime.stops_as_interrupt():  # SIGTERM between cells too, not only inside a run
                app()
        except Escaped as escaped:
            raise escaped.error from None
    except SystemExit:
        raise
    except Stopped as exc:
        runtime.exit_at_next_signal(exc.exit_code)
        print(f"ftsweep: {_stopped_message(exc)}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt as exc:  # outside a run's own handling: stop at once
        code = runtime.exit_code(str(exc))
        runtime.exit_at_next_signal(code)
        print(f"ftsweep: {_interrupted_message(code)}", file=sys.stderr)
        sys.exit(code)
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
        global _single_run
        _single_run = None
        forget_running_sweep()
        if not user_full_error:
            os.environ.pop("HYDRA_FULL_ERROR", None)
