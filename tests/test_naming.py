"""Run names and report labels: values as typed, floats without noise, lists short."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

import fixtures_report  # noqa: F401 - puts the repo on sys.path when the package is not installed

from ftsweep import artifacts, naming
from ftsweep import overrides as ovr

ALL_LINEAR = "[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"


def test_range_cells_are_named_by_the_shortest_decimal():
    # Hydra's own expansion of the sweep, not a string typed here.
    cells = [str(v) for v in ovr.parse("optim.lr=range(1e-4,4e-4,1e-4)").sweep_string_iterator()]
    assert cells == ["0.0001", "0.0002", "0.00030000000000000003"]
    names = [artifacts.run_name([f"optim.lr={v}", "optim.max_steps=2"], ["optim.lr"]) for v in cells]
    assert names == ["optim.lr=0.0001", "optim.lr=0.0002", "optim.lr=0.0003"]
    tenths = [str(v) for v in ovr.parse("x=range(0.1,0.5,0.1)").sweep_string_iterator()]
    assert [naming.value_text(v) for v in tenths] == ["0.1", "0.2", "0.3", "0.4"]


def test_typed_values_stay_as_typed():
    for text in ("1e-4", "3e-4", "0.0001", "8", "dora", "null", "true", "1.50", "-2.5e+3", "1E-5", "nan", "abc.def"):
        assert naming.value_text(text) == text
    assert artifacts.run_name(["lora.r=8", "optim.lr=1e-4", "lora=dora"]) == "lora.r=8,lora=dora,optim.lr=1e-4"
    # Twelve significant digits are a value someone meant; thirteen are rounded to twelve.
    assert naming.clean_float("0.123456789012") == "0.123456789012"
    assert naming.clean_float("0.1234567890123") == "0.123456789012"
    assert naming.clean_float("0.00012345678901234567") == "0.000123456789012"  # an Optuna sample


@given(st.floats(min_value=1e-12, max_value=1e12, allow_nan=False))
def test_a_cleaned_float_is_its_value_to_twelve_digits(x):
    shown = naming.clean_float(repr(x))
    assert float(shown) == float(f"{x:.12g}")
    assert len(shown) <= len(repr(x))
    assert math.isclose(float(shown), x, rel_tol=1e-11)


def test_list_values_give_short_readable_names():
    assert naming.value_text(ALL_LINEAR) == "q+k+v+o+gate+up+down_proj"
    assert naming.value_text("[q_proj, v_proj]") == "q+v_proj"
    assert naming.value_text("[wte]") == "wte"
    assert naming.value_text("[]") == "[]"
    name = artifacts.run_name([f"lora.target_modules={ALL_LINEAR}", "model=qwen2.5-7b", "mode=plan"])
    assert name == "lora.target_modules=q+k+v+o+gate+up+down_proj,model=qwen2.5-7b"
    # Too long even shortened: the first items, how many more, and a hash of the whole list.
    long_a = "[" + ",".join(f"layers.{i}.self_attn.q_proj" for i in range(12)) + "]"
    long_b = "[" + ",".join(f"layers.{i}.self_attn.q_proj" for i in range(13)) + "]"
    a, b = naming.value_text(long_a), naming.value_text(long_b)
    assert a.startswith("layers.0.self_attn.q+layers.1.self_attn.q+layers.2.self_attn.q+9more_proj-")
    assert a != b and len(a) < 90


def test_a_sweep_over_lists_gets_one_directory_per_list():
    cells = [str(v) for v in ovr.parse("lora.target_modules=[q_proj,v_proj],[q_proj,k_proj,v_proj,o_proj]").sweep_string_iterator()]
    names = [artifacts.run_name([f"lora.target_modules={v}"], ["lora.target_modules"]) for v in cells]
    assert names == ["lora.target_modules=q+v_proj", "lora.target_modules=q+k+v+o_proj"]


def test_long_names_stay_distinct_by_a_hash_of_the_typed_overrides():
    base = [f"data.columns.field_{i}=value_{i}" for i in range(12)]
    one = artifacts.run_name(base + ["optim.lr=0.00030000000000000003"])
    two = artifacts.run_name(base + ["optim.lr=0.0003"])
    assert len(one) == len(two) == 111 and one != two
