"""The metric registry: which way is better, how each number is shown. A wrong direction ranks the worst
configuration first in a report; a wrong digit count changes every table."""

from __future__ import annotations

import math

import pytest

from ftsweep import metrics as M


@pytest.mark.parametrize("name, maximize", [
    ("eval_loss", False), ("best_eval_loss", False), ("perplexity", False), ("train_loss", False),
    ("exact_match", True), ("rougeL", True), ("bleu", True), ("accuracy", True), ("f1", True),
    ("precision", True), ("recall", True),
    # families
    ("val_loss", False), ("eval_accuracy", True), ("rouge1", True), ("sacrebleu", True), ("macro_f1", True),
    ("ppl", False), ("test_perplexity", False), ("em_exact_match", True), ("Recall@5", True), ("PRECISION", True),
    # costs and unknowns are minimized unless told
    ("tokens_per_second", False), ("wall_seconds", False), ("mystery", False),
])
def test_direction(name, maximize):
    assert M.get(name).maximize is maximize
    assert M.maximizes(name) is maximize
    assert M.maximizes(name, not maximize) is (not maximize)


def test_known_metrics_have_a_direction_and_costs_do_not():
    assert M.known("eval_loss") and M.known("val_loss") and M.known("bleu")
    assert not M.known("tokens_per_second") and not M.known("mystery") and not M.known("peak_memory_bytes")
    assert M.get("eval_loss").direction == M.MINIMIZE and M.get("accuracy").direction == M.MAXIMIZE
    assert M.get("steps").direction is None


def test_family_order_decides_loss_before_accuracy():
    # "accuracy_loss" holds both hints: loss comes first in FAMILIES, so it is minimized, in nats.
    m = M.get("accuracy_loss")
    assert (m.direction, m.unit, m.digits, m.header) == (M.MINIMIZE, "nats/token", 4, "accuracy_loss")
    assert (M.get("bleu_x").unit, M.get("bleu_x").digits) == ("0-100", 2)
    assert (M.get("mystery").unit, M.get("mystery").digits, M.get("mystery").header) == ("", 4, "mystery")
    assert M.get("val_loss").name == "val_loss" and M.get("mystery").name == "mystery"


def test_formatting_is_fixed():
    assert M.get("eval_loss").format(3.14159) == "3.1416"
    assert M.get("bleu").format(32.0) == "32.00"
    assert M.get("trainable_params").format(136448) == "136,448"
    assert M.get("peak_memory_bytes").format(3 * M.GIB) == "3.00"
    assert M.get("wall_seconds").format(48.25) == "48.2"
    assert M.get("tokens_per_second").format(2900.4) == "2900"
    for missing in (None, math.nan, math.inf, -math.inf):
        assert M.format_number(missing, 2) == "—"
    assert M.format_number(1234.5, 1, thousands=True) == "1,234.5"
    assert M.format_number(1234.5, 1) == "1234.5"
    assert M.format_number(10.0, 0, scale=4.0) == "2"


def test_a_difference_too_small_for_the_tables_digits_keeps_two_significant_ones():
    assert M.format_difference(0.0531, 4) == "0.0531"  # as the table prints it
    assert M.format_difference(0.000025, 4) == "0.000025"  # not 0.0000
    assert M.format_difference(-0.00000047, 4) == "-0.00000047"  # not -0.0000
    assert M.format_difference(0.00005, 4) == "0.0001"  # rounds to a digit the table shows: as the table
    assert M.format_difference(0.0, 4) == "0.0000" and M.format_difference(-0.0, 4) == "0.0000"
    assert M.format_difference(0.004, 2, scale=0.01) == "0.40" and M.format_difference(None, 4) == "—"
    assert M.get("eval_loss").difference(0.000041) == "0.000041"


def test_console_parts():
    assert M.console("eval_loss", 3.41) == "eval_loss 3.4100"
    assert M.console("bleu", 32) == "bleu 32.00"
    assert M.console("tokens_per_second", 2900) == "2900 tok/s"
    assert M.console("wall_seconds", 48.24) == "48.2 s"
    assert M.console("peak_memory_bytes", 2 * M.GIB) == "2.00 GiB"
    assert M.console("trainable_params", 32768) == "32,768 params"
    assert M.console("mystery", 1.5) == "mystery 1.5000"


def test_axis_labels_and_table_headers():
    assert M.get("eval_loss").axis_label(False) == "eval_loss (nats/token, lower is better)"
    assert M.get("accuracy").axis_label(True) == "accuracy (0-1, higher is better)"
    assert M.get("perplexity").axis_label(False) == "perplexity (lower is better)"
    assert M.get("peak_memory_bytes").header == "peak memory (GiB)"
    assert M.get("eval_loss").spread and not M.get("tokens_per_second").spread


def test_numbers_read_from_a_summary():
    assert M.as_number(3) == 3.0 and isinstance(M.as_number(3), float)
    assert M.as_number(True) is None and M.as_number("3") is None and M.as_number(None) is None
    assert M.as_number(math.nan) is None and M.as_number(math.inf) is None
    summary = {"eval_loss": 2.5, "bleu": None, "task_metrics": {"bleu": 30.0, "eval_loss": 9.0, "f1": "x"}}
    assert M.summary_value(summary, "eval_loss") == 2.5  # the top level wins
    assert M.summary_value(summary, "bleu") == 30.0
    assert M.summary_value(summary, "f1") is None
    assert M.summary_value({"task_metrics": None}, "bleu") is None
    assert M.summary_value({"eval_loss": 0}, "eval_loss") == 0.0  # zero is a value, not a missing one


def test_worst_value_for_a_search():
    assert M.worst(True) == -math.inf and M.worst(False) == math.inf


def test_registry_entries_as_the_runs_table_shows_them():
    # Quality metrics: a direction, mean ± std over seeds, the header given or else the name.
    loss = M.REGISTRY["eval_loss"]
    assert (loss.name, loss.direction, loss.unit, loss.digits, loss.header, loss.spread) == (
        "eval_loss", M.MINIMIZE, "nats/token", 4, "eval loss", True)
    f1 = M.REGISTRY["f1"]
    assert (f1.name, f1.direction, f1.unit, f1.digits, f1.header, f1.spread) == ("f1", M.MAXIMIZE, "0-1", 4, "f1", True)
    # Costs: no direction, the mean alone, their scaling and thousands separators.
    mem = M.REGISTRY["estimated_memory_bytes"]
    assert (mem.name, mem.direction, mem.unit, mem.digits, mem.header, mem.spread, mem.scale, mem.short) == (
        "estimated_memory_bytes", None, "bytes", 2, "planned GPU memory (GiB)", False, M.GIB, "GiB")
    seen = M.REGISTRY["tokens_seen"]
    assert (seen.direction, seen.spread, seen.thousands, seen.scale, seen.header) == (None, False, True, 1.0, "tokens seen")
    assert all(name == m.name for name, m in M.REGISTRY.items())


def test_the_registry_builders():
    # The registry is built at import; its two builders are checked here as well, called afresh.
    q = M._quality("rouge2", M.MAXIMIZE, "0-1", 3)
    assert q == M.Metric("rouge2", M.MAXIMIZE, "0-1", 3, "rouge2")  # header defaults to the name; spread shown
    assert q.spread and q.scale == 1.0 and not q.thousands
    assert M._quality("val_loss", M.MINIMIZE, "nats/token", 4, "validation loss").header == "validation loss"
    c = M._cost("gpu_bytes", "bytes", 2, "GPU (GiB)", scale=M.GIB, short="GiB", thousands=True)
    assert c == M.Metric("gpu_bytes", None, "bytes", 2, "GPU (GiB)", spread=False, scale=M.GIB, thousands=True,
                         short="GiB")
    assert c.console(3 * M.GIB) == "3.00 GiB"
    plain = M._cost("steps", "steps", 0, "steps")
    assert (plain.direction, plain.spread, plain.scale, plain.thousands, plain.short) == (None, False, 1.0, False, "")
