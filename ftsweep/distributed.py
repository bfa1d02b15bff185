"""One run over several processes: `torchrun --nproc_per_node N -m ftsweep ...` (or `accelerate launch`).

Every rank trains its share of each batch (data parallel); rank 0 alone writes
the run directory and opens trackers. The effective batch stays as configured:

    optim.micro_batch_size=8, optim.grad_accum=4 on 1 process  -> 8 x 4 x 1 = 32 sequences/step
    the same config on 2 processes                            -> 8 x 2 x 2 = 32 sequences/step

The 4-bit base is placed on each rank's own GPU (models.device_map reads LOCAL_RANK).
"""

from __future__ import annotations

import datetime
import logging
import os

log = logging.getLogger("ftsweep")


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return rank() == 0


def accumulation(grad_accum: int, world: int) -> int:
    """grad_accum per process so that micro x accum x world stays what one process would do."""
    if world <= 1:
        return grad_accum
    per_rank = max(1, grad_accum // world)
    if per_rank * world != grad_accum:
        log.warning("optim.grad_accum=%d is not a multiple of %d processes: the effective batch becomes micro x %d x %d",
                    grad_accum, world, per_rank, world)
    return per_rank


def launcher_overrides(argv: list[str]) -> list[str]:
    """Extra Hydra overrides so that every rank of one torchrun job shares one run directory.

    Hydra names the run directory by the start time, which ranks may read a
    second apart; under torchrun the directory is named by the rendezvous id
    instead. Only rank 0 writes Hydra's own files and log.
    """
    if world_size() <= 1 or any(a.startswith(("-m", "--multirun")) for a in argv):
        return []
    extra = []
    if not any(a.startswith("hydra.run.dir=") for a in argv):
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
        if run_id == "none":  # plain torchrun without --rdzv-id: the master port tells runs apart
            run_id = f"port{os.environ.get('MASTER_PORT', '0')}"
        extra.append(f"hydra.run.dir=outputs/{datetime.date.today():%Y-%m-%d}/torchrun-{run_id}")
    if not is_main():
        extra += ["hydra.output_subdir=null", "hydra/job_logging=disabled"]
    return extra


def init() -> None:
    """Join the process group early, so ranks can agree on resume before the Trainer starts."""
    if world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend=backend)


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.barrier()


def total(*values: int | float) -> list:
    """Per-rank values summed over all ranks: token counts (tokens/s of the whole job), a held-out loss sum.
    Whole numbers stay whole; any float makes the sum a float64 one."""
    if world_size() <= 1:
        return list(values)
    import torch
    import torch.distributed as dist

    floats = any(isinstance(v, float) for v in values)
    t = torch.tensor(values, dtype=torch.float64 if floats else torch.long,
                     device="cuda" if torch.cuda.is_available() else "cpu")
    dist.all_reduce(t)
    return [float(x) if floats else int(x) for x in t.tolist()]


def interleave(*per_rank: list | None) -> list[list] | None:
    """Lists each rank holds for its share of a dataset (examples rank, rank + world, ...), put back in dataset
    order on every rank; None if any rank has None for one of them."""
    if world_size() <= 1:
        return None if any(v is None for v in per_rank) else [list(v) for v in per_rank]
    import torch.distributed as dist

    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, per_rank)
    if any(v is None for ranks in gathered for v in ranks):
        return None
    out = []
    for k in range(len(per_rank)):
        shares = [ranks[k] for ranks in gathered]
        out.append([shares[i % len(shares)][i // len(shares)] for i in range(sum(map(len, shares)))])
    return out
