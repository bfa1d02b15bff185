"""How values are shown in run directory names and report labels (ftsweep.naming): float noise rounded away,
typed floats kept, lists shortened by their shared suffix, and long lists cut with a stable hash. A change here
renames run directories, so a finished cell would no longer be found by its name."""

from __future__ import annotations

import hashlib

import pytest

from ftsweep import naming


@pytest.mark.parametrize("text, shown", [
    # More than 12 significant digits: rounded to 12, then the shortest decimal of that.
    ("0.00030000000000000003", "0.0003"),  # range(1e-4,4e-4,1e-4)'s third cell
    ("0.30000000000000004", "0.3"),  # 0.1 + 0.2
    ("-0.30000000000000004", "-0.3"),
    ("2.0000000000000004e-05", "2e-05"),
    ("1.2345678901234E-4", "0.000123456789012"),  # capital E: 14 digits, rounded to 12
    # 12 digits or fewer are shown as typed, whatever Python's repr would print.
    ("1.00000000000", "1.00000000000"),  # 12 significant digits (trailing zeros count)
    ("1.23456789012e-4", "1.23456789012e-4"),  # 12 mantissa digits; the exponent's digits do not count
    ("1.23456789012E-4", "1.23456789012E-4"),
    ("0.000000000123", "0.000000000123"),  # leading zeros do not count: 3 digits
    ("0.000000000000000", "0.000000000000000"),  # zero written long: no significant digit
    ("+0.50", "+0.50"),
    # Not a finite float: as typed.
    ("1.0000000000001e999", "1.0000000000001e999"),  # 14 digits, but it overflows to inf
    ("8", "8"),
    ("abc", "abc"),
])
def test_clean_float(text, shown):
    assert naming.clean_float(text) == shown


@pytest.mark.parametrize("text, items", [
    ("[q_proj, v_proj]", ["q_proj", "v_proj"]),
    ("['a', \"b\"]", ["a", "b"]),  # quotes around an item are not part of it
    ("[X, MAX]", ["X", "MAX"]),
    ("[]", []),
    ("[ ]", []),
    (" [a] ", ["a"]),
    ("[a,b", None),  # not closed
    ("a,b]", None),  # not opened
    ("x]", None),
    ("[", None),
    ("[[a],b]", None),  # nested: left to the generic path
    ("[{a: 1}]", None),
])
def test_split_list(text, items):
    assert naming.split_list(text) == items


@pytest.mark.parametrize("text, shown", [
    ("[]", "[]"),
    ("[ ]", "[]"),
    ("[wte]", "wte"),  # one item: nothing shared to write once
    ("[q_proj]", "q_proj"),
    ("[a,b]", "a+b"),
    ("[a_x,b_y]", "a_x+b_y"),  # different endings: nothing shared
    ("[gate_up_proj,down_proj]", "gate_up+down_proj"),  # the shared suffix is the last _word
    ("[q_proj,k]", "q_proj+k"),  # one item lacks the suffix
    ("[q_proj,embed_tokens]", "q_proj+embed_tokens"),
    ("[q_proj,_proj]", "q_proj+_proj"),  # an item that is only the suffix: nothing before it
    ("[0.00030000000000000003,1e-4]", "0.0003+1e-4"),  # floats in a list are cleaned too
    ("[a,b", "[a,b"),  # not a list: as typed
    ("a,b]", "a,b]"),
])
def test_value_text_of_lists(text, shown):
    assert naming.value_text(text) == shown


def test_a_list_of_exactly_the_limit_is_not_cut():
    items = ["a" * 23, "b" * 24]
    assert naming.MAX_LIST_TEXT == 48
    assert naming.short_list(items) == "a" * 23 + "+" + "b" * 24  # 48 characters


def test_a_too_long_list_of_three_or_fewer_items_shows_them_all_and_no_count():
    # Nothing is left out, so no "+Nmore" (it once read "+-1more"); the hash still marks the cut form.
    assert naming.short_list(["a" * 23, "b" * 25]) == "a" * 23 + "+" + "b" * 25 + "-6d56d9"
    assert naming.short_list(["a" * 16, "b" * 16, "c" * 17]) == "a" * 16 + "+" + "b" * 16 + "+" + "c" * 17 + "-a22f85"
    # Four items: the fourth is counted.
    assert naming.short_list(["a" * 16, "b" * 16, "c" * 16, "d"]) == "a" * 16 + "+" + "b" * 16 + "+" + "c" * 16 + "+1more-fc73cc"
    assert hashlib.sha1(b"aaaaaaaaaaaaaaaaaaaaaaa,bbbbbbbbbbbbbbbbbbbbbbbbb").hexdigest()[:6] == "6d56d9"


def test_a_long_list_keeps_three_items_the_count_and_a_stable_hash():
    items = [f"layer{i}_proj" for i in range(12)]
    # sha1 of the items joined by commas, first 6 hex digits: run directories named by it must keep their name.
    digest = hashlib.sha1(b"layer0_proj,layer1_proj,layer2_proj,layer3_proj,layer4_proj,layer5_proj,layer6_proj,"
                          b"layer7_proj,layer8_proj,layer9_proj,layer10_proj,layer11_proj").hexdigest()[:6]
    assert digest == "f214f8"
    assert naming.short_list(items) == "layer0+layer1+layer2+9more_proj-f214f8"
    # A list that differs only after the third item still gets another name.
    other = naming.short_list(items[:-1] + ["layer99_proj"])
    assert other.startswith("layer0+layer1+layer2+9more_proj-") and other != naming.short_list(items)
