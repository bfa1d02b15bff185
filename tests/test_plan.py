"""mode=plan: parameters and memory per cell from configs alone, offline, for the shipped models."""

from __future__ import annotations

import json

import pytest

from ftsweep.plan import quantized_bytes_per_param


def test_quantized_bytes_per_param_arithmetic():
    class Q:
        bits, double_quant = 4, True

    assert quantized_bytes_per_param(Q) == pytest.approx(0.5 + 1 / 64 + 4 / (64 * 256))
    Q.double_quant = False
    assert quantized_bytes_per_param(Q) == pytest.approx(0.5625)
    Q.bits = 16
    assert quantized_bytes_per_param(Q) == 0


def test_activation_arithmetic_training_and_chunked_evaluation():
    """Qwen2.5-7B at micro batch 4 x 1024, eval.batch_size 16: training's and the held-out loss's logits are one
    chunk's, not the batch's (the held-out batch's were the whole run's peak on an H200)."""
    from conftest import compose
    from transformers import AutoConfig

    from ftsweep import lm_loss, plan

    cfg = compose(["model=qwen2.5-7b-instruct", "optim.micro_batch_size=4", "data.max_length=1024",
                   "eval.batch_size=16", "train.gradient_checkpointing=true"])
    arch = dict(cfg.model.arch)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    h, i, layers, vocab = 3584, 18944, 28, 152064
    train, evaluation = plan.activation_bytes(cfg, config)
    tokens, eval_tokens = 4 * 1024, 16 * 1024
    chunk = lm_loss.CHUNK_TOKENS
    assert train == layers * tokens * h * 2 + tokens * (8 * h + 4 * i) * 2 + chunk * vocab * 14
    assert evaluation == eval_tokens * (4 * h + 3 * i + h) * 2 + chunk * vocab * 10
    whole_train, whole_eval = plan.activation_bytes(cfg, config, chunked=False)  # a model lm_loss cannot split
    assert whole_eval - evaluation == (eval_tokens - chunk) * vocab * 10  # 23.0 GiB more
    assert whole_train - train == (tokens - chunk) * vocab * 14  # 6.1 GiB more
    off = compose(["model=qwen2.5-7b-instruct", "optim.micro_batch_size=4", "data.max_length=1024",
                   "eval.batch_size=16", "train.gradient_checkpointing=true", "train.chunked_loss=false"])
    assert plan.activation_bytes(off, config)[0] == whole_train
    # The cell's estimate takes the larger phase: here the held-out batch of 16 (3.7 GiB) over training's 3.3.
    cell = plan.plan_cell(cfg)
    assert cell["activations_peak"] == "evaluation" and evaluation > train
    assert cell["memory_gib"]["activations"] == cell["activations_gib"]["evaluation"] == round(evaluation / 2**30, 3)


@pytest.mark.slow
def test_plan_for_shipped_7b_models_offline(cli, tmp_path):
    sweep = tmp_path / "plan"
    proc = cli(["-m", "model=qwen2.5-7b-instruct,llama2-7b,yi-6b-chat", "quant=nf4,none", "mode=plan", "plan.gpu_mem_gb=12",
                f"hydra.sweep.dir={sweep}"], timeout=300, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    plans = {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/plan.json")}
    assert len(plans) == 6 and not list(sweep.glob("*/summary.json"))  # nothing trained
    qwen = plans["model=qwen2.5-7b-instruct,quant=nf4"]
    # Qwen2.5-7B: 7,615,616,512 base parameters; LoRA r=8 on all 7 linear layers of 28 blocks = 20,185,088 trainable.
    # All params include the adapter's, as PEFT prints: 20,185,088 || all params: 7,635,801,600 || trainable%: 0.2643.
    assert qwen["total_params"] == 7_635_801_600 and qwen["trainable_params"] == 20_185_088
    llama = plans["model=llama2-7b,quant=nf4"]
    assert llama["total_params"] == 6_738_415_616 + 19_988_480 and llama["trainable_params"] == 19_988_480
    for model in ("qwen2.5-7b-instruct", "llama2-7b", "yi-6b-chat"):
        nf4, none = plans[f"model={model},quant=nf4"], plans[f"model={model},quant=none"]
        assert nf4["memory_gib"]["base_weights"] < 0.6 * none["memory_gib"]["base_weights"]
        assert nf4["fits"] and not none["fits"]  # bf16/fp16 7B bases do not fit in 12 GiB
    table = (sweep / "plan.md").read_text()
    assert table.count("**no**") == 3 and "model=llama2-7b,quant=none" in table


def test_plan_reads_the_local_directory_not_the_model_files_facts(cli, tmp_path):
    """model=qwen2.5-7b-instruct with model.name_or_path=DIR plans the model in DIR (here a 2-layer Qwen2)."""
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    h, i, layers, heads, kv, vocab = 64, 160, 2, 4, 2, 1000
    model_dir = tmp_path / "small-qwen"
    Qwen2Config(hidden_size=h, intermediate_size=i, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, vocab_size=vocab, tie_word_embeddings=False).save_pretrained(model_dir)
    with torch.device("meta"):
        base = sum(p.numel() for p in AutoModelForCausalLM.from_config(Qwen2Config.from_pretrained(model_dir)).parameters())
    # LoRA r=8 on all 7 linear layers of each block: r x (in + out) per layer.
    kv_dim = h // heads * kv
    r = 8
    lora = layers * r * ((h + h) + (h + kv_dim) * 2 + (h + h) + (h + i) * 2 + (i + h))
    out = tmp_path / "plan"
    proc = cli(["model=qwen2.5-7b-instruct", f"model.name_or_path={model_dir}", "mode=plan", f"hydra.run.dir={out}"],
               env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    plan = json.loads((out / "plan.json").read_text())
    assert plan["trainable_params"] == lora and plan["total_params"] == base + lora
    assert plan["config_source"] == f"config.json in {model_dir}"
    assert f"from config.json in {model_dir}" in proc.stdout


def test_plan_says_when_it_uses_the_model_files_facts(tmp_path):
    from omegaconf import OmegaConf

    from ftsweep.plan import model_config_and_source

    cfg = OmegaConf.load("conf/model/qwen2.5-7b-instruct.yaml")
    cfg.name_or_path, cfg.trust_remote_code, cfg.builtin = "nobody/not-downloaded-model", False, None
    config, source = model_config_and_source(cfg)
    assert config.hidden_size == 3584 and source == "arch: facts of model=qwen2.5-7b-instruct (not available locally)"


@pytest.mark.parametrize("optimizer, state_bytes", [("adamw", 8), ("paged_adamw_8bit", 2)])
def test_adapter_memory_is_weights_gradients_and_two_optimizer_moments(optimizer, state_bytes):
    """Qwen2.5-7B, LoRA r=8 on every linear layer: per layer r x (in + out) summed over q, k, v, o, gate, up, down
    = 8 x 90,112, times 28 layers = 20,185,088 trainable parameters. Each costs 4 bytes of fp32 weight, 4 of
    gradient and two Adam moments: 8 bytes in fp32, 2 in 8 bits."""
    from conftest import compose

    from ftsweep import plan
    from ftsweep.metrics import GIB

    cell = plan.plan_cell(compose(["model=qwen2.5-7b-instruct", "lora.r=8", f"optim={optimizer}"]))
    assert cell["trainable_params"] == 28 * 8 * (2 * (3584 + 3584) + 2 * (3584 + 512) + 3 * (3584 + 18944))
    assert cell["memory_gib"]["adapter_grads_optimizer"] == round(20_185_088 * (4 + 4 + state_bytes) / GIB, 3)
