"""Adapter config -> PEFT config, applied to a (possibly quantized) base model."""

from __future__ import annotations

from typing import Any

# Module names per model family. Llama, Qwen2, Yi and the tiny model share Llama's names.
_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
_MLP = ["gate_proj", "up_proj", "down_proj"]
PRESETS = {
    family: {"attention": _ATTENTION, "mlp": _MLP, "all-linear": "all-linear"}
    for family in ("llama", "qwen2", "yi", "tiny")
}


def linear_module_names(model) -> list[str]:
    """Short names of the linear layers an adapter can target (the head excluded)."""
    import torch

    names = set()
    for full, module in model.named_modules():
        leaf = full.split(".")[-1]
        if leaf in ("lm_head", "score", "classifier"):
            continue
        if isinstance(module, torch.nn.Linear) or "Linear" in type(module).__name__:
            names.add(leaf)
    return sorted(names)


def resolve_targets(target_modules: Any, family: str, available: list[str] | None = None):
    """A preset name or an explicit list -> what PEFT's target_modules takes."""
    if isinstance(target_modules, str) and target_modules in PRESETS.get(family, PRESETS["llama"]):
        return PRESETS.get(family, PRESETS["llama"])[target_modules]
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if available is not None:
        missing = [t for t in targets if t not in available]
        if missing:
            raise ValueError(
                f"lora.target_modules: {missing} match no module of this model; available: {', '.join(available)} "
                "(or a preset: all-linear, attention, mlp)"
            )
    return targets


def peft_config(lora_cfg, task_name: str, targets):
    from peft import LoraConfig, TaskType

    task_type = TaskType.SEQ_CLS if task_name == "classify" else TaskType.CAUSAL_LM
    return LoraConfig(
        task_type=task_type,
        r=int(lora_cfg.r),
        lora_alpha=float(lora_cfg.alpha),
        lora_dropout=float(lora_cfg.dropout),
        target_modules=targets,
        bias=lora_cfg.bias,
        use_dora=bool(lora_cfg.use_dora),
        use_rslora=bool(lora_cfg.use_rslora),
        init_lora_weights=lora_cfg.init,
        modules_to_save=list(lora_cfg.modules_to_save) if lora_cfg.modules_to_save else None,
        **dict(lora_cfg.extra or {}),
    )


def prepare_base(model, quant_cfg, gradient_checkpointing: bool):
    """Freeze the base and ready it for adapter training (k-bit aware)."""
    gc_kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs and PEFT
    if quant_cfg.bits in (4, 8) and quant_cfg.upcast_non_quantized:
        from peft import prepare_model_for_kbit_training

        return prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=gradient_checkpointing, gradient_checkpointing_kwargs=gc_kwargs
        )
    for p in model.parameters():
        p.requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
        model.enable_input_require_grads()
    return model


def apply(model, lora_cfg, quant_cfg, task_name: str, family: str, gradient_checkpointing: bool):
    from peft import get_peft_model

    targets = resolve_targets(lora_cfg.target_modules, family, linear_module_names(model))
    model = prepare_base(model, quant_cfg, gradient_checkpointing)
    return get_peft_model(model, peft_config(lora_cfg, task_name, targets))


def initialize(model, lora_cfg, bundle, collator) -> None:
    """Data-driven initialisations that need a pass over training data after wrapping."""
    return None


def optimizer(model, lora_cfg, optim_cfg):
    """An optimizer the adapter method needs (LoRA+), or None for the Trainer's own."""
    return None
