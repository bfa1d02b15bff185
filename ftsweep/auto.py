"""The `auto` speed knobs, resolved for one cell: the fastest path that trains exactly as the plain one.

    data.packing: auto                  padding-free batches on a CUDA GPU with flash attention (no pad token
                                        computed, no dense mask), or with sdpa where a packed row (micro batch x
                                        max length) is at most 4096 tokens; padded batches otherwise
    data.group_by_length: auto          off. Length-grouped batches compute little padding (padding efficiency
                                        0.66 -> 0.97 on mixed-length data) but change which examples train
                                        together: on the built-in data, 125 steps, seeds 1 and 2, the held-out
                                        loss ended at 4.878 and 4.903 grouped against 4.769 and 4.769 in sampler
                                        order. So it is the user's trade to make (true), never a default.
    train.gradient_checkpointing: auto  off when mode=plan's estimate without it fits the memory budget
                                        (plan.gpu_mem_gb: auto is the GPU's own memory); on otherwise

true and false always win. Packing and checkpointing change how fast and in how much memory, not the batches or
the loss (a packed run's losses equal the padded run's within float rounding: 1.3e-4 relative over 8 steps), so
the config hash keeps `auto` and the same cell on another device resolves again. The run records what each became
in summary.json (`auto`).
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


# The longest packed row (micro batch x max length) that sdpa packs: measured faster at this size (packing below).
SDPA_PACKED_ROW_TOKENS = 4096


def packing(data_cfg, task_cfg, model_cfg, cuda: bool | None = None, micro_batch_size: int | None = None) -> bool:
    value = data_cfg.get("packing")
    if not is_auto(value):
        return bool(value)
    if task_cfg.name != "sft":
        return False  # classification batches carry one label per row, not per token
    if not (_cuda() if cuda is None else cuda):
        # On a CPU the packed row's dense block-diagonal mask costs what the padding it saves did: the built-in data
        # (8 x 128) trained in 4.5-4.8 s packed against 4.1 s padded, bench/speed.py's (4 x 512) 2.9 s against 3.0.
        return False
    attn = str((model_cfg.get("attn_implementation") if model_cfg is not None else None) or "")
    if attn.startswith("flash_attention"):
        return True  # the kernel reads where each sequence starts: no mask, no padding
    # sdpa takes a packed row with a dense block-diagonal mask, whose size and attention work grow with the square
    # of the row: micro batch x max length. At 4 x 1024 = 4096 tokens on an H200 (Qwen2.5-0.5B shape, nf4) it
    # trained 0.40 s a step against 0.57 length-grouped; longer rows were not measured, so they stay padded.
    return attn == "sdpa" and micro_batch_size is not None and micro_batch_size * int(data_cfg.max_length) <= SDPA_PACKED_ROW_TOKENS


def group_by_length(data_cfg) -> bool:
    """Only when asked: grouping changes the batches, and with them what is learned (the module's docstring)."""
    value = data_cfg.get("group_by_length")
    return False if is_auto(value) else bool(value)


# plan.gpu_mem_gb=auto without a GPU (mode=plan on a laptop): a 24 GiB card, the common one-GPU size.
PLAN_GPU_MEM_GB = 24.0


def memory_budget_gib(cfg, cuda: bool | None = None) -> float:
    """The GPU memory a cell must fit in. plan.gpu_mem_gb=auto: the memory of the GPU this process runs on, 24 GiB
    without one. A number is the user's cap for training (a shared GPU), never more than the GPU has; mode=plan
    takes it as given, so that a machine with one card can plan for a larger one.

    With a fixed 24 the run on an H200 (139.8 GiB) turned checkpointing on for Qwen2.5-7B at micro batch 4 x 1024
    (35.2 GiB planned without it): slower training, for memory it did not need."""
    value = cfg.plan.gpu_mem_gb
    on_gpu = _cuda() if cuda is None else cuda
    gpu = None
    if on_gpu:
        import torch

        gpu = torch.cuda.get_device_properties(0).total_memory / GIB
    if is_auto(value):
        return gpu if gpu is not None else PLAN_GPU_MEM_GB
    return float(value) if gpu is None or cfg.mode == "plan" else min(float(value), gpu)


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
        "data.packing": packing(cfg.data, cfg.task, cfg.model, cuda, int(cfg.optim.micro_batch_size)),
        "data.group_by_length": group_by_length(cfg.data),
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
