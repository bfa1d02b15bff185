"""hydra/launcher=gpu_pool: one job per GPU, every listed GPU kept busy until the grid is done.

    python -m ftsweep -m lora.r=8,16,32,64 hydra/launcher=gpu_pool hydra.launcher.gpus=[0,1,2,3]
    python -m ftsweep -m seed=1,2,3,4 hydra/launcher=gpu_pool hydra.launcher.gpus=[0,1] hydra.launcher.jobs_per_gpu=2

Each job runs in a fresh process whose CUDA_VISIBLE_DEVICES names exactly one
device, set before the job imports torch, so "cuda:0" inside the job is that
device. A pool of len(gpus) x jobs_per_gpu slots hands the next job to the
first free slot. Every start and end is appended to <sweep dir>/gpu_pool.jsonl
(job, overrides, device, start, end, status). Device ids are passed through as
written, so the pool behaves the same with fake ids on a CPU-only machine.
"""

# No `from __future__ import annotations`: Hydra imports plugin modules without registering them in
# sys.modules, and dataclasses then cannot resolve string annotations.
import logging
import multiprocessing
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List, Optional, Sequence

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from ftsweep.artifacts import GPU_POOL_LOG, POOL_CRASHED, append_jsonl

log = logging.getLogger(__name__)


@dataclass
class GpuPoolConf:
    _target_: str = "hydra_plugins.ftsweep_launchers.gpu_pool.GpuPoolLauncher"
    gpus: List[Any] = field(default_factory=lambda: [0])  # device ids for CUDA_VISIBLE_DEVICES, one per slot
    jobs_per_gpu: int = 1  # > 1 runs several small jobs on each device at once


ConfigStore.instance().store(group="hydra/launcher", name="gpu_pool", node=GpuPoolConf, provider="ftsweep")


def _execute(payload: bytes, device: str) -> JobReturn:
    """Runs in the child process: pin the device first, then run the job as Hydra's own launchers do."""
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    import importlib

    import cloudpickle

    from hydra.core.hydra_config import HydraConfig
    from hydra.core.singleton import Singleton
    from hydra.core.utils import run_job, setup_globals

    # Hydra's global state holds OmegaConf resolvers (closures): plain pickle cannot carry them, cloudpickle can.
    module, qualname, idx, overrides, hydra_context, config, singleton_state = cloudpickle.loads(payload)
    setup_globals()
    Singleton.set_state(singleton_state)
    task_function = getattr(importlib.import_module(module), qualname)
    task_function = getattr(task_function, "__wrapped__", task_function)  # the function under @hydra.main
    sweep_config = hydra_context.config_loader.load_sweep_config(config, list(overrides))
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = f"{sweep_config.hydra.job.name}_{idx}"
        sweep_config.hydra.job.num = idx
    HydraConfig.instance().set_config(sweep_config)
    ret = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    # Send back what sweepers read (status, return value, where it ran), not the configs: they hold this
    # module's dataclass, which pickle cannot find again under Hydra's way of importing plugins.
    value = ret._return_value
    if ret.status == JobStatus.FAILED:
        value = RuntimeError(f"{type(value).__name__}: {value}")
    return JobReturn(overrides=ret.overrides, status=ret.status, _return_value=value, working_dir=ret.working_dir,
                     task_name=ret.task_name)


class GpuPoolLauncher(Launcher):
    def __init__(self, gpus: Sequence[Any] = (0,), jobs_per_gpu: int = 1) -> None:
        self.gpus = [str(g) for g in gpus]
        self.jobs_per_gpu = int(jobs_per_gpu)
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.task_function, self.hydra_context = config, task_function, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import cloudpickle
        from hydra.core.singleton import Singleton
        from hydra.core.utils import configure_log, setup_globals

        if not self.gpus or self.jobs_per_gpu < 1:
            raise ValueError("hydra.launcher.gpus must list at least one device and jobs_per_gpu must be >= 1, "
                             "e.g. hydra.launcher.gpus=[0,1]")
        setup_globals()
        assert self.config is not None and self.hydra_context is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        pool_log = sweep_dir / GPU_POOL_LOG

        # 2 GPUs x 2 jobs per GPU = 4 slots: ["0", "0", "1", "1"] -> at most 2 jobs on each device at a time.
        free = [g for g in self.gpus for _ in range(self.jobs_per_gpu)]
        log.info("gpu_pool: %d jobs over devices %s, %d per device", len(job_overrides), ",".join(self.gpus), self.jobs_per_gpu)
        module, qualname = self.task_function.__module__, self.task_function.__qualname__
        singleton_state = Singleton.get_state()
        results: dict[int, JobReturn] = {}
        pending: dict[Any, tuple[int, str, float, Sequence[str]]] = {}
        queue = list(enumerate(job_overrides))
        # spawn: a fresh interpreter per job, so CUDA_VISIBLE_DEVICES is set before CUDA initialises.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=len(free), mp_context=ctx, max_tasks_per_child=1) as pool:
            while queue or pending:
                while queue and free:
                    i, overrides = queue.pop(0)
                    device = free.pop(0)
                    idx = initial_job_idx + i
                    log.info("\t#%d on device %s : %s", idx, device, " ".join(filter_overrides(overrides)))
                    payload = cloudpickle.dumps((module, qualname, idx, list(overrides), self.hydra_context, self.config,
                                                 singleton_state))
                    future = pool.submit(_execute, payload, device)
                    pending[future] = (i, device, time.time(), overrides)
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                for future in done:
                    i, device, start, overrides = pending.pop(future)
                    free.append(device)
                    try:
                        ret = future.result()
                        status = ret.status.name.lower()
                    except Exception as exc:  # noqa: BLE001 - the child died (killed, out of host memory)
                        ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=exc)
                        status = POOL_CRASHED
                    results[i] = ret
                    append_jsonl(pool_log, {"job": initial_job_idx + i, "overrides": list(overrides), "device": device,
                                            "start": round(start, 3), "end": round(time.time(), 3), "status": status})
        return [results[i] for i in range(len(job_overrides))]
