"""Config schemas (types only), their registration, and validation.

One source of defaults: every default value lives in the YAML files under
conf/, next to the comment that says what the knob does and what it trades.
The dataclasses here hold types only (every field is MISSING), so the two can
never disagree; tests/test_config_defaults.py checks that every option of
every group composes with no field left unset. The root schema types each
group node, so a typo'd key or a wrong type on the command line fails while
Hydra composes, before anything loads. Values that types cannot check
(ranges, cross-field rules) are checked by ``validate``, which reports every
problem at once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

MODES = ("train", "plan", "preview")


@dataclass
class ModelSchema:
    name: str = MISSING
    name_or_path: str = MISSING
    builtin: Optional[str] = MISSING
    family: str = MISSING
    dtype: str = MISSING
    trust_remote_code: bool = MISSING
    allow_pickle: bool = MISSING
    attn_implementation: str = MISSING
    chat_template: Optional[str] = MISSING
    arch: Dict[str, Any] = MISSING


@dataclass
class QuantSchema:
    name: str = MISSING
    bits: int = MISSING
    quant_type: str = MISSING
    double_quant: bool = MISSING
    compute_dtype: str = MISSING
    upcast_non_quantized: bool = MISSING


@dataclass
class LoraSchema:
    name: str = MISSING
    method: str = MISSING
    r: Optional[int] = MISSING  # null for a method without it (UNUSED below)
    alpha: Optional[float] = MISSING
    dropout: Optional[float] = MISSING
    target_modules: Any = MISSING
    bias: str = MISSING
    use_dora: bool = MISSING
    use_rslora: bool = MISSING
    init: Any = MISSING
    loraplus_lr_ratio: Optional[float] = MISSING
    modules_to_save: Optional[List[Any]] = MISSING
    extra: Dict[str, Any] = MISSING


@dataclass
class DataSchema:
    name: str = MISSING
    source: str = MISSING
    path: Optional[str] = MISSING
    hub_config: Optional[str] = MISSING
    split: str = MISSING
    format: str = MISSING
    columns: Dict[str, Any] = MISSING
    roles: Dict[str, Any] = MISSING
    template: Optional[str] = MISSING
    system: Optional[str] = MISSING
    custom_template: Dict[str, Any] = MISSING
    n: Optional[int] = MISSING
    val_size: float = MISSING
    val_path: Optional[str] = MISSING
    test_path: Optional[str] = MISSING
    max_length: int = MISSING
    train_on_prompt: bool = MISSING
    shuffle_seed: int = MISSING
    shuffle: bool = MISSING
    instruction_as_system: bool = MISSING
    on_bad_record: str = MISSING
    pad_to_multiple_of: Optional[int] = MISSING
    packing: Any = MISSING  # true, false or auto (ftsweep/auto.py)
    group_by_length: Any = MISSING  # true, false or auto
    num_records: int = MISSING
    synthetic_tasks: List[Any] = MISSING


@dataclass
class TaskSchema:
    name: str = MISSING
    num_labels: Optional[int] = MISSING
    class_weights: Any = MISSING
    metrics: List[Any] = MISSING


@dataclass
class OptimSchema:
    name: str = MISSING
    optimizer: str = MISSING
    lr: float = MISSING
    scheduler: str = MISSING
    warmup_ratio: float = MISSING
    warmup_steps: int = MISSING
    weight_decay: float = MISSING
    micro_batch_size: int = MISSING
    grad_accum: int = MISSING
    max_steps: int = MISSING
    epochs: float = MISSING
    max_grad_norm: float = MISSING


@dataclass
class LoggerSchema:
    name: str = MISSING
    backends: List[Any] = MISSING
    mode: str = MISSING
    project: str = MISSING
    swanlab_dir: Optional[str] = MISSING
    wandb_dir: Optional[str] = MISSING


@dataclass
class EvalSchema:
    every_n_steps: int = MISSING
    per_epoch: bool = MISSING
    at_start: bool = MISSING
    num_samples: int = MISSING
    batch_size: int = MISSING
    generation: Dict[str, Any] = MISSING


@dataclass
class TrainSchema:
    gradient_checkpointing: Any = MISSING  # true, false or auto
    logging_steps: int = MISSING
    save_steps: int = MISSING
    save_total_limit: int = MISSING
    keep_checkpoints: bool = MISSING
    tf32: bool = MISSING
    liger_kernel: bool = MISSING
    chunked_loss: bool = MISSING
    nan_check: bool = MISSING
    oom_retry: bool = MISSING
    progress: bool = MISSING


@dataclass
class PlanSchema:
    gpu_mem_gb: Any = MISSING  # auto or GiB


@dataclass
class PreviewSchema:
    k: int = MISSING


@dataclass
class RootSchema:
    model: ModelSchema = MISSING
    quant: QuantSchema = MISSING
    lora: LoraSchema = MISSING
    data: DataSchema = MISSING
    task: TaskSchema = MISSING
    optim: OptimSchema = MISSING
    logger: LoggerSchema = MISSING
    eval: EvalSchema = MISSING
    train: TrainSchema = MISSING
    plan: PlanSchema = MISSING
    preview: PreviewSchema = MISSING
    mode: str = MISSING
    seed: int = MISSING
    project: str = MISSING
    skip_finished: bool = MISSING
    experiment: Optional[str] = MISSING
    hparams_search_metric: str = MISSING


def register() -> None:
    """Store the root schema; conf/config.yaml names it first in its defaults list.

    Only the root is stored: it types every group node, and a group schema
    stored on its own would be listed by --help and selectable (lora=lora_schema).
    """
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="schema", node=_root_with_open_maps())


# Maps whose keys are the user's own names (file columns, role names, template fields): open to new keys,
# so that `data.roles={human: user}` and `data.columns.output=NAME` work as written, without a `+`.
OPEN_MAPS = {"data": (DataSchema, ("columns", "roles", "custom_template"))}


def _root_with_open_maps() -> DictConfig:
    """The root schema with OPEN_MAPS unlocked: Hydra locks the composed config (struct) and an explicit
    flag on a node is the only thing that survives into its children."""
    root = OmegaConf.structured(RootSchema)
    for group, (schema, keys) in OPEN_MAPS.items():
        root[group] = OmegaConf.structured(schema)
        for key in keys:
            root[group][key] = {}
            OmegaConf.set_struct(root[group][key], False)
    return root


# The lora knobs each PEFT method has no use for (ftsweep.adapters.peft_config), with the one value they may hold:
# a sweep over such a knob would make cells that train alike under different names.
_LORA_ONLY = {"bias": "none", "use_dora": False, "use_rslora": False, "init": True}
UNUSED: dict[str, dict[str, Any]] = {
    "loha": _LORA_ONLY, "lokr": _LORA_ONLY, "adalora": _LORA_ONLY,
    "vera": {**_LORA_ONLY, "alpha": None},  # VeRA learns its scale vectors
    "ia3": {**_LORA_ONLY, "r": None, "alpha": None, "dropout": None},  # IA3 learns one vector per activation
}


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
    unused = UNUSED.get(str(L.method), {})
    for key, off in unused.items():
        need(L[key] == off, f"lora.{key}={L[key]}: lora={L.name} ({L.method}) does not use it, so cells that differ in it "
                            f"would train alike; leave it at {'null' if off is None else str(off).lower()}")
    for key in ("r", "alpha", "dropout"):
        need(key in unused or L[key] is not None, f"lora.{key} is required: lora={L.name} uses it, e.g. lora.{key}=...")
    need(L.r is None or L.r >= 1, f"lora.r={L.r}: the rank must be >= 1 (e.g. lora.r=8)")
    need(L.alpha is None or L.alpha > 0, f"lora.alpha={L.alpha}: must be > 0 (usually 2*r)")
    need(L.dropout is None or 0 <= L.dropout < 1, f"lora.dropout={L.dropout}: must be in [0, 1)")
    need(O.lr > 0, f"optim.lr={O.lr}: must be > 0 (e.g. optim.lr=3e-4)")
    need(O.micro_batch_size >= 1, f"optim.micro_batch_size={O.micro_batch_size}: must be >= 1")
    need(O.grad_accum >= 1, f"optim.grad_accum={O.grad_accum}: must be >= 1")
    need(O.max_steps > 0 or O.epochs > 0, "optim.max_steps and optim.epochs: set one of them > 0")
    need(0 <= O.warmup_ratio < 1, f"optim.warmup_ratio={O.warmup_ratio}: must be in [0, 1)")
    need(O.weight_decay >= 0, f"optim.weight_decay={O.weight_decay}: must be >= 0")
    need(O.max_grad_norm >= 0, f"optim.max_grad_norm={O.max_grad_norm}: must be >= 0 (0 disables clipping)")
    need(D.source == "synthetic" or bool(D.path), f"data={D.name} reads a file: set data.path=... (a JSON, JSONL, CSV or Parquet file, or a hub id)")
    # The built-in set reads no file: `python -m ftsweep data.path=mine.jsonl` (no data=...) would otherwise train on
    # the synthetic records and hold out synthetic ones, whatever the file holds.
    for key in ("path", "val_path", "test_path") if D.source == "synthetic" else ():
        need(not D[key], f"data.{key}={D[key]}: data={D.name} makes its own records and reads no file; to use the file, "
                         f"name its format too: data=alpaca, sharegpt, messages, text or multiple_choice")
    # A data file that is not there fails here, in a second, not after the libraries load (mode=plan reads no data).
    for path in ((D.path, D.val_path, D.test_path) if cfg.mode != "plan" else ()):
        if path:
            from ftsweep.data.sources import DataError, local_file

            try:
                local_file(D, path)
            except DataError as exc:
                errors.append(str(exc))
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
    for key, value in (("data.packing", D.packing), ("data.group_by_length", D.group_by_length),
                       ("train.gradient_checkpointing", cfg.train.gradient_checkpointing)):
        need(isinstance(value, bool) or value == "auto", f"{key}={value}: choose true, false or auto")
    gpu_mem = cfg.plan.gpu_mem_gb
    need(gpu_mem == "auto" or (isinstance(gpu_mem, (int, float)) and not isinstance(gpu_mem, bool) and gpu_mem > 0),
         f"plan.gpu_mem_gb={gpu_mem}: give the GPU's memory in GiB (a number > 0) or auto")
    from ftsweep.metrics import TASK_METRICS, searchable

    known = TASK_METRICS.get(str(T.name), ())
    for name in T.metrics if T.name in TASK_METRICS else ():
        need(name in known, f"task.metrics: task={T.name} cannot compute {name!r}; choose from {', '.join(known)}")
    # Choosing by the test set makes its numbers a score the search optimized, not an estimate of unseen data.
    search = str(cfg.hparams_search_metric)
    if search.startswith("test_"):
        errors.append(f"hparams_search_metric={search}: a search that chooses by data.test_path's numbers leaves no "
                      f"unseen data to report; choose by the held-out set, e.g. hparams_search_metric="
                      f"{search.removeprefix('test_') if search != 'test_loss' else 'eval_loss'}")
    elif T.name in TASK_METRICS and search not in searchable(T.metrics):
        # A search by a number no run reports would score every trial the worst value, and choose at random.
        errors.append(f"hparams_search_metric={search}: no run of task={T.name} reports it; choose a loss "
                      f"(eval_loss, perplexity) or one of task.metrics ({', '.join(T.metrics) or 'none'})")
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


# Keys that do not change what is trained. A run differing only in these is the same run: the same
# config hash (so skip_finished skips it), no part of its directory name, and no factor in the report.
# train.chunked_loss changes how much memory the loss takes, not the loss (ftsweep.lm_loss).
RESULT_NEUTRAL_KEYS = ("logger", "train.progress", "train.chunked_loss", "mode", "skip_finished", "preview", "plan",
                       "hparams_search_metric", "project", "experiment")  # the last two: names for the trackers


def config_hash(cfg: DictConfig | dict) -> str:
    """Stable 12-hex-digit hash of everything that shapes the trained result."""
    data = plain(cfg) if isinstance(cfg, DictConfig) else json.loads(json.dumps(cfg))
    for key in RESULT_NEUTRAL_KEYS:
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    blob = json.dumps(data, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
