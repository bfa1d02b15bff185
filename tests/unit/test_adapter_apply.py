"""The adapter on a real (tiny, in-memory, random) Llama: which layers it wraps, what stays frozen, what the
quant knobs do to the base, what PiSSA/OLoRA save, EVA's data pass, and LoRA+'s learning rates. Nothing is
trained; each model is a 1-layer Llama of width 16 built in milliseconds."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from lane import configured as compose
from transformers import LlamaConfig, LlamaForCausalLM

from ftsweep import adapters

LINEAR = ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]


def tiny(dtype=torch.float32):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).to(dtype)


def wrapped(option="lora", *overrides, quant="none", gc=False, total_steps=None, family="tiny", model=None):
    cfg = compose([f"lora={option}", f"quant={quant}", *overrides])
    peft_model = adapters.apply(model if model is not None else tiny(), cfg.lora, cfg.quant, "sft", family, gc, total_steps)
    return peft_model, cfg


def lora_layers(model) -> dict[str, int]:
    """Short module name -> rank of its LoRA A, for every wrapped layer."""
    return {name.split(".")[-1]: module.lora_A["default"].out_features
            for name, module in model.named_modules() if hasattr(module, "lora_A") and "default" in module.lora_A}


def test_lora_wraps_every_linear_layer_but_the_head_and_trains_only_the_adapter():
    model, _ = wrapped("lora", "lora.r=4")
    assert lora_layers(model) == {name: 4 for name in LINEAR}
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert len(trainable) == 2 * len(LINEAR)
    assert not any("lm_head" in n for n in trainable)


@pytest.mark.parametrize("preset, names", [("attention", ["k_proj", "o_proj", "q_proj", "v_proj"]),
                                           ("mlp", ["down_proj", "gate_proj", "up_proj"])])
def test_a_preset_wraps_its_family_of_layers(preset, names):
    model, _ = wrapped("lora", f"lora.target_modules={preset}")
    assert sorted(lora_layers(model)) == names


def test_a_target_the_model_lacks_is_refused_with_the_available_names():
    with pytest.raises(ValueError) as err:
        wrapped("lora", "lora.target_modules=[q_proj,qkv_proj]")
    assert str(err.value) == ("lora.target_modules: ['qkv_proj'] match no module of this model; available: "
                              + ", ".join(LINEAR) + " (or a preset: all-linear, attention, mlp)")


def test_adalora_on_the_model_gets_the_run_length():
    model, _ = wrapped("adalora", "lora.r=4", total_steps=40)
    config = model.peft_config["default"]
    assert (config.total_step, config.target_r, config.init_r) == (40, 4, 8)


def test_back_to_the_start_restores_the_adapter_and_adaloras_allocator_and_nothing_else():
    """What an out-of-memory retry goes back to: the trainable weights as copied, AdaLoRA with nothing pruned and no
    importance measured (a fresh run's state), the frozen base untouched."""
    model, _ = wrapped("adalora", "lora.r=4", total_steps=10)
    start = adapters.trainable_state(model)
    assert start and all(t.device.type == "cpu" for t in start.values())
    ids = torch.arange(2, 18).unsqueeze(0)
    model(input_ids=ids, labels=ids).loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(1.0)
    model.base_model.update_and_allocate(1)
    allocator, config = model.base_model.rankallocator, model.peft_config["default"]
    assert allocator.exp_avg_ipt and config.rank_pattern  # training had measured and pruned
    base = {n: p.clone() for n, p in model.named_parameters() if not p.requires_grad}
    adapters.restore_trainable(model, start)
    assert all(torch.equal(p, start[n]) for n, p in model.named_parameters() if p.requires_grad)
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if not p.requires_grad)
    assert (allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc, config.rank_pattern) == ({}, {}, {}, None)


def test_dora_adds_a_magnitude_vector_to_each_layer():
    model, _ = wrapped("dora", "lora.target_modules=[q_proj]")
    magnitudes = [n for n, p in model.named_parameters() if "lora_magnitude_vector" in n and p.requires_grad]
    assert len(magnitudes) == 1 and "q_proj" in magnitudes[0]


# ---- the base model: frozen, checkpointed, upcast for k-bit training ------------------------------------


def test_the_base_is_frozen_and_gradient_checkpointing_follows_the_flag():
    model = tiny()
    cfg = compose(["quant=none"])
    prepared = adapters.prepare_base(model, cfg.quant, gradient_checkpointing=False)
    assert prepared is model and not any(p.requires_grad for p in model.parameters())
    assert model.is_gradient_checkpointing is False

    model = tiny()
    adapters.prepare_base(model, cfg.quant, gradient_checkpointing=True)
    assert model.is_gradient_checkpointing is True
    # Non-reentrant checkpointing (works with a frozen base), and the embeddings' output asks for grads so
    # that the checkpointed layers see a graph to recompute.
    assert model.model.layers[0]._gradient_checkpointing_func.keywords == {"use_reentrant": False}
    assert model.get_input_embeddings()(torch.tensor([[1, 2]])).requires_grad


@pytest.mark.parametrize("quant, overrides, dtype", [
    ("nf4", [], torch.float32),  # k-bit training: norms and embeddings upcast to fp32
    ("int8", [], torch.float32),
    ("nf4", ["quant.upcast_non_quantized=false"], torch.bfloat16),  # the knob turns the upcast off
    ("none", ["quant.upcast_non_quantized=true"], torch.bfloat16),  # no quantization: nothing to upcast for
])
def test_upcast_non_quantized_upcasts_only_a_quantized_base(quant, overrides, dtype):
    model = tiny(torch.bfloat16)
    cfg = compose([f"quant={quant}", *overrides])
    adapters.prepare_base(model, cfg.quant, gradient_checkpointing=False)
    assert {p.dtype for p in model.parameters()} == {dtype}
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("gc", [True, False])
def test_a_kbit_base_gets_non_reentrant_checkpointing_only_when_asked(gc):
    model = tiny()
    model.is_loaded_in_4bit = True  # what transformers sets on a bitsandbytes 4-bit model
    adapters.prepare_base(model, compose(["quant=nf4"]).quant, gradient_checkpointing=gc)
    assert model.is_gradient_checkpointing is gc
    if gc:
        assert model.model.layers[0]._gradient_checkpointing_func.keywords == {"use_reentrant": False}
    assert not any(p.requires_grad for p in model.parameters())


def test_the_adapter_wrap_prepares_the_base_first():
    model, _ = wrapped("lora", quant="none", gc=True)
    assert model.base_model.model.is_gradient_checkpointing is True
    model, _ = wrapped("lora", "quant.upcast_non_quantized=true", quant="nf4", model=tiny(torch.bfloat16))
    assert model.base_model.model.model.norm.weight.dtype == torch.float32


def test_classify_wraps_a_classifier_whose_head_trains_too():
    from transformers import LlamaForSequenceClassification

    torch.manual_seed(0)
    base = LlamaForSequenceClassification(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32,
                                                      num_hidden_layers=1, num_attention_heads=2,
                                                      num_key_value_heads=2, num_labels=3, pad_token_id=0))
    cfg = compose(["lora=lora", "quant=none", "lora.target_modules=[q_proj]"])
    model = adapters.apply(base, cfg.lora, cfg.quant, "classify", "tiny", False)
    assert type(model).__name__ == "PeftModelForSequenceClassification"
    assert model.peft_config["default"].task_type == "SEQ_CLS"
    assert any("score" in n and p.requires_grad for n, p in model.named_parameters())


# ---- PiSSA / OLoRA: the saved adapter fits the original base ---------------------------------------------


def _adapter_config(folder):
    return json.loads((folder / "adapter_config.json").read_text())


@pytest.mark.parametrize("option", ["pissa", "olora"])
def test_pissa_and_olora_save_a_plain_lora_of_rank_2r_for_the_original_base(tmp_path, option):
    model, cfg = wrapped(option, "lora.r=2", "lora.target_modules=[q_proj]")
    init_name = model.peft_config["default"].init_lora_weights
    initial = adapters.save_initial(model, cfg.lora, tmp_path)
    assert initial == tmp_path / "adapter_init"
    # The initial adapter reloads without re-running its SVD / QR; the live config keeps its init.
    assert _adapter_config(initial)["init_lora_weights"] is True
    assert (initial / "adapter_model.safetensors").is_file()
    assert model.peft_config["default"].init_lora_weights == init_name
    adapters.save(model, tmp_path / "adapter", initial)
    saved = _adapter_config(tmp_path / "adapter")
    assert saved["r"] == 4 and saved["init_lora_weights"] is True
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert not initial.exists()  # the initial adapter is only a means to the conversion


@pytest.mark.parametrize("option", ["lora", "dora", "rslora"])
def test_other_inits_keep_no_initial_adapter_and_save_as_trained(tmp_path, option):
    model, cfg = wrapped(option, "lora.r=2", "lora.target_modules=[q_proj]")
    assert adapters.save_initial(model, cfg.lora, tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    adapters.save(model, tmp_path / "adapter")
    saved = _adapter_config(tmp_path / "adapter")
    assert saved["r"] == 2 and saved["use_dora"] is (option == "dora")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()


# ---- EVA: one pass over training data after wrapping -----------------------------------------------------


class Spy:
    """A collator that records which training examples each batch holds."""

    def __init__(self):
        self.batches = []

    def __call__(self, rows):
        self.batches.append([int(r["id"]) for r in rows])
        ids = torch.stack([r["input_ids"] for r in rows])
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def bundle(n):
    g = torch.Generator().manual_seed(1)
    return SimpleNamespace(train=[{"id": i, "input_ids": torch.randint(0, 32, (6,), generator=g)} for i in range(n)])


def test_eva_is_wrapped_without_its_init_then_initialised_from_the_first_64_examples_in_batches_of_8():
    model, cfg = wrapped("eva", "lora.r=2", "lora.target_modules=[q_proj,v_proj]")
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    assert q.lora_A["default"].weight.device.type == "meta"  # not computed by the wrap
    spy = Spy()
    adapters.initialize(model, cfg.lora, bundle(70), spy)
    assert spy.batches == [list(range(j, j + 8)) for j in range(0, 64, 8)]
    assert q.lora_A["default"].weight.device.type == "cpu"
    assert torch.isfinite(q.lora_A["default"].weight).all()


def test_evas_data_pass_draws_no_progress_bar(capfd):
    model, cfg = wrapped("eva", "lora.r=2", "lora.target_modules=[q_proj]")
    capfd.readouterr()
    adapters.initialize(model, cfg.lora, bundle(16), Spy())
    assert "it/s" not in capfd.readouterr().err  # tqdm's "0/2 layers have converged: 3it [00:00, 9.5it/s]"


def test_eva_with_fewer_examples_uses_them_all_and_other_inits_do_no_data_pass():
    model, cfg = wrapped("eva", "lora.r=2", "lora.target_modules=[q_proj]")
    spy = Spy()
    adapters.initialize(model, cfg.lora, bundle(20), spy)
    assert spy.batches == [list(range(0, 8)), list(range(8, 16)), [16, 17, 18, 19]]

    model, cfg = wrapped("lora", "lora.r=2", "lora.target_modules=[q_proj]")
    spy = Spy()
    before = model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.clone()
    adapters.initialize(model, cfg.lora, bundle(20), spy)
    assert spy.batches == []
    assert torch.equal(model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight, before)


# ---- LoRA+: B learns loraplus_lr_ratio times faster than A ----------------------------------------------


def trainer_args(cfg, tmp_path):
    from ftsweep.training import training_arguments

    return training_arguments(cfg, tmp_path, int(cfg.optim.micro_batch_size), int(cfg.optim.grad_accum))


@pytest.mark.parametrize("name, cls, state", [("adamw_torch", torch.optim.AdamW, {"betas": (0.9, 0.999)}),
                                              ("sgd", torch.optim.SGD, {"momentum": 0})])
def test_loraplus_gives_b_its_own_learning_rate_in_the_optimizer_optim_names(tmp_path, name, cls, state):
    model, cfg = wrapped("loraplus", "lora.target_modules=[q_proj]")
    cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.optimizer = 2e-4, 0.01, name
    opt = adapters.optimizer(model, cfg.lora, trainer_args(cfg, tmp_path))
    assert type(opt) is cls  # optim.optimizer is honoured, not replaced by AdamW
    assert all(opt.defaults[k] == v for k, v in state.items())
    groups = {}
    for group in opt.param_groups:
        for p in group["params"]:
            groups[next(n for n, q in model.named_parameters() if q is p)] = (group["lr"], group["weight_decay"])
    a = next(v for n, v in groups.items() if ".lora_A." in n)
    b = next(v for n, v in groups.items() if ".lora_B." in n)
    assert a == (2e-4, 0.01) and b == pytest.approx((2e-4 * 16, 0.01))
    assert len(groups) == 2


def test_without_loraplus_the_trainer_builds_its_optimizer(tmp_path):
    model, cfg = wrapped("lora", "lora.target_modules=[q_proj]")
    assert adapters.optimizer(model, cfg.lora, trainer_args(cfg, tmp_path)) is None
    cfg.lora.loraplus_lr_ratio = 0
    assert adapters.optimizer(model, cfg.lora, trainer_args(cfg, tmp_path)) is None


def test_linear_module_names_count_quantized_linear_classes_and_skip_a_classifier():
    class Linear4bit(torch.nn.Module):  # what bitsandbytes layers look like: not a torch Linear subclass
        pass

    class Head(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = torch.nn.Linear(2, 2)  # first: the modules after it are still listed
            self.gate_proj, self.norm = Linear4bit(), torch.nn.LayerNorm(2)

    assert adapters.linear_module_names(Head()) == ["gate_proj"]
    assert adapters.linear_module_names(tiny()) == LINEAR
