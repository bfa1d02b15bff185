"""The correctness half of speed: padding-free batches compute the same loss, the tokenized cache keys are right."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import data_cfg
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


def synthetic_cfg(**changes):
    return data_cfg(**{"name": "synthetic", "source": "synthetic", "val_size": 64, "max_length": 128, "num_records": 200,
                       "synthetic_tasks": ["extract"], **changes})


def test_cache_key_changes_with_what_shapes_the_tokens_and_nothing_else(tok, tiny_model_dir):
    from transformers import AutoTokenizer

    task = OmegaConf.create({"name": "sft", "num_labels": None})
    chatml = templates.resolve(None, tok)
    key = cache.cache_key(synthetic_cfg(), task, tok, chatml)
    # Not changed by what is cut after loading or by training knobs outside data:
    assert cache.cache_key(synthetic_cfg(n=50), task, tok, chatml) == key
    assert cache.cache_key(synthetic_cfg(packing=True, group_by_length=True), task, tok, chatml) == key
    # Changed by max length, template, tokenizer, task and the source:
    assert cache.cache_key(synthetic_cfg(max_length=64), task, tok, chatml) != key
    assert cache.cache_key(synthetic_cfg(), task, tok, templates.resolve("llama2", tok)) != key
    assert cache.cache_key(synthetic_cfg(train_on_prompt=True), task, tok, chatml) != key
    assert cache.cache_key(synthetic_cfg(num_records=300), task, tok, chatml) != key
    assert cache.cache_key(synthetic_cfg(), OmegaConf.create({"name": "classify", "num_labels": 2}), tok, chatml) != key
    other = AutoTokenizer.from_pretrained(tiny_model_dir)
    other.add_tokens(["<extra>"])
    assert cache.cache_key(synthetic_cfg(), task, other, chatml) != key


def test_a_changed_file_is_a_new_key(tok, tmp_path):
    task = OmegaConf.create({"name": "sft", "num_labels": None})
    path = tmp_path / "d.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n')
    a = cache.cache_key(synthetic_cfg(source="auto", path=str(path)), task, tok, None)
    path.write_text('{"instruction": "a", "output": "c"}\n')
    assert cache.cache_key(synthetic_cfg(source="auto", path=str(path)), task, tok, None) != a


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


# ---- the `auto` speed knobs (ftsweep/auto.py) -------------------------------------------------------------


def _compose(overrides: list[str]):
    from hydra import compose, initialize_config_dir

    import ftsweep.cli  # registers the schemas and the run-name resolver

    with initialize_config_dir(config_dir=ftsweep.cli.config_dir(), version_base="1.3"):
        return compose("config", overrides=overrides)


@pytest.fixture
def h200(monkeypatch):
    """torch.cuda.get_device_properties(0) as an H200 reports it (the rest of CUDA is not there)."""
    import torch

    class H200:
        total_memory = 150_110_011_392

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: H200)


@pytest.mark.parametrize("cuda, attn, task, rows, packed", [
    (False, "sdpa", "sft", (4, 512), False),
    (False, "flash_attention_2", "sft", (4, 512), False),  # no GPU: padded batches
    (True, "sdpa", "sft", (4, 1024), True),  # a 4096-token row's dense block-diagonal mask: measured faster on an H200
    (True, "sdpa", "sft", (8, 1024), False),  # longer rows: the mask and its attention grow with the square
    (True, "sdpa", "sft", (1, 8192), False),
    (True, "eager", "sft", (4, 512), False),
    (True, "flash_attention_2", "sft", (16, 4096), True),  # no mask at all
    (True, "flash_attention_2", "classify", (4, 512), False),  # one label per row
])
def test_packing_auto_packs_on_a_gpu_and_nothing_groups_batches_by_length(cuda, attn, task, rows, packed, h200):
    from ftsweep import auto

    micro, length = rows
    cfg = _compose([f"model.attn_implementation={attn}", f"task={task}", f"optim.micro_batch_size={micro}",
                    f"data.max_length={length}"])
    assert cfg.data.packing == "auto" and cfg.data.group_by_length is False  # the shipped defaults
    assert auto.packing(cfg.data, cfg.task, cfg.model, cuda=cuda, micro_batch_size=micro) is packed
    resolved = auto.resolve(cfg, cuda=cuda)
    assert (resolved["data.packing"], resolved["data.group_by_length"]) == (packed, False)


def test_the_memory_budget_is_this_gpus_unless_the_user_caps_it(h200):
    from ftsweep import auto

    assert auto.memory_budget_gib(_compose([]), cuda=False) == 24  # auto without a GPU: planning for a 24 GiB card
    assert auto.memory_budget_gib(_compose(["plan.gpu_mem_gb=80"]), cuda=False) == 80
    assert auto.memory_budget_gib(_compose([]), cuda=True) == pytest.approx(139.8, abs=0.05)
    assert auto.memory_budget_gib(_compose(["plan.gpu_mem_gb=24"]), cuda=True) == 24  # the user's cap (a shared GPU)
    assert auto.memory_budget_gib(_compose(["plan.gpu_mem_gb=200"]), cuda=True) == pytest.approx(139.8, abs=0.05)
    assert auto.memory_budget_gib(_compose(["plan.gpu_mem_gb=200", "mode=plan"]), cuda=True) == 200  # another card
    # The Qwen2.5-7B cell of bench/gpu.py (micro 4 x 1024, 35 GiB planned without checkpointing) trains without it there.
    big = _compose(["model=qwen2.5-7b-instruct", "data.max_length=1024"])
    on, estimate, budget = auto.gradient_checkpointing(big, cuda=True)
    assert on is False and 24 < estimate < budget


@pytest.mark.parametrize("packing, grouping, packed, grouped", [
    ("true", "auto", True, False), ("false", "auto", False, False), ("false", "false", False, False),
    ("auto", "false", False, False), ("true", "true", True, True), ("false", "true", False, True),
])
def test_set_values_win_over_auto(packing, grouping, packed, grouped):
    from ftsweep import auto

    cfg = _compose([f"data.packing={packing}", f"data.group_by_length={grouping}"])
    assert auto.packing(cfg.data, cfg.task, cfg.model, cuda=False) is packed
    assert auto.group_by_length(cfg.data) is grouped


def test_gradient_checkpointing_auto_follows_the_plan_without_it():
    from ftsweep import auto, plan

    cfg = _compose([])  # the tiny model: a few MiB of activations, far under plan.gpu_mem_gb
    on, estimate, budget = auto.gradient_checkpointing(cfg, cuda=False)
    assert on is False and budget == 24 and estimate < 1
    # The same estimate mode=plan gives the cell with checkpointing off.
    off = _compose(["train.gradient_checkpointing=false"])
    assert estimate == pytest.approx(plan.plan_cell(off)["memory_gib"]["total"])
    # A 7B cell whose activations without checkpointing exceed 24 GiB turns it on; with room, off.
    big = ["model=qwen2.5-7b-instruct", "optim.micro_batch_size=8", "data.max_length=2048"]
    on, estimate, _ = auto.gradient_checkpointing(_compose(big), cuda=False)
    assert on is True and estimate > 24
    on, _, _ = auto.gradient_checkpointing(_compose([*big, f"plan.gpu_mem_gb={int(estimate) + 1}"]), cuda=False)
    assert on is False
    # A set value is kept, with no plan.
    assert auto.gradient_checkpointing(_compose([*big, "train.gradient_checkpointing=false"]), cuda=False) == (False, None, None)


def test_resolve_records_every_choice_and_apply_writes_booleans():
    from ftsweep import auto

    cfg = _compose(["data.packing=false", "data.group_by_length=auto"])
    resolved = auto.resolve(cfg, cuda=False)
    assert resolved["data.packing"] is False and resolved["data.group_by_length"] is False
    assert resolved["train.gradient_checkpointing"] is False
    assert resolved["auto_knobs"] == ["data.group_by_length", "train.gradient_checkpointing"]
    assert resolved["memory_budget_gib"] == 24 and resolved["plan_gib_without_checkpointing"] < 1
    auto.apply(cfg, resolved)
    assert (cfg.data.packing, cfg.data.group_by_length, cfg.train.gradient_checkpointing) == (False, False, False)


def test_a_value_other_than_true_false_or_auto_is_refused():
    from ftsweep.config import ConfigError, validate

    with pytest.raises(ConfigError, match=r"data.packing=sometimes: choose true, false or auto"):
        validate(_compose(["data.packing=sometimes"]))


@pytest.mark.slow
def test_the_default_cpu_run_trains_the_samplers_batches_which_packing_trains_exactly_and_grouping_does_not(cli, tmp_path):
    """The CPU default pads batches in the sampler's order. Packing trains the very same batches to the same losses
    with no padding; length grouping wastes little padding but trains other batches (another loss curve)."""
    import json
    import random

    from conftest import FAST

    from ftsweep import artifacts

    rng = random.Random(0)
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps({"instruction": "Count the words.", "input": " ".join(["stone"] * rng.randint(2, 60)),
                                        "output": "many"}) + "\n" for _ in range(120)))
    runs = {}
    for name, extra in (("default", []), ("packed", ["data.packing=true"]), ("grouped", ["data.group_by_length=true"])):
        run = tmp_path / name
        proc = cli(["data=alpaca", f"data.path={data}", "data.val_size=8", *FAST, "optim.max_steps=8", "train.logging_steps=1",
                    "eval.num_samples=0", f"hydra.run.dir={run}", *extra])
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = [r for r in artifacts.read_metrics(run / artifacts.METRICS) if r["split"] == "train"]
        runs[name] = {"efficiency": json.loads((run / artifacts.SUMMARY).read_text())["padding_efficiency"],
                      "tokens": [r["tokens_seen"] for r in lines], "losses": [r["loss"] for r in lines]}
    default, packed, grouped = runs["default"], runs["packed"], runs["grouped"]
    assert default["efficiency"] < 0.75 and packed["efficiency"] == 1.0 and grouped["efficiency"] > 0.85, runs
    # Float rounding only: the packed attention sums in another order (1.3e-4 relative at most over these 8 steps).
    assert packed["tokens"] == default["tokens"] and packed["losses"] == pytest.approx(default["losses"], rel=5e-4)
    assert grouped["tokens"] != default["tokens"]  # other examples share each batch
