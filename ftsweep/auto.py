"""The `auto` speed knobs, resolved for one cell: the fastest path that computes the same loss.

    data.packing: auto                  padding-free batches on a CUDA GPU with flash attention (no pad token
                                        computed, no dense mask); padded batches otherwise
    data.group_by_length: auto          length-grouped batches whenever batches are padded (padding efficiency
                                        0.66 -> 0.97 on mixed-length data); off when packing
    train.gradient_checkpointing: auto  off when mode=plan's estimate without it fits the memory budget
                                        (plan.gpu_mem_gb, or the GPU's own memory when that is smaller); on otherwise

true and false always win. None of the three changes the loss that is computed, only how fast and in how much
memory, so the config hash keeps `auto` and the same cell on another device resolves again. The run records what
each became in summary.json (`auto`).
"""

from __future__ import annotations

from typing import Any

from ftsweep.metrics import GIB

AUTO = "auto"


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.lower() == AUTO


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def packing(data_cfg, task_cfg, model_cfg, cuda: bool | None = None) -> bool:
    value = data_cfg.get("packing")
    if not is_auto(value):
        return bool(value)
    if task_cfg.name != "sft":
        return False  # classification batches carry one label per row, not per token
    # sdpa and eager run a packed row as one dense block-diagonal mask: slower than padding (measured on CPU).
    attn = model_cfg.get("attn_implementation") if model_cfg is not None else None
    flash = str(attn or "").startswith("flash_attention")
    return flash and (_cuda() if cuda is None else cuda)


def group_by_length(data_cfg, task_cfg, model_cfg, cuda: bool | None = None) -> bool:
    value = data_cfg.get("group_by_length")
    if not is_auto(value):
        return bool(value)
    return not packing(data_cfg, task_cfg, model_cfg, cuda)


def memory_budget_gib(cfg, cuda: bool | None = None) -> float:
    limit = float(cfg.plan.gpu_mem_gb)
    if _cuda() if cuda is None else cuda:
        import torch

        limit = min(limit, torch.cuda.get_device_properties(0).total_memory / GIB)
    return limit


def gradient_checkpointing(cfg, cuda: bool | None = None, base=None) -> tuple[bool, float | None, float | None]:
    """(on?, the plan's GiB without checkpointing, the budget in GiB); the two numbers are None unless auto."""
    value = cfg.train.gradient_checkpointing
    if not is_auto(value):
        return bool(value), None, None
    from omegaconf import OmegaConf

    from ftsweep import plan

    without = OmegaConf.merge(cfg, {"train": {"gradient_checkpointing": False}})
    estimate = float(plan.plan_cell(without, base=base)["memory_gib"]["total"])
    budget = memory_budget_gib(cfg, cuda)
    return estimate > budget, estimate, round(budget, 2)


def resolve(cfg, cuda: bool | None = None, base=None) -> dict:
    """What each knob becomes for this cell; `auto_knobs` names those that were auto.

    ``base``: the cell's meta-device model, when the caller built it already (the planner wraps it).
    """
    cuda = _cuda() if cuda is None else cuda
    on, estimate, budget = gradient_checkpointing(cfg, cuda, base)
    out = {
        "data.packing": packing(cfg.data, cfg.task, cfg.model, cuda),
        "data.group_by_length": group_by_length(cfg.data, cfg.task, cfg.model, cuda),
        "train.gradient_checkpointing": on,
        "auto_knobs": [k for k, v in (("data.packing", cfg.data.get("packing")),
                                      ("data.group_by_length", cfg.data.get("group_by_length")),
                                      ("train.gradient_checkpointing", cfg.train.gradient_checkpointing)) if is_auto(v)],
    }
    if estimate is not None:
        out["plan_gib_without_checkpointing"], out["memory_budget_gib"] = round(estimate, 3), budget
    return out


def apply(cfg, resolved: dict) -> None:
    """Write the concrete values into cfg, so every later step reads plain booleans."""
    from omegaconf import open_dict

    with open_dict(cfg):
        for key in ("data.packing", "data.group_by_length", "train.gradient_checkpointing"):
            group, name = key.split(".")
            cfg[group][name] = bool(resolved[key])
