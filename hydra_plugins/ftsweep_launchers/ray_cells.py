"""hydra/launcher=ray: every sweep cell a Ray task holding one GPU, or a share of one, here or on a Ray cluster.

    python -m ftsweep -m lora.r=4,8,16,32 hydra/launcher=ray                                # this machine's GPUs
    python -m ftsweep -m seed=1,2,3,4 hydra/launcher=ray hydra.launcher.gpus_per_cell=0.5   # two cells per GPU
    python -m ftsweep -m lora.r=8,16 hydra/launcher=ray hydra.launcher.address=auto         # a running cluster

Built on hydra-ray-launcher (pip install "ftsweep[ray]"), whose `ray.init` and
`ray.remote` dicts pass through to Ray; RayCellsConf below lists the knobs (a
YAML file of the same name would be matched against hydra-ray-launcher's own
schema and warned about on every run). Ray starts a cell when a GPU (or the asked share of one) is free and sets
the cell's CUDA_VISIBLE_DEVICES before the cell imports torch, so "cuda:0" in a
cell is its own device. Each cell runs in a fresh worker process (max_calls=1):
nothing global leaks from one cell into the next. A cell that an earlier run of
the sweep finished is skipped here, in this process, as the basic launcher
skips it: no worker starts for it. A cell whose worker dies is
recorded as failed and the others go on. Every finished cell appends a line to
<sweep dir>/gpu_pool.jsonl: job, overrides, device, start, end, status.
"""

# No `from __future__ import annotations`: the dataclass below is a Hydra schema and its types must stay real.
import copy
import importlib.util
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.singleton import Singleton
from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

try:
    # hydra-ray-launcher registers its own hydra/launcher=ray on import; importing it first lets ours replace it
    # whatever order Hydra scans plugins in (a module already imported is not run again).
    import hydra_plugins.hydra_ray_launcher._config  # noqa: F401

    # Whether Ray is there, without importing it: Hydra imports every plugin on every command, and `import ray`
    # made `--cfg job` take 0.77 s instead of 0.37 s on 2 CPU cores; only a sweep on this launcher imports it.
    RAY_MISSING = None if importlib.util.find_spec("ray") else ImportError("No module named 'ray'")
except ImportError as exc:  # the [ray] extra is not installed: hydra/launcher=ray says so when used
    RAY_MISSING = exc

log = logging.getLogger(__name__)

# Passed on to every cell, so that a cell on another node of a cluster sees what this shell set. Names that look
# like secrets stay behind (Ray shows a task's environment in its dashboard): set tracker keys on the nodes.
FORWARD_PREFIXES = ("FTSWEEP_", "HF_", "TRANSFORMERS_", "WANDB_", "SWANLAB_", "TOKENIZERS_")
SECRET_PARTS = ("KEY", "TOKEN", "SECRET", "PASSWORD")


def forwarded_env(environ: Dict[str, str]) -> Dict[str, str]:
    return {k: v for k, v in environ.items()
            if k.startswith(FORWARD_PREFIXES) and not any(p in k.upper() for p in SECRET_PARTS)}


def _run_cell(hydra_context: Any, sweep_config: DictConfig, task_function: Any, singleton_state: Any) -> tuple:
    """Runs inside the Ray worker: the job as hydra-ray-launcher runs it, timed, with the device Ray gave it."""
    from hydra_plugins.hydra_ray_launcher._launcher_util import _run_job

    start = time.time()
    ret = _run_job(hydra_context=hydra_context, sweep_config=sweep_config, task_function=task_function,
                   singleton_state=singleton_state)
    # Send back what sweepers read (status, return value, where it ran), not the configs.
    value = ret._return_value
    if ret.status == JobStatus.FAILED:
        value = RuntimeError(f"{type(value).__name__}: {value}")
    slim = JobReturn(overrides=ret.overrides, status=ret.status, _return_value=value, working_dir=ret.working_dir,
                     task_name=ret.task_name)
    return slim, {"device": os.environ.get("CUDA_VISIBLE_DEVICES"), "start": start, "end": time.time()}


@dataclass
class RayCellsConf:
    _target_: str = "hydra_plugins.ftsweep_launchers.ray_cells.RayCellsLauncher"
    # null: start Ray on this machine; auto: join the cluster `ray start --head` made here; ray://HOST:10001 from afar
    address: Optional[str] = None
    gpus_per_cell: float = 1.0  # 1: a GPU of its own; 0.5: two small cells share a GPU; 0: CPU-only cells
    cpus_per_cell: float = 1.0  # CPU cores a cell holds (Ray schedules by them too); also its OMP_NUM_THREADS
    env: Dict[str, str] = field(default_factory=dict)  # more environment variables for every cell: +hydra.launcher.env.HF_HOME=/nfs/hf
    # Passed to Ray as they are. init: ray.init arguments; num_gpus and num_cpus declare what a Ray started here may
    # hand out (null: what it finds; CUDA_VISIBLE_DEVICES limits the GPUs). remote: ray.remote options per cell.
    ray: Dict[str, Any] = field(default_factory=lambda: {
        "init": {"num_gpus": None, "num_cpus": None, "include_dashboard": False},
        "remote": {"max_retries": 1},  # a cell whose worker died (a node lost) runs once more, from its checkpoint
    })


ConfigStore.instance().store(group="hydra/launcher", name="ray", node=RayCellsConf, provider="ftsweep")


class RayCellsLauncher(Launcher):
    def __init__(self, ray: DictConfig, address: Optional[str], gpus_per_cell: float, cpus_per_cell: float,
                 env: DictConfig) -> None:
        self.ray_cfg = ray
        self.address = address
        self.gpus_per_cell = float(gpus_per_cell)
        self.cpus_per_cell = float(cpus_per_cell)
        self.env = {str(k): str(v) for k, v in (env or {}).items()}
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def _init_kwargs(self) -> Dict[str, Any]:
        init = dict(OmegaConf.to_container(self.ray_cfg.get("init") or {}, resolve=True))
        init = {k: v for k, v in init.items() if v is not None}
        if self.address:
            local_only = sorted(k for k in ("num_gpus", "num_cpus", "object_store_memory", "resources") if k in init)
            if local_only:
                raise ValueError(f"hydra.launcher.ray.init.{local_only[0]} only applies to a Ray started here, not to "
                                 f"address={self.address}: drop it, or drop hydra.launcher.address to start Ray here")
            init["address"] = self.address
        else:
            # Cells hand Ray only their configs and results: a small object store starts faster and spares memory.
            init.setdefault("object_store_memory", 78643200)
        return init

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import importlib

        from ftsweep.artifacts import GPU_POOL_LOG

        if RAY_MISSING is not None:
            raise ImportError(f'hydra/launcher=ray needs Ray: pip install "ftsweep[ray]" ({RAY_MISSING})')
        import ray

        if self.gpus_per_cell < 0 or self.cpus_per_cell <= 0:
            raise ValueError(f"hydra.launcher.gpus_per_cell must be >= 0 and cpus_per_cell > 0 (got "
                             f"{self.gpus_per_cell:g} and {self.cpus_per_cell:g}), e.g. hydra.launcher.gpus_per_cell=0.5")
        if self.gpus_per_cell > 1 and not self.gpus_per_cell.is_integer():
            raise ValueError(f"hydra.launcher.gpus_per_cell={self.gpus_per_cell:g}: a share above 1 must be a whole "
                             "number of GPUs, e.g. 1 or 0.5")
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        pool_log = sweep_dir / GPU_POOL_LOG

        if not ray.is_initialized():
            init = self._init_kwargs()
            log.info("ray.init(%s)", ", ".join(f"{k}={v!r}" for k, v in init.items()))
            ray.init(**init)
        resources = ray.cluster_resources()
        log.info("ray: %d cells, %g GPU and %g CPU each; the cluster has %s", len(job_overrides), self.gpus_per_cell,
                 self.cpus_per_cell, resources)
        self._check_gpus(float(resources.get("GPU", 0)))

        # This module as Python registers it (Hydra's plugin scan does not), so Ray ships the function by name.
        module = importlib.import_module(__name__)
        env = {**forwarded_env(dict(os.environ)), "OMP_NUM_THREADS": str(max(1, int(self.cpus_per_cell))), **self.env}
        options = dict(OmegaConf.to_container(self.ray_cfg.get("remote") or {}, resolve=True))
        runtime_env = dict(options.pop("runtime_env", None) or {})
        runtime_env["env_vars"] = {**env, **(runtime_env.get("env_vars") or {})}
        options = {"max_calls": 1, **options, "num_gpus": self.gpus_per_cell, "num_cpus": self.cpus_per_cell,
                   "runtime_env": runtime_env}
        remote_cell = ray.remote(**options)(module._run_cell)

        singleton_state = Singleton.get_state()
        pending: Dict[Any, tuple] = {}
        results: Dict[int, JobReturn] = {}
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
                sweep_config.hydra.job.num = idx
            if _finished(sweep_config):
                # The job reads the cell's summary and returns: a worker would take seconds to start and import
                # torch for that, on whichever node Ray picks (a rerun of a 100-cell sweep started 100 of them).
                results[i] = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                                     config=sweep_config, job_dir_key="hydra.sweep.dir",
                                     job_subdir_key="hydra.sweep.subdir", configure_logging=False)
                continue
            ref = remote_cell.remote(self.hydra_context, sweep_config, self.task_function, singleton_state)
            pending[ref] = (i, list(overrides), time.time())

        try:
            results.update(self._collect(ray, pending, initial_job_idx, pool_log))
        except KeyboardInterrupt:
            _stop_cells(ray, list(pending))
            raise
        return [results[i] for i in range(len(job_overrides))]

    def _check_gpus(self, gpus: float) -> None:
        """A cell that asks for more GPU than there is waits for it forever (Ray's autoscaler only says every half
        minute that no node can hold it). A Ray started here never gets more: that is an error. A cluster may be
        given nodes by its autoscaler: that is a warning."""
        if self.gpus_per_cell <= gpus:
            return
        problem = (f"each cell asks for {self.gpus_per_cell:g} GPU (hydra.launcher.gpus_per_cell) and the Ray "
                   f"{'cluster at ' + self.address if self.address else 'started here'} has {gpus:g}")
        if self.address:
            log.warning("%s: the cells wait until nodes with GPUs join", problem)
            return
        raise ValueError(f"hydra/launcher=ray: {problem}; on a machine without GPUs set hydra.launcher.gpus_per_cell=0 "
                         "(a CPU core per cell), or make the GPUs visible (CUDA_VISIBLE_DEVICES)")

    def _collect(self, ray, pending: Dict[Any, tuple], initial_job_idx: int, pool_log: Path) -> Dict[int, JobReturn]:
        from ftsweep.artifacts import POOL_CRASHED, append_jsonl

        results: Dict[int, JobReturn] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                i, overrides, submitted = pending.pop(ref)
                try:
                    ret, where = ray.get(ref)
                    status = ret.status.name.lower()
                except Exception as exc:  # noqa: BLE001 - the worker died (node lost, killed, out of host memory)
                    log.error("cell #%d died: %s", initial_job_idx + i, str(exc).splitlines()[0] if str(exc) else exc)
                    ret = JobReturn(overrides=overrides, status=JobStatus.FAILED, _return_value=RuntimeError(str(exc)))
                    where, status = {"device": None, "start": submitted, "end": time.time()}, POOL_CRASHED
                results[i] = ret
                append_jsonl(pool_log, {"job": initial_job_idx + i, "overrides": overrides, "device": where["device"],
                                        "start": round(where["start"], 3), "end": round(where["end"], 3),
                                        "status": status})
        return results


def _finished(sweep_config: DictConfig) -> bool:
    """Whether the cell's job would only skip it (ftsweep.cli.skips), for the directory and the job config that
    Hydra's run_job gives it."""
    from ftsweep.cli import skips

    hydra_config = HydraConfig.instance()
    before = hydra_config.cfg
    hydra_config.set_config(sweep_config)  # the cell's directory name resolves ${hydra:...} from it
    try:
        run_dir = Path(str(sweep_config.hydra.sweep.dir)) / str(sweep_config.hydra.sweep.subdir)
        job_cfg = copy.deepcopy(sweep_config)
        with read_write(job_cfg), open_dict(job_cfg):
            del job_cfg["hydra"]
        return skips(job_cfg, run_dir)
    finally:
        hydra_config.cfg = before


# How long a stopped pool waits for its running cells to save their checkpoints: a 7B adapter and its optimizer
# state take seconds to write; a second Ctrl-C stops the wait at once.
STOP_GRACE_S = 300


def _stop_cells(ray, refs: list) -> None:
    """Ctrl-C (or SIGTERM) reached this driver, not the cells' workers, which Ray runs in sessions of their own.
    ray.cancel raises KeyboardInterrupt inside each running cell, which then saves a checkpoint and marks itself
    interrupted, as under the basic launcher; cells not started yet are dropped. Without it the driver's exit took
    the workers down mid-step, leaving their runs `running` and losing the steps since the last checkpoint."""
    if not refs:
        return
    log.warning("stopping %d cell(s): each running one saves a checkpoint first (Ctrl-C again to stop at once)", len(refs))
    for ref in refs:
        ray.cancel(ref)
    ray.wait(refs, num_returns=len(refs), timeout=STOP_GRACE_S)
