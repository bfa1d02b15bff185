"""Adapter config -> PEFT config, applied to a (possibly quantized) base model."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ftsweep import artifacts

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
    # pragma-ed: every family maps to the same presets today, so which family is looked up cannot show.
    if isinstance(target_modules, str) and target_modules in PRESETS.get(family, PRESETS["llama"]):  # pragma: no mutate
        return PRESETS.get(family, PRESETS["llama"])[target_modules]  # pragma: no mutate
    targets = [target_modules] if isinstance(target_modules, str) else list(target_modules)
    if available is not None:
        missing = [t for t in targets if t not in available]
        if missing:
            raise ValueError(
                f"lora.target_modules: {missing} match no module of this model; available: {', '.join(available)} "
                "(or a preset: all-linear, attention, mlp)"
            )
    return targets


METHODS = ("lora", "loha", "lokr", "adalora", "ia3", "vera")


def peft_config(lora_cfg, task_name: str, targets, total_steps: int | None = None):
    """lora.method -> the PEFT config. LoRA variants (DoRA, rsLoRA, PiSSA, OLoRA, LoftQ, EVA) are LoRA knobs."""
    from peft import AdaLoraConfig, IA3Config, LoHaConfig, LoKrConfig, LoraConfig, TaskType, VeraConfig

    task_type = TaskType.SEQ_CLS if task_name == "classify" else TaskType.CAUSAL_LM
    method = str(lora_cfg.method)
    from omegaconf import OmegaConf

    extra = OmegaConf.to_container(lora_cfg.extra, resolve=True) if OmegaConf.is_config(lora_cfg.extra) else dict(lora_cfg.extra or {})
    if lora_cfg.init != "eva":
        extra.pop("eva_config", None)
    modules_to_save = list(lora_cfg.modules_to_save) if lora_cfg.modules_to_save else None
    common = dict(task_type=task_type, target_modules=targets, modules_to_save=modules_to_save)
    if method == "lora":
        init = lora_cfg.init
        if init == "loftq":
            from peft import LoftQConfig

            extra.setdefault("loftq_config", LoftQConfig(loftq_bits=4, loftq_iter=1))  # pragma: no mutate (= PEFT's defaults, spelled out)
        if init == "eva":  # pragma: no mutate (PEFT also turns a dict eva_config into an EvaConfig itself)
            from peft import EvaConfig

            extra["eva_config"] = EvaConfig(**dict(extra.get("eva_config") or {}))
        return LoraConfig(r=int(lora_cfg.r), lora_alpha=float(lora_cfg.alpha), lora_dropout=float(lora_cfg.dropout),
                          bias=lora_cfg.bias, use_dora=bool(lora_cfg.use_dora), use_rslora=bool(lora_cfg.use_rslora),
                          init_lora_weights=init, **common, **extra)
    if method == "loha":
        return LoHaConfig(r=int(lora_cfg.r), alpha=float(lora_cfg.alpha), rank_dropout=float(lora_cfg.dropout), **common, **extra)
    if method == "lokr":
        return LoKrConfig(r=int(lora_cfg.r), alpha=float(lora_cfg.alpha), rank_dropout=float(lora_cfg.dropout), **common, **extra)
    if method == "adalora":
        # AdaLoRA prunes ranks on a schedule over the whole run: it needs the number of steps up front.
        extra.setdefault("init_r", int(lora_cfg.r) + 4)
        return AdaLoraConfig(target_r=int(lora_cfg.r), lora_alpha=float(lora_cfg.alpha), lora_dropout=float(lora_cfg.dropout),
                             total_step=int(total_steps or 1000), **common, **extra)
    if method == "ia3":
        if targets == "all-linear":
            targets = ["k_proj", "v_proj", "down_proj"]
        feedforward = [t for t in targets if t in ("down_proj", "up_proj", "gate_proj", "fc2")] if isinstance(targets, list) else None
        return IA3Config(task_type=task_type, target_modules=targets, feedforward_modules=feedforward,
                         modules_to_save=modules_to_save, **extra)
    if method == "vera":
        return VeraConfig(r=int(lora_cfg.r), vera_dropout=float(lora_cfg.dropout), **common, **extra)
    raise ValueError(f"lora.method={method}: unknown; choose one of {', '.join(METHODS)}")


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
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)  # pragma: no mutate (transformers>=5 defaults to non-reentrant too)
        model.enable_input_require_grads()
    return model


def apply(model, lora_cfg, quant_cfg, task_name: str, family: str, gradient_checkpointing: bool, total_steps: int | None = None):
    from peft import get_peft_model

    targets = resolve_targets(lora_cfg.target_modules, family, linear_module_names(model))
    model = prepare_base(model, quant_cfg, gradient_checkpointing)
    # EVA computes its init from data after wrapping (initialize); the wrap itself must not run it.
    return get_peft_model(model, peft_config(lora_cfg, task_name, targets, total_steps),
                          low_cpu_mem_usage=lora_cfg.init == "eva")


def moves_base_weights(lora_cfg) -> bool:
    """PiSSA and OLoRA subtract their initial adapter from the base weights."""
    return lora_cfg.method == "lora" and (str(lora_cfg.init).startswith("pissa") or lora_cfg.init == "olora")


def save_initial(model, lora_cfg, run_dir):
    """Keep the initial adapter of PiSSA / OLoRA so the final one can be converted to fit the original base."""
    if not moves_base_weights(lora_cfg):
        return None
    path = run_dir / artifacts.ADAPTER_INIT
    config = model.peft_config["default"]
    init, config.init_lora_weights = config.init_lora_weights, True  # reloading it must not rerun the SVD
    model.save_pretrained(path, safe_serialization=True)
    config.init_lora_weights = init
    return path


def save(model, adapter_dir, initial_adapter=None) -> None:
    """The adapter in safetensors. PiSSA / OLoRA are converted to a plain LoRA of rank 2r that applies to the
    original base (PEFT's path_initial_model_for_weight_conversion), so anyone can load it on the unmodified model."""
    import shutil

    if initial_adapter is None:
        model.save_pretrained(adapter_dir, safe_serialization=True)
        return
    model.save_pretrained(adapter_dir, safe_serialization=True, path_initial_model_for_weight_conversion=str(initial_adapter))
    shutil.rmtree(initial_adapter, ignore_errors=True)


def initialize(model, lora_cfg, bundle, collator) -> None:
    """Data-driven initialisations that need a pass over training data after wrapping (EVA)."""
    if lora_cfg.init != "eva":
        return
    import torch
    from peft import initialize_lora_eva_weights

    # A few batches of training data: EVA's SVD of the layer inputs sets each A (and redistributes ranks).
    batches = [collator([bundle.train[i] for i in range(j, min(j + 8, len(bundle.train)))])
               for j in range(0, min(len(bundle.train), 64), 8)]
    device = next(p.device for p in model.parameters())
    with torch.no_grad():
        initialize_lora_eva_weights(model, dataloader=[{k: v.to(device) for k, v in b.items()} for b in batches],
                                    show_progress_bar=False)


def budget_callback(lora_cfg):
    """AdaLoRA prunes ranks only when PEFT's update_and_allocate runs after every optimizer step (before the
    gradients are zeroed: it scores each singular value by |value x gradient|), a call PEFT leaves to the training
    loop and the Trainer does not make. Without it the adapter stays at init_r. None for every other method."""
    if lora_cfg.method != "adalora":
        return None
    from transformers import TrainerCallback

    class AdaLoraBudget(TrainerCallback):
        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            # state.global_step counts the steps before this one: 0 at the first, as in PEFT's example loop.
            model.base_model.update_and_allocate(state.global_step)

    return AdaLoraBudget()


def trainable_state(model) -> dict:
    """A copy of what trains (the adapter, a classifier's head), on the CPU: a few MB to a few hundred, never GPU
    memory, since it is kept for an out-of-memory retry."""
    return {name: p.detach().to("cpu", copy=True) for name, p in model.named_parameters() if p.requires_grad}


def restore_trainable(model, state: dict) -> None:
    """Back to trainable_state's copy, and AdaLoRA's rank allocator back to its start (nothing pruned, no
    importance measured)."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state:
                p.copy_(state[name])
    config, allocator = _allocator(model)
    if allocator is not None:
        config.rank_pattern = None
        allocator.reset_ipt()


def load_saved(base, folder: Path, is_trainable: bool = False):
    """A run's saved adapter on its base (PeftModel.from_pretrained). PEFT 0.21 checks an adapter's rank_pattern
    keys against module names, LoRA's meaning of the field; AdaLoRA's rank_pattern maps each singular-value vector
    (..q_proj.lora_E) to the ranks it keeps, which PEFT applies on load, and the check then warns that every key
    "did not match any targeted module and [was] ignored". For AdaLoRA that warning is false and goes."""
    import json
    import warnings

    from peft import PeftModel

    adalora = json.loads((folder / artifacts.ADAPTER_CONFIG).read_text()).get("peft_type") == "ADALORA"
    with warnings.catch_warnings():
        if adalora:
            warnings.filterwarnings("ignore", message="The following rank_pattern keys did not match", category=RuntimeWarning)
        return PeftModel.from_pretrained(base, str(folder), is_trainable=is_trainable)


# AdaLoRA's rank allocator state: what a checkpoint must hold for a resumed run to prune as the uninterrupted run does.
_ALLOCATOR_STATE = ("ipt", "exp_avg_ipt", "exp_avg_unc")


def _allocator(model):
    """(the AdaLoRA config, its rank allocator), or (None, None) for every other method."""
    tuner = getattr(model, "base_model", None)
    allocator = getattr(tuner, "rankallocator", None)
    if allocator is None:
        return None, None
    return model.peft_config[tuner.trainable_adapter_name], allocator


@contextmanager
def full_size_checkpoint(model, folder: Path, write: bool):
    """Saves a checkpoint AdaLoRA can resume from. PEFT saves an AdaLoRA adapter trimmed to its current
    rank_pattern, which is right for the final adapter and wrong for a checkpoint: the model under training keeps
    every rank (pruned ones are masked, not removed, and can come back), so loading the trimmed weights failed with a
    size mismatch and no AdaLoRA run could resume. Inside this block the adapter saves at full size; the rank
    pattern and the importance averages that choose the next masks go beside it (``write``: the process that
    writes the checkpoint), before the Trainer's files, whose trainer_state.json marks the checkpoint complete."""
    config, allocator = _allocator(model)
    if allocator is None:
        yield
        return
    import torch

    if write:
        folder.mkdir(parents=True, exist_ok=True)
        torch.save({"rank_pattern": config.rank_pattern, **{k: getattr(allocator, k) for k in _ALLOCATOR_STATE}},
                   folder / artifacts.ADALORA_BUDGET)
    pattern, config.rank_pattern = config.rank_pattern, None
    try:
        yield
    finally:
        config.rank_pattern = pattern


def restore_budget(model, folder: Path) -> None:
    """Puts back what full_size_checkpoint saved, after the Trainer has loaded the checkpoint's weights."""
    config, allocator = _allocator(model)
    if allocator is None:
        return
    import torch

    saved = torch.load(folder / artifacts.ADALORA_BUDGET, map_location="cpu", weights_only=True)
    # The allocator names parameters as the tuner's wrapped model does (model.layers.0..., not base_model.model...).
    devices = {name: p.device for name, p in model.base_model.model.named_parameters()}
    config.rank_pattern = saved["rank_pattern"]
    for key in _ALLOCATOR_STATE:
        setattr(allocator, key, {name: t.to(devices[name]) for name, t in saved[key].items()})


def optimizer(model, lora_cfg, args):
    """LoRA+: B learns loraplus_lr_ratio times faster than A. None: the Trainer builds its own optimizer.

    The optimizer is the one optim.optimizer names (args.optim), with the Trainer's own arguments for it (betas,
    eps, paging, 8-bit state), so `lora=loraplus optim=paged_adamw_8bit` trains with paged 8-bit AdamW as the plan
    counts it; only the parameter groups are LoRA+'s."""
    if not lora_cfg.get("loraplus_lr_ratio"):
        return None
    from peft.optimizers import create_loraplus_optimizer
    from transformers import Trainer

    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kwargs.pop("lr", None)
    return create_loraplus_optimizer(model=model, optimizer_cls=optimizer_cls, lr=float(args.learning_rate),
                                     loraplus_lr_ratio=float(lora_cfg.loraplus_lr_ratio),
                                     # PEFT gives every group its own weight decay, from loraplus_weight_decay
                                     # (weight_decay= would only set the optimizer's default, which no group uses).
                                     loraplus_weight_decay=float(args.weight_decay), **kwargs)
