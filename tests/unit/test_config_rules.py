"""Config validation (each rule on both sides of its boundary), GPU-only settings refused on CPU, and the hash
that decides whether a re-run is the same run. Configs are composed in-process, as the CLI composes them."""

from __future__ import annotations

import pytest
from lane import configured as compose
from omegaconf import OmegaConf

from ftsweep.config import ConfigError, config_hash, cpu_problems, plain, validate


def problems(overrides, cuda=None) -> list[str]:
    """Every line validate() reports for this config ([] when it passes)."""
    try:
        validate(compose(overrides), cuda=cuda)
    except ConfigError as exc:
        return str(exc).splitlines()
    return []


def test_the_default_config_is_valid_on_cpu_and_gpu(default_cfg):
    validate(default_cfg, cuda=False)
    validate(default_cfg, cuda=True)
    validate(default_cfg)


# (a valid value, an invalid value, words of the one problem line the invalid value gives)
BOUNDARIES = [
    ("lora.r=1", "lora.r=0", "lora.r=0: the rank must be >= 1 (e.g. lora.r=8)"),
    ("lora.alpha=0.001", "lora.alpha=0", "lora.alpha=0.0: must be > 0 (usually 2*r)"),
    ("lora.dropout=0", "lora.dropout=1.0", "lora.dropout=1.0: must be in [0, 1)"),
    ("lora.dropout=0.99", "lora.dropout=-0.01", "lora.dropout=-0.01: must be in [0, 1)"),
    ("optim.lr=1e-9", "optim.lr=0", "optim.lr=0.0: must be > 0 (e.g. optim.lr=3e-4)"),
    ("optim.micro_batch_size=1", "optim.micro_batch_size=0", "optim.micro_batch_size=0: must be >= 1"),
    ("optim.grad_accum=1", "optim.grad_accum=0", "optim.grad_accum=0: must be >= 1"),
    ("optim.warmup_ratio=0", "optim.warmup_ratio=1", "optim.warmup_ratio=1.0: must be in [0, 1)"),
    ("optim.warmup_ratio=0.99", "optim.warmup_ratio=-0.1", "optim.warmup_ratio=-0.1: must be in [0, 1)"),
    ("optim.weight_decay=0", "optim.weight_decay=-0.1", "optim.weight_decay=-0.1: must be >= 0"),
    ("optim.max_grad_norm=0", "optim.max_grad_norm=-1", "optim.max_grad_norm=-1.0: must be >= 0 (0 disables clipping)"),
    ("data.n=1", "data.n=0", "data.n=0: must be >= 1 (or null for all records)"),
    ("data.n=null", "data.n=-3", "data.n=-3: must be >= 1 (or null for all records)"),
    ("data.val_size=0.001", "data.val_size=0", "data.val_size=0.0: must be a fraction in (0, 1) or a count >= 1"),
    ("data.val_size=2", "data.val_size=2.5", "data.val_size=2.5: a count must be a whole number"),
    ("data.val_size=0.5", "data.val_size=1.5", "data.val_size=1.5: a count must be a whole number"),
    ("data.max_length=8", "data.max_length=7", "data.max_length=7: must be >= 8 tokens"),
    ("data.on_bad_record=skip", "data.on_bad_record=drop", "data.on_bad_record=drop: choose error or skip"),
    ("quant.bits=8", "quant.bits=2", "quant.bits=2: choose 4, 8 or 16"),
    ("quant.bits=16", "quant.bits=32", "quant.bits=32: choose 4, 8 or 16"),
    ("quant.quant_type=fp4", "quant.quant_type=int4", "quant.quant_type=int4: choose nf4 or fp4"),
    ("mode=plan", "mode=bogus", "mode=bogus: choose one of train, plan, preview"),
    ("mode=preview", "task.name=regress", "task.name=regress: choose sft or classify"),
    ("eval.every_n_steps=0", "eval.every_n_steps=-1", "eval.every_n_steps=-1: must be >= 0"),
    ("data.packing=auto", "data.packing=maybe", "data.packing=maybe: choose true, false or auto"),
    ("data.group_by_length=false", "data.group_by_length=1", "data.group_by_length=1: choose true, false or auto"),
    ("train.gradient_checkpointing=true", "train.gradient_checkpointing=yes",
     "train.gradient_checkpointing=yes: choose true, false or auto"),
    ("logger.backends=[wandb,swanlab]", "logger.backends=[tensorboard]",
     "logger.backends: unknown tracker 'tensorboard'; choose swanlab or wandb"),
    ("optim.max_steps=1", "optim.max_steps=-1", "optim.max_steps and optim.epochs: set one of them > 0"),
    ("hparams_search_metric=exact_match", "hparams_search_metric=test_exact_match",
     "hparams_search_metric=test_exact_match: a search that chooses by data.test_path's numbers leaves no unseen data "
     "to report; choose by the held-out set, e.g. hparams_search_metric=exact_match"),
    ("hparams_search_metric=perplexity", "hparams_search_metric=test_loss",
     "hparams_search_metric=test_loss: a search that chooses by data.test_path's numbers leaves no unseen data "
     "to report; choose by the held-out set, e.g. hparams_search_metric=eval_loss"),
    ("task.metrics=[rougeL]", "task.metrics=[rouge_l]",
     "task.metrics: task=sft cannot compute 'rouge_l'; choose from exact_match, rougeL, bleu"),
    ("hparams_search_metric=rougeL", "hparams_search_metric=accuracy",
     "hparams_search_metric=accuracy: no run of task=sft reports it; choose a loss (eval_loss, perplexity) or one of "
     "task.metrics (exact_match, rougeL, bleu)"),
    ("hparams_search_metric=best_eval_loss", "hparams_search_metric=eval_los",
     "hparams_search_metric=eval_los: no run of task=sft reports it; choose a loss (eval_loss, perplexity) or one of "
     "task.metrics (exact_match, rougeL, bleu)"),
    ("plan.gpu_mem_gb=0.5", "plan.gpu_mem_gb=0", "plan.gpu_mem_gb=0: give the GPU's memory in GiB (a number > 0) or auto"),
    ("plan.gpu_mem_gb=auto", "plan.gpu_mem_gb=-24",
     "plan.gpu_mem_gb=-24: give the GPU's memory in GiB (a number > 0) or auto"),
    ("plan.gpu_mem_gb=80", "plan.gpu_mem_gb=true", "plan.gpu_mem_gb=True: give the GPU's memory in GiB (a number > 0) or auto"),
    ("plan.gpu_mem_gb=24", "plan.gpu_mem_gb=lots", "plan.gpu_mem_gb=lots: give the GPU's memory in GiB (a number > 0) or auto"),
]


@pytest.mark.parametrize("good, bad, line", BOUNDARIES, ids=[b[1] for b in BOUNDARIES])
def test_each_rule_refuses_just_past_its_boundary(good, bad, line):
    extra = ["optim.epochs=0"] if bad.startswith("optim.max_steps") else []
    assert problems([good, *extra]) == []
    assert problems([bad, *extra]) == [line]


def test_max_steps_or_epochs():
    assert problems(["optim.max_steps=-1", "optim.epochs=1"]) == []
    assert problems(["optim.max_steps=0", "optim.epochs=0.5"]) == []


def test_every_problem_is_reported_at_once():
    assert problems(["lora.r=0", "optim.lr=-1", "data.max_length=2"]) == [
        "lora.r=0: the rank must be >= 1 (e.g. lora.r=8)",
        "optim.lr=-1.0: must be > 0 (e.g. optim.lr=3e-4)",
        "data.max_length=2: must be >= 8 tokens",
    ]


def test_a_file_dataset_needs_a_path_to_a_file_that_is_there(tmp_path, monkeypatch):
    assert problems(["data=alpaca"]) == [
        "data=alpaca reads a file: set data.path=... (a JSON, JSONL, CSV or Parquet file, or a hub id)"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.json").write_text("[]")
    assert problems(["data=alpaca", "data.path=x.json"]) == []
    assert problems(["data=alpaca", "data.path=y.json", "data.val_path=z.jsonl"]) == [
        "data.path=y.json: no such file; point data.path at a JSON, JSONL, CSV or Parquet file",
        "data.val_path=z.jsonl: no such file; point data.val_path at a JSON, JSONL, CSV or Parquet file"]
    assert problems(["data=alpaca", "data.path=x.json", "data.test_path=t.jsonl"]) == [
        "data.test_path=t.jsonl: no such file; point data.test_path at a JSON, JSONL, CSV or Parquet file"]
    assert problems(["data=alpaca", "data.path=x.txt"]) == [
        "data.path=x.txt: cannot tell the format from the suffix; use .json, .jsonl, .csv or .parquet, or set "
        "data.source=json|jsonl|csv|parquet|hub"]
    assert problems(["data=alpaca", "data.path=org/name"]) == []  # a hub id: read when the run starts
    assert problems(["data=alpaca", "data.path=y.json", "mode=plan"]) == []  # a plan reads no data


def test_the_built_in_set_refuses_a_file_instead_of_ignoring_it(tmp_path, monkeypatch):
    """`python -m ftsweep data.path=mine.jsonl` without data=...: the default data=synthetic reads no file, and
    once trained on synthetic records whatever the file held."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.jsonl").write_text("")
    fix = "data=synthetic makes its own records and reads no file; to use the file, name its format too: " \
          "data=alpaca, sharegpt, messages, text or multiple_choice"
    assert problems(["data.path=mine.jsonl"]) == [f"data.path=mine.jsonl: {fix}"]
    assert problems(["data.val_path=mine.jsonl", "data.test_path=mine.jsonl"]) == [
        f"data.val_path=mine.jsonl: {fix}", f"data.test_path=mine.jsonl: {fix}"]
    assert problems(["data=alpaca", "data.path=mine.jsonl", "data.test_path=mine.jsonl"]) == []


def test_classify_needs_two_labels():
    assert problems(["task=classify", "task.num_labels=1"]) == ["task=classify needs task.num_labels >= 2"]
    assert problems(["task=classify", "task.num_labels=null"]) == ["task=classify needs task.num_labels >= 2"]
    assert problems(["task=classify", "task.num_labels=2"]) == []
    assert problems(["task.num_labels=1"]) == []  # sft ignores it


@pytest.mark.parametrize("lora, quant, words", [
    ("loftq", "nf4", "lora=loftq quantizes the base itself: use it with quant=none (LoftQ replaces QLoRA's nf4 load)"),
    ("pissa", "nf4", "lora=pissa: PiSSA initializes from the full-precision weight; use quant=none "
                     "(or lora=olora / lora=lora on a quantized base)"),
    ("pissa", "int8", "lora=pissa: PiSSA initializes from the full-precision weight; use quant=none "
                      "(or lora=olora / lora=lora on a quantized base)"),
    ("loha", "nf4", "lora=loha: PEFT's LOHA layers cannot wrap bitsandbytes layers; use quant=none"),
    ("lokr", "int8", "lora=lokr: PEFT's LOKR layers cannot wrap bitsandbytes layers; use quant=none"),
])
def test_combinations_peft_cannot_train_are_refused_and_the_same_method_unquantized_is_not(lora, quant, words):
    refused = problems([f"lora={lora}", f"quant={quant}"], cuda=True)
    assert refused == [words]
    assert problems([f"lora={lora}", "quant=none"], cuda=True) == []


# GPU-only settings: refused on CPU with the CPU alternative, accepted with a GPU, not checked when unknown.
GPU_ONLY = [
    (["optim=paged_adamw_8bit"], "optim.optimizer=paged_adamw_8bit: paged optimizers need a CUDA GPU; use optim=adamw on CPU"),
    (["model.attn_implementation=flash_attention_2"],
     "model.attn_implementation=flash_attention_2 needs a CUDA GPU; use model.attn_implementation=sdpa on CPU"),
    (["train.liger_kernel=true"], "train.liger_kernel=true needs a CUDA GPU; set train.liger_kernel=false on CPU"),
    (["train.tf32=true"], "train.tf32=true needs an Ampere or newer GPU; set train.tf32=false on CPU"),
    (["lora=loftq", "quant=none"], "lora=loftq quantizes with CUDA kernels and needs a GPU; use lora=lora with quant=nf4 on CPU"),
]


@pytest.mark.parametrize("overrides, line", GPU_ONLY, ids=[o[0] for o, _ in GPU_ONLY])
def test_gpu_only_settings_are_refused_on_cpu(overrides, line):
    assert problems(overrides, cuda=False) == [line]
    assert problems(overrides, cuda=True) == []
    assert problems(overrides, cuda=None) == []
    assert cpu_problems(compose(overrides)) == [line]


def test_the_default_config_has_no_cpu_problem(default_cfg):
    assert cpu_problems(default_cfg) == []


def test_a_missing_value_is_named_with_how_to_set_it():
    cfg = compose()
    OmegaConf.set_struct(cfg, False)
    cfg.lora.r = "???"
    cfg.data.path = "???"
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).splitlines() == ["data.path is required: set it on the command line, e.g. data.path=...",
                                           "lora.r is required: set it on the command line, e.g. lora.r=..."]


# ---- the config hash: the same run or another one -------------------------------------------------------


def test_hash_is_stable_and_twelve_hex_digits(default_cfg):
    h = config_hash(default_cfg)
    assert len(h) == 12 and int(h, 16) >= 0
    assert config_hash(compose()) == h
    assert config_hash(plain(default_cfg)) == h  # a manifest's plain dict hashes the same


@pytest.mark.parametrize("neutral", ["logger=none", "logger=wandb", "train.progress=false", "mode=plan",
                                     "skip_finished=false", "preview.k=9", "plan.gpu_mem_gb=1",
                                     "hparams_search_metric=bleu", "logger.project=other", "project=other"])
def test_keys_that_do_not_change_the_result_keep_the_hash(default_cfg, neutral):
    assert config_hash(compose([neutral])) == config_hash(default_cfg)


@pytest.mark.parametrize("changed", ["lora.r=16", "lora=dora", "lora=rslora", "optim.lr=1e-3", "seed=2",
                                     "data.max_length=256", "quant=none", "train.save_steps=7",
                                     "eval.num_samples=3", "data.n=10"])
def test_keys_that_change_the_result_change_the_hash(default_cfg, changed):
    assert config_hash(compose([changed])) != config_hash(default_cfg)


def test_hash_of_a_dict_does_not_change_the_dict():
    cfg = {"lora": {"r": 8}, "logger": {"name": "none"}, "train": {"progress": True, "save_steps": 3}}
    before = repr(cfg)
    h = config_hash(cfg)
    assert repr(cfg) == before
    assert h == config_hash({"lora": {"r": 8}, "train": {"save_steps": 3}})
    assert h != config_hash({"lora": {"r": 8}, "train": {"save_steps": 4}})


def test_plain_resolves_interpolations():
    cfg = OmegaConf.create({"a": 2, "b": "${a}", "c": "???"})
    assert plain(cfg) == {"a": 2, "b": 2, "c": "???"}


def test_hash_ignores_key_order_and_configs_without_neutral_groups():
    assert config_hash({"a": 1, "b": {"c": 2, "d": 3}}) == config_hash({"b": {"d": 3, "c": 2}, "a": 1})
    assert config_hash({"lora": {"r": 8}}) == config_hash({"lora": {"r": 8}, "logger": {"x": 1}, "mode": "plan"})


def test_a_search_by_a_task_metric_the_run_does_not_compute_is_refused():
    # task.metrics=[bleu] drops exact_match from what the run computes, so a search by it would score every trial inf.
    assert problems(["task.metrics=[bleu]", "hparams_search_metric=bleu"]) == []
    assert problems(["task.metrics=[bleu]", "hparams_search_metric=exact_match"]) == [
        "hparams_search_metric=exact_match: no run of task=sft reports it; choose a loss (eval_loss, perplexity) or one "
        "of task.metrics (bleu)"]
    assert problems(["task=classify", "hparams_search_metric=f1"]) == []


@pytest.mark.parametrize("overrides, line", [
    (["lora=vera", "lora.alpha=32"], "lora.alpha=32.0: lora=vera (vera) does not use it, so cells that differ in it would "
                                     "train alike; leave it at null"),
    (["lora=ia3", "lora.r=16"], "lora.r=16: lora=ia3 (ia3) does not use it, so cells that differ in it would train alike; "
                                "leave it at null"),
    (["lora=loha", "quant=none", "lora.use_dora=true"], "lora.use_dora=True: lora=loha (loha) does not use it, so cells that differ in "
                                          "it would train alike; leave it at false"),
    (["lora=adalora", "lora.bias=all"], "lora.bias=all: lora=adalora (adalora) does not use it, so cells that differ in it "
                                        "would train alike; leave it at none"),
    (["lora=lokr", "quant=none", "lora.init=gaussian"], "lora.init=gaussian: lora=lokr (lokr) does not use it, so cells that differ in it "
                                          "would train alike; leave it at true"),
    (["lora=lora", "lora.alpha=null"], "lora.alpha is required: lora=lora uses it, e.g. lora.alpha=..."),
])
def test_a_knob_the_method_does_not_use_is_refused_not_ignored(overrides, line):
    assert problems(overrides) == [line]


@pytest.mark.parametrize("option", ["lora", "dora", "rslora", "loha", "lokr", "adalora", "ia3", "vera", "loraplus"])
def test_every_shipped_option_passes_with_its_own_values(option):
    assert problems([f"lora={option}", "quant=none"]) == []
