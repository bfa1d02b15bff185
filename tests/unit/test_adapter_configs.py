"""Each lora option becomes the PEFT config its name promises: DoRA has use_dora, rsLoRA has use_rslora,
every method its own config class with r, alpha, dropout and targets carried over. Built in-process from
the composed config; nothing is trained (the slow lane trains every option)."""

from __future__ import annotations

import pytest
from lane import configured as compose

from ftsweep import adapters

ALL = adapters.PRESETS["tiny"]["all-linear"]


def built(option: str, *overrides, task: str = "sft", targets=ALL, total_steps=None):
    cfg = compose([f"lora={option}", *overrides])
    return adapters.peft_config(cfg.lora, task, targets, total_steps)


# option -> (PEFT class name, peft_type, fields the config must hold)
EXPECTED = {
    "lora": ("LoraConfig", "LORA", dict(r=8, lora_alpha=16, lora_dropout=0.05, use_dora=False, use_rslora=False,
                                        init_lora_weights=True, bias="none")),
    "dora": ("LoraConfig", "LORA", dict(r=8, lora_alpha=16, use_dora=True, use_rslora=False, init_lora_weights=True)),
    "rslora": ("LoraConfig", "LORA", dict(r=8, lora_alpha=16, use_dora=False, use_rslora=True)),
    "olora": ("LoraConfig", "LORA", dict(init_lora_weights="olora", use_dora=False)),
    "pissa": ("LoraConfig", "LORA", dict(init_lora_weights="pissa_niter_4", lora_dropout=0.0)),
    "loraplus": ("LoraConfig", "LORA", dict(r=8, use_dora=False, init_lora_weights=True)),
    "loha": ("LoHaConfig", "LOHA", dict(r=8, alpha=16, rank_dropout=0.0)),
    "lokr": ("LoKrConfig", "LOKR", dict(r=8, alpha=16)),
    "adalora": ("AdaLoraConfig", "ADALORA", dict(target_r=8, init_r=12, lora_alpha=16, lora_dropout=0.05)),
    "ia3": ("IA3Config", "IA3", dict()),
    "vera": ("VeraConfig", "VERA", dict(r=256, vera_dropout=0.05)),
}


@pytest.mark.parametrize("option", sorted(EXPECTED))
def test_each_option_builds_its_method_with_its_knobs(option):
    cls, peft_type, fields = EXPECTED[option]
    config = built(option, targets=["q_proj", "v_proj"])
    assert type(config).__name__ == cls
    assert str(config.peft_type.value) == peft_type
    assert config.task_type == "CAUSAL_LM"
    for name, value in fields.items():
        assert getattr(config, name) == value, (name, getattr(config, name))


def test_dora_and_rslora_are_the_only_difference_from_lora():
    plain, dora, rs = (vars(built(o)) for o in ("lora", "dora", "rslora"))
    assert {k for k in plain if plain[k] != dora[k]} == {"use_dora"}
    assert {k for k in plain if plain[k] != rs[k]} == {"use_rslora"}


def test_knobs_from_the_command_line_reach_peft():
    config = built("lora", "lora.r=4", "lora.alpha=7", "lora.dropout=0.25", "lora.bias=all",
                   "lora.use_dora=true", "lora.use_rslora=true", "lora.modules_to_save=[lm_head]")
    assert (config.r, config.lora_alpha, config.lora_dropout, config.bias) == (4, 7.0, 0.25, "all")
    assert config.use_dora and config.use_rslora
    assert set(config.modules_to_save) == {"lm_head"}
    assert isinstance(config.r, int) and isinstance(config.lora_alpha, float)
    assert built("lora").modules_to_save is None


def test_targets_and_task_type():
    config = built("lora", targets=["q_proj", "v_proj"], task="classify")
    assert set(config.target_modules) == {"q_proj", "v_proj"} and config.task_type == "SEQ_CLS"
    assert built("lora", targets="all-linear").target_modules == "all-linear"
    assert built("loha", task="classify").task_type == "SEQ_CLS"


def test_ia3_marks_its_feedforward_modules():
    config = built("ia3", targets=["k_proj", "v_proj", "down_proj", "up_proj"])
    assert set(config.feedforward_modules) == {"down_proj", "up_proj"}
    # all-linear is not an IA3 preset: it becomes IA3's usual attention + feed-forward choice.
    config = built("ia3", targets="all-linear")
    assert set(config.target_modules) == {"k_proj", "v_proj", "down_proj"} and set(config.feedforward_modules) == {"down_proj"}
    assert built("ia3", targets=["k_proj"]).feedforward_modules == set()
    # Every feed-forward name PEFT's model families use (Llama's three, GPT/OPT's fc2) is marked as one.
    config = built("ia3", targets=["q_proj", "gate_proj", "fc2", "fc1"])
    assert set(config.feedforward_modules) == {"gate_proj", "fc2"}


def test_adalora_spreads_its_schedule_over_the_run():
    assert built("adalora", total_steps=60).total_step == 60
    assert built("adalora").total_step == 1000
    assert built("adalora", "lora.r=4").init_r == 8
    assert built("adalora", "+lora.extra.init_r=20").init_r == 20


def test_eva_gets_its_config_and_other_inits_drop_it():
    eva = built("eva")
    assert type(eva.eva_config).__name__ == "EvaConfig" and eva.eva_config.rho == 2.0
    assert eva.init_lora_weights == "eva"
    assert built("lora", "+lora.extra.eva_config={rho: 3.0}").eva_config is None


def test_eva_keeps_the_users_eva_knobs():
    eva = built("eva", "lora.extra.eva_config.rho=3.0", "+lora.extra.eva_config.tau=0.5")
    assert (eva.eva_config.rho, eva.eva_config.tau) == (3.0, 0.5)


@pytest.mark.parametrize("option", ["loha", "lokr"])
def test_loha_and_lokr_take_rank_alpha_rank_dropout_and_extra_knobs(option):
    config = built(option, "lora.r=4", "lora.alpha=6", "lora.dropout=0.1", "+lora.extra.module_dropout=0.2")
    assert (config.r, config.alpha, config.rank_dropout, config.module_dropout) == (4, 6.0, 0.1, 0.2)


def test_vera_takes_the_rank_the_dropout_and_extra_knobs():
    # VeRA's shared random matrices have the rank the user set, not PEFT's default 256.
    config = built("vera", "lora.r=64", "lora.dropout=0.1", "+lora.extra.d_initial=0.3")
    assert (config.r, config.vera_dropout, config.d_initial) == (64, 0.1, 0.3)


def test_loftq_gets_a_loftq_config():
    config = built("loftq")
    assert config.init_lora_weights == "loftq" and config.loftq_config["loftq_bits"] == 4
    assert config.loftq_config["loftq_iter"] == 1


def test_extra_knobs_pass_through_and_unknown_methods_are_named():
    # extra arrives as plain Python values, interpolations resolved.
    config = built("adalora", "+lora.extra.init_r=${lora.r}", targets=["q_proj"])
    assert config.init_r == 8
    assert type(built("lora", "+lora.extra.layers_to_transform=[0]", targets=["q_proj"]).layers_to_transform) is list
    assert built("lora", "+lora.extra.layers_to_transform=[0]", targets=["q_proj"]).layers_to_transform == [0]
    cfg = compose(["lora.method=bogus"])
    with pytest.raises(ValueError, match="lora.method=bogus: unknown; choose one of lora, loha, lokr, adalora, ia3, vera"):
        adapters.peft_config(cfg.lora, "sft", ALL)


def test_moves_base_weights_only_for_pissa_and_olora():
    moved = {o for o in ("lora", "dora", "rslora", "pissa", "olora", "loha", "eva") if adapters.moves_base_weights(compose([f"lora={o}"]).lora)}
    assert moved == {"pissa", "olora"}
    assert adapters.moves_base_weights(compose(["lora=loha", "lora.init=olora"]).lora) is False


def test_presets_and_explicit_targets():
    assert adapters.resolve_targets("attention", "qwen2") == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert adapters.resolve_targets("mlp", "llama") == ["gate_proj", "up_proj", "down_proj"]
    assert adapters.resolve_targets("all-linear", "somefamily") == "all-linear"  # unknown family: Llama's names
    assert adapters.resolve_targets("q_proj", "tiny", ["q_proj", "v_proj"]) == ["q_proj"]
    assert adapters.resolve_targets(["q_proj", "v_proj"], "tiny", ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert adapters.resolve_targets(["x"], "tiny") == ["x"]  # no module list: nothing to check against
    with pytest.raises(ValueError) as err:
        adapters.resolve_targets(["q_proj", "nope_proj"], "tiny", ["k_proj", "q_proj"])
    assert str(err.value) == ("lora.target_modules: ['nope_proj'] match no module of this model; available: k_proj, q_proj "
                              "(or a preset: all-linear, attention, mlp)")


def test_linear_module_names_leave_out_the_heads():
    import torch

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q_proj, self.up_proj, self.norm = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.LayerNorm(2)
            self.lm_head, self.score = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

    assert adapters.linear_module_names(Block()) == ["q_proj", "up_proj"]
