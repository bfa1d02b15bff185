"""The unit lane's shared helpers. The heavy imports and the first Hydra compose happen here, once, when pytest
collects: `mutmut run` forks one worker per mutant from a process that has collected the lane, so every
worker starts with torch, PEFT, transformers and a composed default config already in memory (seconds
saved per mutant)."""

from __future__ import annotations

import copy
from pathlib import Path

import peft  # noqa: F401 - preloaded, see above
import torch  # noqa: F401
import transformers  # noqa: F401
from conftest import compose
from omegaconf import OmegaConf

from ftsweep import overrides as ovr
from ftsweep.report.collect import Run, Sweep

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = {p.name for p in CONF.iterdir() if p.is_dir()}
DEFAULT = compose()


def configured(overrides=()):
    """The composed config for these overrides. Group choices (lora=dora) go through Hydra's compose; plain
    values (lora.r=0) are set, as Hydra's parser reads them, on a copy of the default config, whose schema
    converts and checks their types as compose would, in microseconds."""
    overrides = list(overrides)
    if any(o.split("=", 1)[0].lstrip("+~").split(".")[0] in GROUPS and "." not in o.split("=", 1)[0] for o in overrides):
        return compose(overrides)
    cfg = copy.deepcopy(DEFAULT)
    for text in overrides:
        parsed = ovr.parse(text)  # Hydra's reading of the value: `yes` stays a string, `1e-4` is a float
        OmegaConf.update(cfg, parsed.key_or_group, parsed.value(), merge=False)
    return cfg


def report_run(overrides, eval_loss=3.0, status="ok", sweep="s1", config=None, summary=None, manifest=None) -> Run:
    """A finished run as the report reads it, built in memory: its overrides, summary and resolved config."""
    return Run(path=Path("/nowhere") / ",".join(overrides), name=",".join(overrides) or "run", sweep=sweep,
               status=status, overrides=list(overrides), summary={"status": status, "eval_loss": eval_loss} | (summary or {}),
               manifest=manifest or {}, metrics=[], _config=config if config is not None else {"seed": 1})


def report_sweep(runs, label="s1", grid=None) -> Sweep:
    """A sweep of those runs; ``grid`` is what sweep.json records as swept."""
    return Sweep(path=Path("/nowhere") / label, label=label, meta={"grid": grid} if grid is not None else {}, runs=runs)
