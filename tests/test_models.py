"""The built-in tiny model: deterministic, byte-level, loadable 4-bit through from_pretrained."""

from __future__ import annotations

import hashlib

import pytest
from omegaconf import OmegaConf

from ftsweep import models


def test_tiny_tokenizer_round_trips_any_utf8(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for text in ["hello world", "床前明月光，疑是地上霜。", "emoji 🙂 and tabs\t\n", ""]:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == len(text.encode("utf-8"))  # one token per byte
        assert tok.decode(ids) == text


def test_tiny_chat_template_marks_the_assistant_span(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = tok.apply_chat_template(
        [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "四"}],
        tokenize=True, return_dict=True, return_assistant_tokens_mask=True,
    )
    learned = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tok.decode(learned) == "四<|im_end|>"


def test_tiny_model_is_deterministic(tmp_path):
    a = models.ensure_tiny_model(tmp_path / "a") / "model.safetensors"
    b = models.ensure_tiny_model(tmp_path / "b") / "model.safetensors"
    assert hashlib.sha256(a.read_bytes()).hexdigest() == hashlib.sha256(b.read_bytes()).hexdigest()
    assert a.stat().st_size < 5_000_000


def _cfg(**kw):
    return OmegaConf.create(kw)


@pytest.mark.parametrize("bits,linear_type", [(4, "Linear4bit"), (16, "Linear")])
def test_tiny_loads_quantized_through_from_pretrained(tiny_model_dir, bits, linear_type):
    model_cfg = _cfg(builtin="tiny", name_or_path="tiny", trust_remote_code=False, dtype="float32", allow_pickle=False,
                     attn_implementation="sdpa")
    quant_cfg = _cfg(bits=bits, quant_type="nf4", double_quant=True, compute_dtype="auto")
    tok = models.load_tokenizer(model_cfg)
    model = models.load_model(model_cfg, quant_cfg, _cfg(name="sft"), tok)
    q_proj = model.model.layers[0].self_attn.q_proj
    assert type(q_proj).__name__ == linear_type
    if bits == 4:
        assert q_proj.weight.quant_state.quant_type == "nf4"
    _, total = models.count_params(model)
    # 4-bit weights count at their logical size, so the total does not depend on quantization.
    assert total == 363_136


def test_missing_local_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.name_or_path=.*no such directory"):
        models.resolve_model_path(_cfg(builtin=None, name_or_path=str(tmp_path / "nope")))


def test_an_evaluation_does_not_change_4bit_training_gradients(tiny_model_dir):
    """bitsandbytes repacks 4-bit weights for CPU inference after an eval pass; gradients must not change."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    cfg = OmegaConf.create({"name": "tiny", "name_or_path": str(tiny_model_dir), "dtype": "float32", "trust_remote_code": False,
                            "allow_pickle": False, "attn_implementation": "sdpa"})
    quant = OmegaConf.create({"name": "nf4", "bits": 4, "quant_type": "nf4", "double_quant": True, "compute_dtype": "float32"})
    task = OmegaConf.create({"name": "sft"})
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    batch = tok(["The city is Oslo.", "The name is Ann."], return_tensors="pt", padding=True)

    def grads(evaluate_first: bool) -> torch.Tensor:
        torch.manual_seed(0)
        model = get_peft_model(models.load_model(cfg, quant, task, tok), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        if evaluate_first:
            model.eval()
            with torch.no_grad():
                model(**batch)
        model.train()
        out = model(**batch, labels=batch["input_ids"])
        out.loss.backward()
        # lora_A of the first layer only gets the right gradient if it flows back through the frozen 4-bit layers above.
        return model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["default"].weight.grad.clone()

    assert torch.allclose(grads(False), grads(True), atol=1e-6)
