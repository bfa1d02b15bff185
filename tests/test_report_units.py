"""Small pure pieces of the report: override parsing, levels, direction, rendering."""

from __future__ import annotations

import html
import re

from hypothesis import given
from hypothesis import strategies as st

import fixtures_report  # noqa: F401 - puts the repo on sys.path when the package is not installed

from ftsweep.report.factors import level_of, parse_override
from ftsweep.report.render import Code, CodeBlock, Para, Strong, Table, to_html, to_markdown
from ftsweep.report.table import maximizes


def test_parse_override():
    assert parse_override("lora.r=8") == ("lora.r", "8")
    assert parse_override("+data.extra=1") == ("data.extra", "1")
    assert parse_override("++optim.lr=1e-4") == ("optim.lr", "1e-4")
    assert parse_override("~lora.extra") == ("lora.extra", "(deleted)")
    assert parse_override("data.system='a=b, c'") == ("data.system", "a=b, c")
    assert parse_override("lora=dora") == ("lora", "dora")
    assert parse_override("garbage") is None


def test_levels_compare_as_numbers_and_keep_the_typed_text():
    assert level_of("1e-4").key == level_of(0.0001).key == level_of("0.0001").key
    assert level_of("1e-4").text == "1e-4"
    assert level_of("8").key == level_of(8).key == level_of(8.0).key
    assert level_of("true").key == level_of(True).key != level_of(1).key
    assert level_of("null").key == level_of(None).key
    levels = sorted([level_of(v) for v in ("16", "8", "null", "abc", "32", "1e-4")], key=lambda lv: lv.key)
    assert [lv.text for lv in levels] == ["1e-4", "8", "16", "32", "abc", "null"]


def test_direction_from_the_metric_name():
    assert not maximizes("eval_loss", None)
    assert not maximizes("best_eval_loss", None)
    assert not maximizes("perplexity", None)
    for name in ("accuracy", "f1", "exact_match", "rougeL", "rouge1", "bleu", "precision", "recall"):
        assert maximizes(name, None), name
    assert maximizes("eval_loss", True) and not maximizes("accuracy", False)
    assert not maximizes("tokens_per_second", None)  # unknown: minimized, and the report says so


@given(st.text(), st.text(), st.text())
def test_no_cell_text_breaks_a_markdown_table(plain, code, strong):
    md = to_markdown([Table(["a", "b", "c"], [[plain, Code(code), Strong(strong)]])])
    lines = md.rstrip("\n").split("\n")
    assert len(lines) == 3  # header, rule, one row: no newline escaped into the row
    # GitHub splits cells on every pipe that has no backslash right before it.
    assert len(re.findall(r"(?<!\\)\|", lines[2])) == 4
    # Outside code, markup characters arrive as entities: GitHub shows them as text.
    text_only = to_markdown([Table(["a", "c"], [[plain, Strong(strong)]])])
    assert "<" not in text_only and ">" not in text_only


@given(st.text())
def test_html_shows_any_text_literally(text):
    page = to_html([Para(text), Para(Code(text)), CodeBlock(text), Table([text], [[text]])], title=text, base_dir=None)
    body = page.split("<body>", 1)[1]
    # Every tag is the renderer's own: the text never brings a `<`.
    tags = set(re.findall(r"<(/?[^>]*)>", body))
    assert {t.lstrip("/") for t in tags} <= {"p", "code", "pre", "table", "thead", "tbody", "tr", "th", "td", "body", "html"}
    assert f"<p>{html.escape(text)}</p>" in body
