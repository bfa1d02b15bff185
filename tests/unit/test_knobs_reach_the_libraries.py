"""Each optim, train, eval and quant knob reaches transformers and bitsandbytes as the config says: a knob that
is composed, hashed and reported but never applied would make a sweep over it compare identical runs."""

from __future__ import annotations

import pytest
import torch
from conftest import compose

from ftsweep import artifacts, manifest, models, training


def test_every_optimizer_and_schedule_knob_reaches_the_trainer(tmp_path):
    cfg = compose(["optim.lr=2e-4", "optim.scheduler=linear", "optim.warmup_steps=7", "optim.weight_decay=0.01",
                   "optim.max_grad_norm=0.5", "optim.max_steps=30", "seed=123", "eval.batch_size=5",
                   "train.save_steps=11", "train.save_total_limit=3", "train.logging_steps=2"])
    args = training.training_arguments(cfg, tmp_path, micro_batch=4, grad_accum=3)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps, args.per_device_eval_batch_size) == (4, 3, 5)
    assert args.learning_rate == 2e-4 and args.lr_scheduler_type == "linear" and args.optim == "adamw_torch"
    assert (args.warmup_steps, args.weight_decay, args.max_grad_norm, args.max_steps) == (7, 0.01, 0.5, 30)
    assert (args.seed, args.data_seed) == (123, 123)  # model init, dropout and data order all follow cfg.seed
    assert (args.save_steps, args.save_total_limit, args.logging_steps) == (11, 3, 2)
    assert args.output_dir == str(tmp_path / artifacts.CHECKPOINTS)


def test_warmup_ratio_epochs_and_the_paged_optimizer(tmp_path):
    cfg = compose(["optim=paged_adamw_8bit", "optim.warmup_steps=0", "optim.warmup_ratio=0.1", "optim.max_steps=-1",
                   "optim.epochs=2", "optim.scheduler=cosine"])
    args = training.training_arguments(cfg, tmp_path, micro_batch=2, grad_accum=1)
    assert args.warmup_steps == 0.1  # a float below 1 is a ratio of the run's steps
    assert (args.max_steps, args.num_train_epochs) == (-1, 2.0)
    assert args.optim == "paged_adamw_8bit" and args.lr_scheduler_type == "cosine"


@pytest.mark.parametrize("overrides, expected", [
    pytest.param(["quant=nf4"], {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_use_double_quant": True,
                                 "bnb_4bit_compute_dtype": torch.float32},  # compute_dtype auto is float32 on a CPU
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="compute_dtype auto is a GPU dtype there")),
    (["quant=nf4", "quant.double_quant=false", "quant.compute_dtype=bfloat16"],
     {"load_in_4bit": True, "bnb_4bit_use_double_quant": False, "bnb_4bit_compute_dtype": torch.bfloat16}),
    (["quant=fp4"], {"load_in_4bit": True, "bnb_4bit_quant_type": "fp4"}),
    (["quant=int8"], {"load_in_8bit": True, "load_in_4bit": False}),
])
def test_the_quant_group_is_the_bitsandbytes_config(overrides, expected):
    bnb = models.quantization_config(compose(overrides).quant)
    assert {k: getattr(bnb, k) for k in expected} == expected


def test_quant_none_loads_no_bitsandbytes_config():
    assert models.quantization_config(compose(["quant=none"]).quant) is None


# (overrides, the Trainer's autocast on a GPU with bf16, on one without): the layers' compute dtype decides it.
PRECISION = [
    (["quant=nf4"], "bf16", "fp16"),  # compute_dtype auto
    (["quant=nf4", "quant.compute_dtype=float16"], "fp16", "fp16"),
    (["quant=nf4", "quant.compute_dtype=float32"], None, None),
    (["quant=int8", "quant.compute_dtype=bfloat16"], "bf16", "fp16"),
    (["quant=none", "model=qwen2.5-0.5b-instruct"], "bf16", "fp16"),  # model.dtype bfloat16
    (["quant=none", "model=qwen2.5-0.5b-instruct", "quant.compute_dtype=float32"], "bf16", "fp16"),  # not read
    (["quant=none"], None, None),  # the tiny model is float32
    (["quant=none", "model.dtype=float16"], "fp16", "fp16"),  # fp16 LoRA: loss scaling on
    (["quant=none", "model.dtype=float32"], None, None),  # full fp32 stays fp32
    (["experiment=yi_huanhuan", "data.path=x.json"], "fp16", "fp16"),
]


@pytest.mark.parametrize("overrides, with_bf16, without", PRECISION)
def test_the_trainers_autocast_follows_the_dtype_the_layers_compute_in(overrides, with_bf16, without):
    cfg = compose(overrides)
    assert models.mixed_precision(cfg.model, cfg.quant, True, True) == with_bf16
    assert models.mixed_precision(cfg.model, cfg.quant, True, False) == without
    assert models.mixed_precision(cfg.model, cfg.quant, False, False) is None  # a CPU never autocasts


def test_a_cpu_run_asks_the_trainer_for_no_autocast(tmp_path):
    args = training.training_arguments(compose(["quant=none", "model.dtype=float16"]), tmp_path, micro_batch=2, grad_accum=1)
    assert torch.cuda.is_available() or (args.bf16, args.fp16) == (False, False)


def test_the_manifest_says_whether_the_checkout_had_uncommitted_changes(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f.py").write_text("x = 1\n")
    git("add", "f.py")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "one")
    clean = manifest.git_state(tmp_path)
    (tmp_path / "f.py").write_text("x = 2\n")
    assert clean["dirty"] is False and len(clean["commit"]) == 40
    assert manifest.git_state(tmp_path) == {"commit": clean["commit"], "dirty": True}
