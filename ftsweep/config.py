"""Config schemas, their ConfigStore registration, and validation.

Every group of conf/ is typed by a dataclass here, so a typo'd key or a wrong
type on the command line fails while Hydra composes, before anything loads.
Values that types cannot check (ranges, cross-field rules) are checked by
``validate``, which reports every problem at once.

Defaults live in the YAML files, not here: a schema field's default is only
what a YAML file that omits the key gets.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

MODES = ("train", "plan", "preview")


@dataclass
class ModelSchema:
    name: str = MISSING
    name_or_path: str = MISSING  # hub id or local directory
    builtin: Optional[str] = None  # "tiny": created locally, no download
    family: str = "llama"  # selects target-module presets: llama, qwen2, yi, tiny
    dtype: str = "bfloat16"  # weights of non-quantized layers: bfloat16, float16, float32, auto
    trust_remote_code: bool = False  # runs code shipped with the model: opt in per model
    allow_pickle: bool = False  # load .bin (pickle) weights; safetensors only unless set
    attn_implementation: str = "sdpa"  # sdpa, eager, flash_attention_2
    chat_template: Optional[str] = None  # named template that overrides the tokenizer's
    # Architecture facts for offline planning (mode=plan) without downloading.
    arch: Dict[str, Any] = field(default_factory=dict)


@dataclass
class QuantSchema:
    name: str = MISSING
    bits: int = 16  # 4, 8, or 16 (no quantization)
    quant_type: str = "nf4"  # 4-bit data type: nf4 or fp4
    double_quant: bool = True  # quantize the quantization constants too (~0.4 bit/param saved)
    compute_dtype: str = "bfloat16"
    upcast_non_quantized: bool = True  # prepare_model_for_kbit_training's fp32 upcast


@dataclass
class LoraSchema:
    name: str = MISSING
    method: str = "lora"  # PEFT method: lora, loha, lokr, adalora, ia3, vera
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    target_modules: Any = "all-linear"  # preset (all-linear, attention, mlp) or a list of names
    bias: str = "none"
    use_dora: bool = False
    use_rslora: bool = False
    init: Any = True  # True, gaussian, pissa, olora, loftq, eva, ...
    loraplus_lr_ratio: Optional[float] = None  # LoRA+: lr of B = ratio * lr of A
    modules_to_save: Optional[list] = None
    extra: Dict[str, Any] = field(default_factory=dict)  # method-specific PEFT kwargs


@dataclass
class DataSchema:
    name: str = MISSING
    source: str = "synthetic"  # synthetic, json, jsonl, csv, parquet, hub (or auto from path suffix)
    path: Optional[str] = None
    hub_config: Optional[str] = None
    split: str = "train"
    format: str = "alpaca"  # alpaca, sharegpt, messages, multiple_choice, text
    columns: Dict[str, Any] = field(default_factory=dict)  # field renames, LLaMA-Factory style
    roles: Dict[str, Any] = field(default_factory=dict)  # sharegpt/messages role names -> user, assistant, system
    template: Optional[str] = None  # null: tokenizer's chat template; or llama2, chatml, alpaca, custom
    system: Optional[str] = None  # default system prompt
    custom_template: Dict[str, Any] = field(default_factory=dict)
    n: Optional[int] = None  # training subset size: first n of a seeded shuffle (nested)
    val_size: float = 0.1  # fraction (< 1) or count (>= 1) held out
    val_path: Optional[str] = None
    test_path: Optional[str] = None
    max_length: int = 512
    train_on_prompt: bool = False
    shuffle_seed: int = 0
    shuffle: bool = True  # false: file order; train = the first n records, held out = the last val_size
    instruction_as_system: bool = False  # alpaca: the instruction becomes the system message, the input the user turn
    on_bad_record: str = "error"  # error or skip
    pad_to_multiple_of: Optional[int] = None
    packing: bool = False  # padding-free batches (position ids restart per example)
    group_by_length: bool = False
    num_records: int = 2000  # synthetic only
    synthetic_tasks: list = field(default_factory=lambda: ["extract", "reverse", "add"])


@dataclass
class TaskSchema:
    name: str = MISSING  # sft or classify
    num_labels: Optional[int] = None
    label_names: Optional[list] = None
    class_weights: Any = None  # null, "auto" (inverse label frequency) or a list
    metrics: list = field(default_factory=list)


@dataclass
class OptimSchema:
    name: str = MISSING
    optimizer: str = "adamw_torch"  # any transformers optim name, e.g. paged_adamw_8bit
    lr: float = 3e-4
    scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    weight_decay: float = 0.0
    micro_batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = -1  # > 0 overrides epochs
    epochs: float = 1.0
    max_grad_norm: float = 1.0


@dataclass
class LoggerSchema:
    name: str = MISSING
    backends: list = field(default_factory=list)  # swanlab, wandb
    mode: str = "local"  # local, offline, online, disabled
    project: str = "${project}"
    swanlab_dir: Optional[str] = None
    wandb_dir: Optional[str] = None


@dataclass
class EvalSchema:
    every_n_steps: int = 50  # 0: only at step 0 and at the end
    per_epoch: bool = False  # also evaluate at the end of every epoch
    at_start: bool = True  # baseline eval before any training
    num_samples: int = 32  # held-out prompts generated for task metrics
    batch_size: int = 16
    generation: Dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSchema:
    gradient_checkpointing: bool = True
    logging_steps: int = 10
    save_steps: int = 50
    save_total_limit: int = 2
    keep_checkpoints: bool = False
    tf32: bool = False
    liger_kernel: bool = False
    nan_check: bool = True
    oom_retry: bool = True
    progress: bool = True


@dataclass
class PlanSchema:
    gpu_mem_gb: float = 24.0


@dataclass
class PreviewSchema:
    k: int = 3


@dataclass
class RootSchema:
    model: ModelSchema = MISSING
    quant: QuantSchema = MISSING
    lora: LoraSchema = MISSING
    data: DataSchema = MISSING
    task: TaskSchema = MISSING
    optim: OptimSchema = MISSING
    logger: LoggerSchema = MISSING
    eval: EvalSchema = field(default_factory=EvalSchema)
    train: TrainSchema = field(default_factory=TrainSchema)
    plan: PlanSchema = field(default_factory=PlanSchema)
    preview: PreviewSchema = field(default_factory=PreviewSchema)
    mode: str = "train"
    seed: int = 42
    project: str = "ftsweep"
    skip_finished: bool = True
    experiment: Optional[str] = None
    hparams_search_metric: str = "eval_loss"  # what a search sweeper (hparams_search=optuna) optimizes


GROUP_SCHEMAS = {
    "model": ModelSchema,
    "quant": QuantSchema,
    "lora": LoraSchema,
    "data": DataSchema,
    "task": TaskSchema,
    "optim": OptimSchema,
    "logger": LoggerSchema,
}


def register() -> None:
    """Store the schemas; conf/config.yaml and each group file name them in their defaults."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="schema", node=RootSchema)
    for group, schema in GROUP_SCHEMAS.items():
        cs.store(group=group, name=f"{group}_schema", node=schema)


class ConfigError(ValueError):
    """A config that cannot run. The message lists every problem, one per line."""


def validate(cfg: DictConfig, cuda: bool | None = None) -> None:
    """Check ranges and cross-field rules; raise ConfigError listing all problems.

    ``cuda`` (whether a CUDA GPU is visible) adds the device rules; None skips them.
    """
    errors: list[str] = []

    def need(ok: bool, msg: str) -> None:
        if not ok:
            errors.append(msg)

    for key in sorted(OmegaConf.missing_keys(cfg)):
        errors.append(f"{key} is required: set it on the command line, e.g. {key}=...")
    if errors:
        raise ConfigError("\n".join(errors))
    need(cfg.mode in MODES, f"mode={cfg.mode}: choose one of {', '.join(MODES)}")
    L, O, D, T, Q = cfg.lora, cfg.optim, cfg.data, cfg.task, cfg.quant
    need(L.r >= 1, f"lora.r={L.r}: the rank must be >= 1 (e.g. lora.r=8)")
    need(L.alpha > 0, f"lora.alpha={L.alpha}: must be > 0 (usually 2*r)")
    need(0 <= L.dropout < 1, f"lora.dropout={L.dropout}: must be in [0, 1)")
    need(O.lr > 0, f"optim.lr={O.lr}: must be > 0 (e.g. optim.lr=3e-4)")
    need(O.micro_batch_size >= 1, f"optim.micro_batch_size={O.micro_batch_size}: must be >= 1")
    need(O.grad_accum >= 1, f"optim.grad_accum={O.grad_accum}: must be >= 1")
    need(O.max_steps > 0 or O.epochs > 0, "optim.max_steps and optim.epochs: set one of them > 0")
    need(0 <= O.warmup_ratio < 1, f"optim.warmup_ratio={O.warmup_ratio}: must be in [0, 1)")
    need(O.weight_decay >= 0, f"optim.weight_decay={O.weight_decay}: must be >= 0")
    need(O.max_grad_norm >= 0, f"optim.max_grad_norm={O.max_grad_norm}: must be >= 0 (0 disables clipping)")
    need(D.source == "synthetic" or bool(D.path), f"data={D.name} reads a file: set data.path=... (a JSON, JSONL, CSV or Parquet file, or a hub id)")
    need(D.n is None or D.n >= 1, f"data.n={D.n}: must be >= 1 (or null for all records)")
    need(D.val_size > 0, f"data.val_size={D.val_size}: must be a fraction in (0, 1) or a count >= 1")
    need(D.val_size < 1 or float(D.val_size).is_integer(), f"data.val_size={D.val_size}: a count must be a whole number")
    need(D.max_length >= 8, f"data.max_length={D.max_length}: must be >= 8 tokens")
    need(D.on_bad_record in ("error", "skip"), f"data.on_bad_record={D.on_bad_record}: choose error or skip")
    need(Q.bits in (4, 8, 16), f"quant.bits={Q.bits}: choose 4, 8 or 16")
    need(Q.quant_type in ("nf4", "fp4"), f"quant.quant_type={Q.quant_type}: choose nf4 or fp4")
    need(T.name in ("sft", "classify"), f"task.name={T.name}: choose sft or classify")
    if T.name == "classify":
        need(T.num_labels is not None and T.num_labels >= 2, "task=classify needs task.num_labels >= 2")
    if L.init == "loftq":
        need(Q.bits == 16, "lora=loftq quantizes the base itself: use it with quant=none (LoftQ replaces QLoRA's nf4 load)")
    if str(L.init).startswith("pissa"):
        need(Q.bits == 16, f"lora={L.name}: PiSSA initializes from the full-precision weight; use quant=none "
                           "(or lora=olora / lora=lora on a quantized base)")
    if L.method in ("loha", "lokr"):
        need(Q.bits == 16, f"lora={L.name}: PEFT's {L.method.upper()} layers cannot wrap bitsandbytes layers; use quant=none")
    need(cfg.eval.every_n_steps >= 0, f"eval.every_n_steps={cfg.eval.every_n_steps}: must be >= 0")
    for name in cfg.logger.backends:
        need(name in ("swanlab", "wandb"), f"logger.backends: unknown tracker {name!r}; choose swanlab or wandb")
    if cuda is False:
        errors.extend(cpu_problems(cfg))
    if errors:
        raise ConfigError("\n".join(errors))


def cpu_problems(cfg: DictConfig) -> list[str]:
    """Settings that only a CUDA GPU can run, each with the CPU alternative."""
    problems = []
    if str(cfg.optim.optimizer).startswith("paged_"):
        problems.append(f"optim.optimizer={cfg.optim.optimizer}: paged optimizers need a CUDA GPU; use optim=adamw on CPU")
    if cfg.model.get("attn_implementation") == "flash_attention_2":
        problems.append("model.attn_implementation=flash_attention_2 needs a CUDA GPU; use model.attn_implementation=sdpa on CPU")
    if cfg.train.get("liger_kernel"):
        problems.append("train.liger_kernel=true needs a CUDA GPU; set train.liger_kernel=false on CPU")
    if cfg.lora.get("init") == "loftq":
        problems.append("lora=loftq quantizes with CUDA kernels and needs a GPU; use lora=lora with quant=nf4 on CPU")
    if cfg.train.get("tf32"):
        problems.append("train.tf32=true needs an Ampere or newer GPU; set train.tf32=false on CPU")
    return problems


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as a plain dict (what manifests and trackers store)."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)  # type: ignore[return-value]


# Keys that do not change what is trained: a run differing only in these is the same run.
_HASH_IGNORED = ("logger", "train.progress", "mode", "skip_finished", "preview", "plan", "hparams_search_metric")


def config_hash(cfg: DictConfig | dict) -> str:
    """Stable 12-hex-digit hash of everything that shapes the trained result."""
    data = plain(cfg) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    for key in _HASH_IGNORED:
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
