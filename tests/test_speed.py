"""The correctness half of speed: padding-free batches compute the same loss, the tokenized cache keys are right."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from ftsweep.data import cache, templates
from ftsweep.data.packing import PackingCollator
from ftsweep.data.tokenize import IGNORE, Collator


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def rows(tok, texts):
    out = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False)
        out.append({"input_ids": ids, "labels": [IGNORE] * 4 + ids[4:]})  # a 4-token "prompt"
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_padding_free_loss_equals_padded_loss(tiny_model_dir, tok, attn):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn, dtype=torch.float32).eval()
    model.config.use_cache = False  # as the run trains: packed masks need a forward pass without a KV cache
    feats = rows(tok, ["The city is Oslo.", "Reversed, cloud is duolc.", "The sum is 12.", "x" * 40])
    padded, packed = Collator(tok.pad_token_id)(feats), PackingCollator()(feats)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    with torch.no_grad():
        a = model(**padded).loss
        b = model(**packed).loss
    assert torch.allclose(a, b, atol=1e-5), (a.item(), b.item())


@given(st.lists(st.lists(st.integers(0, 255), min_size=1, max_size=30), min_size=1, max_size=8))
def test_packed_positions_restart_per_example_and_labels_never_cross(seqs):
    feats = [{"input_ids": s, "labels": list(s)} for s in seqs]
    batch = PackingCollator()(feats)
    pos = batch["position_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    expected, start = [], 0
    for s in seqs:
        expected += list(range(len(s)))
        # the first token of each example is never a target: nothing is predicted across the boundary
        assert labels[start] == IGNORE
        assert labels[start + 1:start + len(s)] == s[1:]
        start += len(s)
    assert pos == expected and batch["input_ids"][0].tolist() == [t for s in seqs for t in s]


def data_cfg(**kw):
    base = dict(name="synthetic", source="synthetic", path=None, format="alpaca", columns={}, roles={}, template=None,
                custom_template={}, system=None, instruction_as_system=False, n=None, val_size=64, val_path=None,
                max_length=128, train_on_prompt=False, shuffle=True, shuffle_seed=0, on_bad_record="error",
                hub_config=None, split="train", num_records=200, synthetic_tasks=["extract"])
    base.update(kw)
    return OmegaConf.create(base)


def test_cache_key_changes_with_what_shapes_the_tokens_and_nothing_else(tok, tiny_model_dir):
    from transformers import AutoTokenizer

    task = OmegaConf.create({"name": "sft", "num_labels": None})
    chatml = templates.resolve(None, tok)
    key = cache.cache_key(data_cfg(), task, tok, chatml)
    # Not changed by what is cut after loading or by training knobs outside data:
    assert cache.cache_key(data_cfg(n=50), task, tok, chatml) == key
    assert cache.cache_key(data_cfg(packing=True, group_by_length=True), task, tok, chatml) == key
    # Changed by max length, template, tokenizer, task and the source:
    assert cache.cache_key(data_cfg(max_length=64), task, tok, chatml) != key
    assert cache.cache_key(data_cfg(), task, tok, templates.resolve("llama2", tok)) != key
    assert cache.cache_key(data_cfg(train_on_prompt=True), task, tok, chatml) != key
    assert cache.cache_key(data_cfg(num_records=300), task, tok, chatml) != key
    assert cache.cache_key(data_cfg(), OmegaConf.create({"name": "classify", "num_labels": 2}), tok, chatml) != key
    other = AutoTokenizer.from_pretrained(tiny_model_dir)
    other.add_tokens(["<extra>"])
    assert cache.cache_key(data_cfg(), task, other, chatml) != key


def test_a_changed_file_is_a_new_key(tok, tmp_path):
    task = OmegaConf.create({"name": "sft", "num_labels": None})
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n')
    a = cache.cache_key(data_cfg(source="auto", path=str(path)), task, tok, None)
    path.write_text('{"instruction": "a", "output": "c"}\n')
    assert cache.cache_key(data_cfg(source="auto", path=str(path)), task, tok, None) != a


@pytest.mark.slow
def test_second_run_of_a_sweep_hits_the_tokenized_cache(cli, tmp_path):
    from conftest import FAST

    sweep = tmp_path / "sweep"
    # A record count no other test uses, so the first run must tokenize.
    proc = cli(["-m", "lora.r=4,8", *FAST, "data.num_records=77", "optim.max_steps=2", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = (sweep / "lora.r=4" / "run.log").read_text()
    second = (sweep / "lora.r=8" / "run.log").read_text()
    assert "tokenized data: cache miss" in first and "cache hit" not in first
    assert "tokenized data: cache hit" in second
