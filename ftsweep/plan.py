"""mode=plan: what each cell of a grid costs, before anything trains or downloads.

    python -m ftsweep -m model=qwen2.5-7b-instruct lora.r=8,64 quant=nf4,none mode=plan plan.gpu_mem_gb=24

The model is built from its config alone on the meta device (no weights): the
config.json of model.name_or_path when it is on this machine (a local directory
or the hub cache), the model file's `arch:` facts only when it is not; plan.json
and the printed line say which (`config_source`). The adapter is applied with
the same PEFT config a run uses, so trainable parameters are PEFT's own count. Memory is an estimate,
split into the base weights, the adapter's training state and activations:

    base      quantized linear weights x bytes/param + the rest at its dtype
    adapter   trainable x (4 weight + 4 grad + 8 AdamW moments) bytes     (fp32, as PEFT keeps adapters on k-bit bases)
    activations  the larger of the two phases that hold them:
              training   per layer and token, (8h + 4i) values saved for backward (attention in/outs, q/k/v, MLP
                         gate/up/act) x micro batch x max length x 2 bytes; with gradient checkpointing only each
                         layer's input (h values) is kept plus one layer recomputed; plus the logits at their peak in
                         backward, 14 bytes a logit (bf16 logits 2, the fp32 log-softmax kept for backward 4, the
                         loss's gradient 4, the log-softmax's input gradient 4), for one chunk of positions
                         (ftsweep.lm_loss, train.chunked_loss) or, without it, for the whole micro batch
              evaluation the held-out loss, no gradients, eval.batch_size x max length tokens: one layer's (4h + 3i)
                         values in flight, the decoder's output (h), and one chunk's logits at 10 bytes a logit (bf16
                         2 + fp32 copy 4 + fp32 log-softmax 4). Before the loss was chunked, the whole batch's logits
                         at 10 bytes each were the run's peak on an H200 for the Qwen2.5-0.5B, Qwen2.5-7B and
                         Llama-2-7B shapes (10.1-10.6 bytes a logit measured)
    overhead  0.75 GiB for the CUDA context and allocator slack

Each cell prints its line and writes plan.json into its directory; cells above
plan.gpu_mem_gb are flagged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ftsweep import auto, lm_loss
from ftsweep.artifacts import PLAN, PLAN_TABLE, atomic_write_json, atomic_write_text
from ftsweep.metrics import GIB

log = logging.getLogger("ftsweep")

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "auto": 2}
OVERHEAD_BYTES = int(0.75 * GIB)


def quantized_bytes_per_param(quant_cfg) -> float:
    """Bytes per parameter of a quantized linear weight.

    4-bit: 0.5 byte + one fp32 absmax per 64-weight block (4/64 = 0.0625); double quantization stores that absmax
    in 8 bits plus an fp32 constant per 256 blocks: 1/64 + 4/(64 x 256) = 0.0159. 8-bit: 1 byte + an fp32 scale
    per row (negligible).
    """
    if quant_cfg.bits == 4:
        return 0.5 + (1 / 64 + 4 / (64 * 256) if quant_cfg.double_quant else 4 / 64)
    if quant_cfg.bits == 8:
        return 1.0
    return 0.0  # not quantized


def model_config(model_cfg):
    """A transformers config for the model, without downloading anything."""
    return model_config_and_source(model_cfg)[0]


def local_config_json(model_cfg) -> Path | None:
    """config.json of model.name_or_path when it is on this machine: a local directory or the hub cache."""
    path = str(model_cfg.name_or_path)
    local = Path(path).expanduser()
    if local.is_dir():
        return local / "config.json" if (local / "config.json").is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(path, "config.json")
    except Exception:  # noqa: BLE001 - not a valid hub id: nothing cached under it
        return None
    return Path(cached) if isinstance(cached, str) else None


def model_config_and_source(model_cfg):
    """(config, where its facts came from). The model's own config.json wins whenever it is on this machine
    (model.name_or_path=DIR may hold another size than the model file names); the model file's `arch:`
    facts serve only when it is not."""
    from transformers import AutoConfig

    from ftsweep import models

    remote = bool(model_cfg.trust_remote_code)
    builtin = model_cfg.get("builtin") and str(model_cfg.name_or_path) == str(model_cfg.builtin)
    found = None if builtin else local_config_json(model_cfg)
    if found is not None:
        return AutoConfig.from_pretrained(str(found.parent), trust_remote_code=remote), f"config.json in {found.parent}"
    arch = dict(model_cfg.arch or {})
    if arch:
        model_type = arch.pop("model_type")
        return AutoConfig.for_model(model_type, **arch), f"arch: facts of model={model_cfg.name} (not available locally)"
    path = models.resolve_model_path(model_cfg)  # the tiny model is created locally; otherwise a clear error
    return AutoConfig.from_pretrained(path, trust_remote_code=remote), f"config.json in {path}"


TRAIN_BYTES_PER_LOGIT = 14  # bf16 logits 2 + fp32 log-softmax 4 + loss gradient 4 + log-softmax input gradient 4
EVAL_BYTES_PER_LOGIT = 10   # bf16 logits 2 + their fp32 copy 4 + fp32 log-softmax 4 (no gradients)


def activation_bytes(cfg, config, chunked: bool = True) -> tuple[int, int]:
    """(training, evaluation) bytes of activations and logits at their peak, for the longest batches (module doc).
    ``chunked``: ftsweep.lm_loss can split this model's loss (lm_loss.parts)."""
    h = int(config.hidden_size)
    i = int(getattr(config, "intermediate_size", 4 * h))
    layers = int(config.num_hidden_layers)
    vocab = int(getattr(config, "vocab_size", 0)) if cfg.task.name != "classify" else 0
    act = 2  # bf16/fp16 activations on GPU
    tokens = int(cfg.optim.micro_batch_size) * int(cfg.data.max_length)
    per_layer = tokens * (8 * h + 4 * i) * act
    if cfg.train.gradient_checkpointing:
        train = layers * tokens * h * act + per_layer
    else:
        train = layers * per_layer
    # ftsweep.lm_loss computes the loss a chunk of positions at a time; models it cannot split take the whole batch's.
    train_chunked = chunked and lm_loss.chunks_training(cfg.train)
    train += (min(tokens, lm_loss.CHUNK_TOKENS) if train_chunked else tokens) * vocab * TRAIN_BYTES_PER_LOGIT
    eval_tokens = int(cfg.eval.batch_size) * int(cfg.data.max_length)
    logits_at_once = min(eval_tokens, lm_loss.CHUNK_TOKENS) if chunked else eval_tokens
    evaluation = eval_tokens * (4 * h + 3 * i + h) * act + logits_at_once * vocab * EVAL_BYTES_PER_LOGIT
    return train, evaluation


def plan_cell(cfg, base=None) -> dict:
    """Counts and memory of one cell; ``base`` is the cell's meta-device model when the caller built it already."""
    from omegaconf import OmegaConf
    from peft import get_peft_model

    from ftsweep import adapters, models, training

    if base is None:
        base, _ = models.meta_model(cfg.model, cfg.task)
    config = base.config
    linear = {n for n, m in base.named_modules() if type(m).__name__ == "Linear" and n.split(".")[-1] not in ("lm_head", "score")}
    quantizable = sum(p.numel() for n, p in base.named_parameters() if n.rsplit(".", 1)[0] in linear)
    total = sum(p.numel() for p in base.parameters())

    # Data-driven inits need weights or data; the parameter count does not depend on them.
    lora_cfg = OmegaConf.merge(cfg.lora, {"init": True if cfg.lora.init in ("eva", "loftq") or str(cfg.lora.init).startswith(("pissa", "olora")) else cfg.lora.init})
    targets = adapters.resolve_targets(lora_cfg.target_modules, cfg.model.family, adapters.linear_module_names(base))
    n_train = int(cfg.data.n) if cfg.data.n else 1000
    peft_model = get_peft_model(base, adapters.peft_config(lora_cfg, cfg.task.name, targets, training.total_steps(cfg, n_train)))
    # AdaLoRA's rank counter (ranknum) is frozen in a real model, but PEFT leaves it requiring grad on the meta device.
    for name, p in peft_model.named_parameters():
        if ".ranknum." in name:
            p.requires_grad_(False)
    # PEFT's convention, as a run reports it: all parameters include the adapter's (`total` stays the base's, for memory).
    trainable, all_params = models.count_params(peft_model)

    dtype_bytes = DTYPE_BYTES.get(str(cfg.model.dtype), 2)
    q_bytes = quantized_bytes_per_param(cfg.quant)
    # k-bit training upcasts the non-quantized rest (embeddings, norms, head) to fp32.
    rest_bytes = 4 if (cfg.quant.bits in (4, 8) and cfg.quant.upcast_non_quantized) else dtype_bytes
    if q_bytes:
        base_bytes = quantizable * q_bytes + (total - quantizable) * rest_bytes
    else:
        base_bytes = total * dtype_bytes
    optimizer_state = 2 if "8bit" in str(cfg.optim.optimizer) else 8  # two moments, fp32 or 8-bit
    adapter_bytes = trainable * (4 + 4 + optimizer_state)

    train_bytes, eval_bytes = activation_bytes(cfg, config, chunked=lm_loss.parts(base) is not None)
    activations = max(train_bytes, eval_bytes)

    est = base_bytes + adapter_bytes + activations + OVERHEAD_BYTES
    limit = auto.memory_budget_gib(cfg)
    return {
        "model": cfg.model.name, "config_source": model_config_and_source(cfg.model)[1], "quant": cfg.quant.name, "lora": cfg.lora.name, "r": cfg.lora.r,
        "total_params": int(all_params), "trainable_params": int(trainable), "trainable_share": round(trainable / all_params, 6),
        "memory_gib": {"base_weights": round(base_bytes / GIB, 3), "adapter_grads_optimizer": round(adapter_bytes / GIB, 3),
                       "activations": round(activations / GIB, 3), "overhead": round(OVERHEAD_BYTES / GIB, 3),
                       "total": round(est / GIB, 3)},
        "micro_batch_size": int(cfg.optim.micro_batch_size), "max_length": int(cfg.data.max_length),
        "gradient_checkpointing": bool(cfg.train.gradient_checkpointing),
        # Which phase holds the most: "training" (micro batch, with gradients) or "evaluation" (eval.batch_size).
        "activations_peak": "evaluation" if eval_bytes > train_bytes else "training",
        "activations_gib": {"training": round(train_bytes / GIB, 3), "evaluation": round(eval_bytes / GIB, 3)},
        "gpu_mem_gb": limit, "fits": est / GIB <= limit,
    }


def describe(plan: dict, name: str) -> str:
    m = plan["memory_gib"]
    flag = "fits" if plan["fits"] else f"OVER {plan['gpu_mem_gb']:g} GiB"
    # The counts as PEFT's print_trainable_parameters() words them, so the two can be compared at a glance.
    return (f"plan {name}: trainable params: {plan['trainable_params']:,} || all params: {plan['total_params']:,} || "
            f"trainable%: {100 * plan['trainable_params'] / plan['total_params']:.4f} | memory ~{m['total']:.2f} GiB = base {m['base_weights']:.2f} "
            f"+ adapter/grad/optim {m['adapter_grads_optimizer']:.2f} + activations {m['activations']:.2f} "
            f"({plan.get('activations_peak', 'training')}) "
            f"+ overhead {m['overhead']:.2f} | {flag} | from {plan.get('config_source', '?')}")


def main(cfg, run_dir: Path, name: str) -> float:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames
    from ftsweep import auto

    auto.apply(cfg, auto.resolve(cfg))  # checkpointing `auto` decides the activation estimate
    plan = plan_cell(cfg)  # the CLI validated cfg
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(run_dir) / PLAN, plan)
    print(describe(plan, name), flush=True)
    return float(plan["memory_gib"]["total"])


def read_plans(sweep_dir: Path) -> list[dict]:
    return [dict(json.loads(p.read_text()), run=p.parent.name) for p in sorted(Path(sweep_dir).glob(f"*/{PLAN}"))]


def write_table(sweep_dir: Path) -> Path:
    """plan.md: one row per cell, largest memory first, cells over the limit flagged."""
    rows = sorted(read_plans(sweep_dir), key=lambda p: -p["memory_gib"]["total"])
    lines = ["| cell | trainable | total params | base GiB | adapter+grad+optim GiB | activations GiB | total GiB | fits |",
             "|---|---:|---:|---:|---:|---:|---:|---|"]
    for p in rows:
        m = p["memory_gib"]
        lines.append(f"| `{p['run']}` | {p['trainable_params']:,} | {p['total_params']:,} | {m['base_weights']:.2f} | "
                     f"{m['adapter_grads_optimizer']:.2f} | {m['activations']:.2f} | {m['total']:.2f} | "
                     f"{'yes' if p['fits'] else '**no** (> ' + format(p['gpu_mem_gb'], 'g') + ' GiB)'} |")
    path = Path(sweep_dir) / PLAN_TABLE
    atomic_write_text(path, "# Plan: parameters and estimated GPU memory per cell\n\n" + "\n".join(lines) + "\n")
    return path
