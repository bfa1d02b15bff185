"""One source of defaults: YAML holds every value, schemas hold types; experiments hold deltas only."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import MISSING, OmegaConf

import ftsweep.cli  # registers the root schema and the run-name resolver
from ftsweep import config

CONF = Path(ftsweep.cli.config_dir())
GROUPS = ["model", "quant", "lora", "data", "task", "optim", "logger"]


def _compose(overrides: list[str]):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides)


def _schemas() -> list[type]:
    return [obj for obj in vars(config).values() if isinstance(obj, type) and obj.__name__.endswith("Schema")]


def test_schemas_hold_types_only():
    """A default in a schema would be a second source that can disagree with the YAML."""
    assert len(_schemas()) >= 12
    for schema in _schemas():
        for f in dataclasses.fields(schema):
            assert f.default is MISSING and f.default_factory is dataclasses.MISSING, (
                f"{schema.__name__}.{f.name} has a default in Python; put it in the YAML under conf/")


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_sets_every_key(group):
    """Every key the schema declares gets its value from YAML: nothing composes as ??? (unset)."""
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        cfg = _compose([f"{group}={option}"])
        assert not OmegaConf.missing_keys(cfg), f"{group}={option} leaves {sorted(OmegaConf.missing_keys(cfg))} unset"


def test_schema_names_are_not_options():
    with pytest.raises(Exception, match="lora_schema"):
        _compose(["lora=lora_schema"])


def _leaves(node, prefix: str = "") -> dict:
    if isinstance(node, dict) and node:
        out = {}
        for k, v in node.items():
            out.update(_leaves(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def _experiment(name: str) -> tuple[list[str], dict]:
    """An experiment file's group choices (as CLI overrides) and its body, following parent experiments."""
    # OmegaConf reads values as Hydra does (PyYAML would read 3e-4 as a string).
    spec = OmegaConf.to_container(OmegaConf.load(CONF / "experiment" / f"{name}.yaml"))
    choices, parents = [], []
    for entry in spec.pop("defaults", []):
        if isinstance(entry, str):
            parents.append(entry)
        else:
            ((key, value),) = entry.items()
            choices.append(f"{key.removeprefix('override ').lstrip('/')}={value}")
    spec.pop("hydra", None)  # sweeper params are the sweep, not a restated default
    return [f"experiment={p}" for p in parents] + choices, spec


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_experiments_hold_only_deltas(name):
    """No experiment sets a key (or picks a group option) to what the composition already has."""
    overrides, body = _experiment(name)
    parents = [o for o in overrides if o.startswith("experiment=")]
    before = _compose(parents)
    restated = [o for o in overrides if not o.startswith("experiment=")
                and str(OmegaConf.select(before, o.split("=")[0] + ".name")) == o.split("=", 1)[1]]
    assert not restated, f"experiment={name} picks options that are already the default: {restated}"
    base = OmegaConf.to_container(_compose(overrides), resolve=True)
    same = [k for k, v in _leaves(body).items() if _get(base, k) == v]
    assert not same, f"experiment={name} restates defaults: {same}"


def _get(tree: dict, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return "<absent>"
        tree = tree[part]
    return tree
