"""Composition of every config group, schema typing, and validation rules."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import ftsweep.cli  # registers the schemas and the run-name resolver
from ftsweep.config import ConfigError, config_hash, validate

CONF = Path(ftsweep.cli.config_dir())
GROUPS = ["model", "quant", "lora", "data", "task", "optim", "logger", "experiment"]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group):
    options = _options(group)
    if group != "experiment":
        assert options, f"conf/{group} has no options"
    for option in options:
        cfg = _compose([f"{group}={option}"])
        if group != "experiment":
            assert cfg[group].name == option, f"{group}={option} composes to name {cfg[group].name}"
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves


def test_defaults_are_qlora_nf4_lora_r8_on_tiny_synthetic():
    cfg = _compose([])
    assert (cfg.model.name, cfg.quant.name, cfg.data.name, cfg.task.name, cfg.mode) == ("tiny", "nf4", "synthetic", "sft", "train")
    assert (cfg.quant.bits, cfg.quant.quant_type, cfg.quant.double_quant) == (4, "nf4", True)
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout, cfg.lora.target_modules) == (8, 16, 0.05, "all-linear")
    assert cfg.model.trust_remote_code is False
    assert cfg.experiment is None


def test_public_keys_exist():
    cfg = _compose([])
    for key in ["lora.r", "lora.alpha", "lora.dropout", "lora.target_modules", "optim.lr", "optim.scheduler",
                "optim.warmup_ratio", "optim.weight_decay", "optim.micro_batch_size", "optim.grad_accum",
                "optim.max_steps", "optim.epochs", "optim.max_grad_norm", "data.path", "data.n", "data.val_size",
                "data.max_length", "seed", "mode"]:
        assert OmegaConf.select(cfg, key, default="<absent>") != "<absent>", key


def test_real_models_never_trust_remote_code_by_default():
    for option in _options("model"):
        assert _compose([f"model={option}"]).model.trust_remote_code is False


def test_typed_overrides_are_converted_and_wrong_types_fail():
    cfg = _compose(["lora.r=16", "optim.lr=1e-4"])
    assert cfg.lora.r == 16 and cfg.optim.lr == pytest.approx(1e-4)
    with pytest.raises(Exception, match="optim.lr=abc"):
        _compose(["optim.lr=abc"])
    with pytest.raises(Exception, match="rr"):
        _compose(["lora.rr=8"])


def test_validate_lists_every_problem_at_once():
    cfg = _compose(["lora.r=0", "lora.alpha=-1", "lora.dropout=1.5", "optim.lr=0", "optim.micro_batch_size=0", "data.n=0"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    lines = str(err.value).splitlines()
    assert len(lines) == 6
    for key in ["lora.r=0", "lora.alpha=-1", "lora.dropout=1.5", "optim.lr=0", "optim.micro_batch_size=0", "data.n=0"]:
        assert any(line.startswith(key) for line in lines), (key, lines)


def test_classify_needs_labels_and_files_need_a_path():
    cfg = _compose(["task=classify", "task.num_labels=null", "data=alpaca"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert "task.num_labels" in str(err.value) and "data.path" in str(err.value)


def test_config_hash_ignores_logger_and_progress_but_not_training_knobs():
    base = config_hash(_compose([]))
    assert config_hash(_compose(["logger=none", "train.progress=false"])) == base
    assert config_hash(_compose(["lora.r=16"])) != base
    assert config_hash(_compose(["optim.lr=1e-4"])) != base
    assert config_hash(_compose(["seed=1"])) != base
