"""Parameter counts in PEFT's convention: what `print_trainable_parameters()` prints, in the plan and in a run."""

from __future__ import annotations

import pytest

CASES = [
    ["lora=lora", "lora.target_modules=attention", "quant=none"],
    ["lora=lora", "lora.r=4", "quant=none"],  # all-linear
    ["lora=lora", "lora.r=16", "quant=nf4"],  # 4-bit base: packed weights count at their logical size
    ["lora=dora", "quant=none"],
    ["lora=adalora", "quant=none"],
    ["lora=ia3", "quant=none"],
    ["lora=loha", "quant=none"],
    ["lora=vera", "quant=none"],
    ["lora=lora", "lora.modules_to_save=[lm_head]", "quant=none"],  # a full copy of the head trains
]


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ftsweep.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def peft_model(cfg):
    """The tiny model loaded and wrapped as a run does it."""
    from ftsweep import adapters, models, training

    path = models.resolve_model_path(cfg.model)
    tok = models.load_tokenizer(cfg.model, path)
    base = models.load_model(cfg.model, cfg.quant, cfg.task, tok, path)
    return adapters.apply(base, cfg.lora, cfg.quant, cfg.task.name, cfg.model.family, False,
                          total_steps=training.total_steps(cfg, 100))


@pytest.mark.parametrize("overrides", CASES, ids=lambda o: " ".join(o))
def test_run_and_plan_count_as_peft_prints(tiny_model_dir, overrides):
    from ftsweep import models, plan

    cfg = compose(overrides)
    model = peft_model(cfg)
    trainable, total = model.get_nb_trainable_parameters()  # what print_trainable_parameters() prints
    assert trainable > 0 and total > trainable
    assert models.count_params(model) == (trainable, total)  # the run's summary and console
    planned = plan.plan_cell(cfg)  # the meta-device plan, no weights
    assert (planned["trainable_params"], planned["total_params"]) == (trainable, total)
    assert planned["trainable_share"] == round(trainable / total, 6)
    line = plan.describe(planned, "cell")
    assert f"trainable params: {trainable:,} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}" in line


def test_all_params_include_the_adapter(tiny_model_dir):
    """The tiny model has 363,136 weights; LoRA r=8 on its 7 projections x 2 layers adds 32,768 (the adapter), so
    PEFT's all params is the sum, not the base alone."""
    from ftsweep import models

    cfg = compose(["lora=lora", "quant=none"])
    path = models.resolve_model_path(cfg.model)
    base = models.load_model(cfg.model, cfg.quant, cfg.task, models.load_tokenizer(cfg.model, path), path)
    _, base_total = models.count_params(base)
    model = peft_model(cfg)
    trainable, total = models.count_params(model)
    assert (base_total, trainable, total) == (363_136, 32_768, 395_904)
