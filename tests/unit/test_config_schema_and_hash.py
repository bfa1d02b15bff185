"""The schema Hydra composes against (which maps take the user's own keys, which refuse typos), and the config
hash of values that are not plain JSON. Complements test_config_rules.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from lane import configured as compose
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from ftsweep import config


def test_register_stores_the_root_schema_under_the_name_config_yaml_uses(monkeypatch):
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    monkeypatch.setattr(store, "repo", {})
    config.register()
    assert list(store.repo) == ["schema.yaml"]
    node = store.load("schema.yaml").node
    assert set(node) == {f.name for f in config.RootSchema.__dataclass_fields__.values()}
    node.data.roles.human = "user"  # the user's own role names, without a `+`
    assert node.data.roles == {"human": "user"}


@pytest.mark.parametrize("key", ["columns", "roles", "custom_template"])
def test_the_users_own_maps_take_new_keys(key):
    root = config._root_with_open_maps()
    root.data[key]["anything"] = "x"
    assert root.data[key] == {"anything": "x"}


@pytest.mark.parametrize("key", ["colums", "max_len", "role"])
def test_a_typo_beside_those_maps_is_refused(key):
    root = config._root_with_open_maps()
    with pytest.raises((ConfigAttributeError, ConfigKeyError)):
        root.data[key] = 1
    assert OmegaConf.is_missing(root.data, "max_length")  # types only: no default hides in the schema


def test_every_field_of_the_open_data_schema_is_kept():
    root = config._root_with_open_maps()
    assert set(root.data) == set(config.DataSchema.__dataclass_fields__)


def test_the_hash_of_a_config_holding_a_path_is_the_hash_of_its_text():
    with_path = OmegaConf.create({"data": {"path": Path("/data/a.json")}, "seed": 1})
    assert config.config_hash(with_path) == config.config_hash({"data": {"path": "/data/a.json"}, "seed": 1})


def test_neutral_keys_are_dropped_at_their_depth_only():
    # `progress` outside train, or `mode` inside a group, is an ordinary key.
    base = {"lora": {"r": 8}}
    assert config.config_hash({**base, "progress": True}) != config.config_hash(base)
    assert config.config_hash({"lora": {"r": 8, "mode": "x"}}) != config.config_hash(base)
    assert config.config_hash({**base, "train": {"progress": True}}) == config.config_hash({**base, "train": {}})
    assert config.config_hash({**base, "preview": {"k": 3}, "plan": 1}) == config.config_hash(base)


def test_no_steps_and_no_epochs_is_refused():
    cfg = compose(["optim.max_steps=0", "optim.epochs=0"])
    with pytest.raises(config.ConfigError) as err:
        config.validate(cfg)
    assert str(err.value) == "optim.max_steps and optim.epochs: set one of them > 0"
    config.validate(compose(["optim.max_steps=0", "optim.epochs=0.01"]))
    config.validate(compose(["optim.max_steps=1", "optim.epochs=0"]))


def test_the_sweeps_doc_lists_exactly_the_keys_the_hash_leaves_out():
    import re

    doc = (Path(__file__).parents[2] / "docs" / "sweeps.md").read_text()
    listed = re.search(r"The hash leaves out what does not\s+change the trained result: (.*?);", doc, re.S).group(1)
    assert sorted(re.findall(r"`([\w.]+)`", listed)) == sorted(config.RESULT_NEUTRAL_KEYS)
