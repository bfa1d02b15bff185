"""Load a tokenizer and a base model, quantized or not; build the built-in tiny model.

The tiny model is a 2-layer Llama with a byte-level tokenizer. It is written to
disk once and then loaded through the same ``from_pretrained`` path as Qwen or
Llama, so 4-bit quantization applies to it exactly as it would to a real model.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ftsweep import artifacts

TINY_NAME = "tiny"
# Bump when the tiny model's shape or tokenizer changes: the cache is keyed by it.
TINY_VERSION = 1

# ChatML with {% generation %} markers, so that transformers can return an
# assistant-token mask. Learned span of an assistant turn: its content + <|im_end|>.
TINY_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "{{ '<|im_start|>assistant\\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\\n' }}"
    "{%- else -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
TINY_SPECIAL_TOKENS = ["<|pad|>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def cache_home() -> Path:
    """Where built-in assets live; FTSWEEP_HOME overrides (tests point it at a temp dir)."""
    env = os.environ.get("FTSWEEP_HOME")
    return Path(env) if env else Path.home() / ".cache" / "ftsweep"


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (what ByteLevel uses)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


def build_tiny_tokenizer():
    """A byte-level tokenizer: token id == byte value for ids 0..255, then specials.

    It encodes any UTF-8 text (a Chinese character is 3 tokens) and decodes it back.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_chars = _bytes_to_unicode()
    vocab = {byte_chars[b]: b for b in range(256)}
    for i, tok in enumerate(TINY_SPECIAL_TOKENS):
        vocab[tok] = 256 + i
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<|pad|>",
        bos_token="<s>",
        eos_token="<|im_end|>",
        additional_special_tokens=["</s>", "<|im_start|>"],
        model_max_length=2048,
    )
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    return tokenizer


def _tiny_model_complete(target: Path) -> bool:
    return (target / "config.json").exists() and (target / "model.safetensors").exists()


def ensure_tiny_model(home: Path | None = None, wait_s: float = 600.0) -> Path:
    """Create the tiny model directory once (deterministic: seed 0) and return its path.

    Under torchrun rank 0 builds it and the other ranks wait for it: in a process group transformers'
    save_pretrained writes nothing on ranks other than 0, and such a rank's empty copy, renamed into place
    first, was the one every rank then loaded ("Unrecognized model ... model_type").
    """
    import shutil
    import time

    from ftsweep import distributed

    target = (home or cache_home()) / f"{artifacts.TINY_PREFIX}{TINY_VERSION}"
    if _tiny_model_complete(target):
        return target
    if not distributed.is_main():
        deadline = time.monotonic() + wait_s
        while not _tiny_model_complete(target):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{target}: rank 0 did not create the built-in tiny model within {wait_s:.0f} s")
            time.sleep(0.1)
        return target
    if target.exists() and not _tiny_model_complete(target):  # left incomplete by an earlier version: built again
        shutil.rmtree(target, ignore_errors=True)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tiny_tokenizer()
    vocab_size = 264  # 256 bytes + 5 specials, rounded up to a multiple of 8
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(state)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built in a temp dir beside the target and renamed: a half-written model is never loaded
    # (another process that won the race keeps its copy, which is identical).
    with artifacts.atomic_dir(target) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / artifacts.TINY_MARKER).write_text(json.dumps({"builtin": TINY_NAME, "version": TINY_VERSION}))
        if not _tiny_model_complete(tmp):
            raise RuntimeError(f"the built-in tiny model was not written completely to {tmp}")
    return target


def resolve_model_path(model_cfg) -> str:
    """The directory or hub id that from_pretrained reads."""
    from ftsweep import hub

    if model_cfg.get("builtin") == TINY_NAME and str(model_cfg.name_or_path) == TINY_NAME:
        return str(ensure_tiny_model())  # model.name_or_path=DIR on the tiny config loads a copy from DIR
    path = str(model_cfg.name_or_path)
    # "org/name" is a hub id unless such a directory exists here; "/x", "./x", "~/x" are paths.
    looks_local = path.startswith(("/", ".", "~")) or Path(path).expanduser().exists()
    if looks_local and not Path(path).expanduser().is_dir():
        raise FileNotFoundError(f"model.name_or_path={path}: no such directory; point it at a model directory or a hub id")
    if looks_local:
        return str(Path(path).expanduser())
    hub.go_offline_unless_reachable()
    if hub.offline():
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(path, "config.json"), str):
            raise FileNotFoundError(f"model.name_or_path={path}: not in the local hub cache and {hub.why_offline()}; "
                                    "download it first or point model.name_or_path at a local directory")
    return path


def device_dtype(name: str, on_gpu: bool, bf16_supported: bool) -> str:
    """A dtype setting's name with "auto" resolved for the device: bfloat16 on a GPU that has it, else float16;
    float32 on a CPU (bf16 matmuls run ~2.5x slower than fp32 there, measured on the tiny model)."""
    if name != "auto":
        return name
    if not on_gpu:
        return "float32"
    return "bfloat16" if bf16_supported else "float16"


def compute_dtype(name: str):
    """quant.compute_dtype as a torch dtype; "auto" picks what is fast on this device."""
    import torch

    cuda = torch.cuda.is_available()
    return torch_dtype(device_dtype(name, cuda, cuda and torch.cuda.is_bf16_supported()))


def mixed_precision(model_cfg, quant_cfg, on_gpu: bool, bf16_supported: bool) -> str | None:
    """The Trainer's autocast: "bf16", "fp16", or None for fp32 throughout (always on a CPU).

    The layers compute in quant.compute_dtype on a quantized base and in model.dtype on an unquantized one, and the
    Trainer autocasts to that dtype. fp16 gets the Trainer's loss scaling (its range underflows small gradients);
    bf16 has fp32's range and needs none. The adapter weights stay fp32 either way (PEFT upcasts them)."""
    if not on_gpu:
        return None
    name = device_dtype(quant_cfg.compute_dtype if quant_cfg.bits in (4, 8) else model_cfg.dtype, on_gpu, bf16_supported)
    if name == "float32":
        return None
    return "bf16" if name == "bfloat16" and bf16_supported else "fp16"


def torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "auto": "auto"}[name]


def quantization_config(quant_cfg):
    """quant group -> BitsAndBytesConfig (or None for quant=none)."""
    if quant_cfg.bits not in (4, 8):
        return None
    from transformers import BitsAndBytesConfig

    if quant_cfg.bits == 8:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_cfg.quant_type,  # set explicitly: bitsandbytes defaults to fp4
        bnb_4bit_use_double_quant=quant_cfg.double_quant,
        bnb_4bit_compute_dtype=compute_dtype(quant_cfg.compute_dtype),
    )


def device_map() -> dict[str, Any]:
    """Whole model on one device: this process's GPU (LOCAL_RANK under torchrun) or the CPU."""
    import torch

    if torch.cuda.is_available():
        return {"": int(os.environ.get("LOCAL_RANK", 0))}
    return {"": "cpu"}


def load_tokenizer(model_cfg, path: str | None = None):
    from transformers import AutoTokenizer

    path = path or resolve_model_path(model_cfg)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=bool(model_cfg.trust_remote_code))
    if tokenizer.pad_token is None:
        # Llama-2 and Yi ship without a pad token; padding positions are masked anyway.
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def load_model(model_cfg, quant_cfg, task_cfg, tokenizer, path: str | None = None):
    """Load the base model for the task, quantized as quant_cfg says."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    path = path or resolve_model_path(model_cfg)
    qconfig = quantization_config(quant_cfg)
    dtype = torch_dtype(model_cfg.dtype)
    if qconfig is None and not torch.cuda.is_available() and dtype in (torch.float16,):
        dtype = torch.float32  # fp16 matmuls are not implemented for every CPU op
    kwargs: dict[str, Any] = dict(
        dtype=dtype,
        trust_remote_code=bool(model_cfg.trust_remote_code),
        use_safetensors=None if model_cfg.allow_pickle else True,
        attn_implementation=model_cfg.attn_implementation,
    )
    if qconfig is not None:
        kwargs["quantization_config"] = qconfig
        kwargs["device_map"] = device_map()
    if task_cfg.name == "classify":
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=int(task_cfg.num_labels), **kwargs)
        model.config.pad_token_id = tokenizer.pad_token_id
    else:
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if qconfig is None and torch.cuda.is_available():
        model.to(device_map()[""])
    if qconfig is not None:
        keep_trainable_4bit_layout(model)
    return model


def keep_trainable_4bit_layout(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for CPU inference.

    On CPUs with AVX512-BF16, bitsandbytes 0.50 repacks a Linear4bit's weight
    the first time it runs in eval mode without grad (our baseline evaluation)
    and from then on computes it with gemv_4bit, which has no autograd kernel:
    training after an evaluation would backpropagate wrong input gradients
    through every frozen 4-bit layer. Keeping the training layout keeps one
    numeric path for train and eval.
    """
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def meta_model(model_cfg, task_cfg):
    """The model's modules with no storage (meta device): shapes and counts only."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from ftsweep.plan import model_config  # the planner's facts: the arch: block, or the model's config.json

    config = model_config(model_cfg)
    with torch.device("meta"):
        if task_cfg.name == "classify":
            config.num_labels = int(task_cfg.num_labels)
            return AutoModelForSequenceClassification.from_config(config), config
        return AutoModelForCausalLM.from_config(config), config


def count_params(model) -> tuple[int, int]:
    """(trainable, all) parameters in PEFT's convention, what `print_trainable_parameters()` prints: all
    parameters of the wrapped model, the adapter's included; 4-bit weights count as their logical size."""
    if hasattr(model, "get_nb_trainable_parameters"):  # a PeftModel: its own count, so the numbers are PEFT's
        trainable, total = model.get_nb_trainable_parameters()
        return int(trainable), int(total)
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        # bitsandbytes packs two 4-bit values per uint8 element.
        if p.__class__.__name__ == "Params4bit":
            n *= 2
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
