"""Every lora option trains on the tiny model, 4-bit and unquantized, and its adapter reloads with plain PEFT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FAST

from ftsweep import artifacts

OPTIONS = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "lora").glob("*.yaml"))
SHORT = [o for o in FAST if not o.startswith(("optim.max_steps", "eval.every"))] + [
    "optim.max_steps=2", "eval.every_n_steps=0", "eval.at_start=false", "eval.num_samples=2", "train.save_steps=100"]


def compose(overrides):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ftsweep.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def reload_trainable(cfg, adapter_dir: Path) -> int:
    """Load the base as the run did (same quantization) and the adapter with plain PeftModel.from_pretrained."""
    from peft import PeftModel

    from ftsweep import models

    path = models.resolve_model_path(cfg.model)
    tok = models.load_tokenizer(cfg.model, path)
    base = models.load_model(cfg.model, cfg.quant, cfg.task, tok, path)
    model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=True)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# What PEFT 0.21 + bitsandbytes 0.50 cannot do here, and the fix each refusal names.
REFUSED = {("loha", "nf4"): "use quant=none", ("lokr", "nf4"): "use quant=none", ("pissa", "nf4"): "use quant=none",
           ("loftq", "nf4"): "use it with quant=none", ("loftq", "none"): "needs a GPU"}


def test_every_lora_option_has_a_config():
    assert OPTIONS == ["adalora", "dora", "eva", "ia3", "loftq", "loha", "lokr", "lora", "loraplus", "olora", "pissa",
                       "rslora", "vera"]


@pytest.mark.slow
@pytest.mark.parametrize("quant", ["nf4", "none"])
@pytest.mark.parametrize("option", OPTIONS)
def test_option_trains_and_its_adapter_reloads(tiny_model_dir, tmp_path, option, quant):
    from ftsweep.cli import train

    overrides = [*SHORT, f"lora={option}", f"quant={quant}"]
    cfg = compose(overrides)
    summary = train(cfg, tmp_path / "run", f"{option}-{quant}", overrides)
    # Combinations PEFT cannot train are refused up front with one line naming the fix; every other one trains.
    assert (summary["status"] == "ok") == ((option, quant) not in REFUSED), summary.get("error")
    if (option, quant) in REFUSED:
        assert summary["error"]["type"] == "ConfigError", summary["error"]
        assert REFUSED[(option, quant)] in summary["error"]["message"]
        assert not (tmp_path / "run" / artifacts.ADAPTER).exists()
        return
    assert summary["trainable_params"] > 0 and 0 < summary["trainable_share"] < 1
    # mode=plan counts the same trainable parameters from the config alone, on the meta device.
    from ftsweep.plan import plan_cell

    planned = plan_cell(cfg)["trainable_params"]
    if option == "eva":  # EVA moves rank between layers from the data; the plan counts the uniform budget
        assert abs(planned - summary["trainable_params"]) <= 0.5 * planned
    else:
        assert planned == summary["trainable_params"]
    # PiSSA and OLoRA are saved converted to a rank-2r LoRA of the original base: twice the parameters.
    factor = 2 if option in ("pissa", "olora") else 1
    adapter_cfg = json.loads((tmp_path / "run" / artifacts.ADAPTER / "adapter_config.json").read_text())
    reloaded = reload_trainable(cfg, tmp_path / "run" / artifacts.ADAPTER)
    if option == "adalora":  # saved with the ranks its budget kept: fewer than it trained (test_adalora_eval)
        assert adapter_cfg["rank_pattern"] and reloaded < summary["trainable_params"]
    else:
        assert reloaded == factor * summary["trainable_params"]
    assert adapter_cfg["peft_type"] == {"loha": "LOHA", "lokr": "LOKR", "adalora": "ADALORA", "ia3": "IA3",
                                        "vera": "VERA"}.get(option, "LORA")
    # The variant itself reached the saved adapter, not only its method: DoRA's magnitude vectors, rsLoRA's
    # scaling flag, the rank and alpha the option sets.
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / artifacts.ADAPTER / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any("lora_magnitude_vector" in k for k in keys) == (option == "dora"), keys[:4]
    if adapter_cfg["peft_type"] == "LORA":
        assert adapter_cfg["use_dora"] is (option == "dora")
        assert adapter_cfg["use_rslora"] is (option == "rslora")
        assert adapter_cfg["r"] == factor * cfg.lora.r and adapter_cfg["lora_alpha"] == factor * cfg.lora.alpha
        assert any(k.endswith("lora_A.weight") for k in keys) and any(k.endswith("lora_B.weight") for k in keys)
    else:
        assert not any("lora_A" in k for k in keys) or option == "adalora"
