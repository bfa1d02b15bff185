"""ftsweep: LoRA / QLoRA fine-tuning experiments as Hydra sweeps, turned into reproducible ablation reports."""

__version__ = "0.1.0"
