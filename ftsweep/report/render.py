"""One document, two renderings: GitHub markdown and self-contained HTML.

The report is assembled as a list of blocks (headings, paragraphs, tables,
images, code). Blocks hold raw strings; escaping happens only here, at the
edge, so every string that came from a config, an error message or a file
name is escaped exactly once: for markdown by backslashes and entities, for
HTML by html.escape. Nothing a run wrote can inject markup into either file.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Union


@dataclass(frozen=True)
class Code:
    """Inline code: identifiers, override values, commands."""

    text: str


def join_code(names: list[str], sep: str = ", ") -> list:
    """Names as inline code, ``sep`` between them ("none" for an empty list)."""
    parts: list = []
    for k, name in enumerate(names):
        parts += [sep if k else "", Code(name)]
    return parts or ["none"]


@dataclass(frozen=True)
class Strong:
    text: str


Inline = Union[str, Code, Strong, list]  # a list is a sequence of inlines


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    content: Inline


@dataclass
class Bullets:
    items: list  # of Inline


@dataclass
class Table:
    header: list[str]
    rows: list[list]  # of Inline
    align_right: set[int] | None = None  # numeric columns


@dataclass
class Image:
    path: str  # relative to the report, e.g. "plots/effects.png"
    alt: str


@dataclass
class CodeBlock:
    text: str


Block = Union[Heading, Para, Bullets, Table, Image, CodeBlock]


# ---------------------------------------------------------------- markdown

# Characters that would turn data into markup. An underscore inside a word (eval_loss)
# cannot start emphasis on GitHub, so only one at a word's edge is escaped; `#` only
# matters at the start of a line.
_MD_SPECIAL = re.compile(r"([\\`*\[\]|]|^#|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def _md_text(text: str) -> str:
    # Entities for <, >, & keep GitHub from reading data as HTML; backslashes keep
    # table pipes and emphasis characters literal. Newlines would end a table row.
    text = html.escape(text, quote=False).replace("\r", " ").replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", text)


def _md_code(text: str, in_table: bool) -> str:
    # A code span shows its content literally, except that `|` still splits a table
    # cell on GitHub; the span is fenced by more backticks than it contains.
    text = text.replace("\r", " ").replace("\n", " ")
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _md_inline(content: Inline, in_table: bool = False) -> str:
    if isinstance(content, Code):
        return _md_code(content.text, in_table)
    if isinstance(content, Strong):
        return f"**{_md_text(content.text)}**" if content.text else ""
    if isinstance(content, list):
        return "".join(_md_inline(part, in_table) for part in content)
    return _md_text(str(content))


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append("#" * block.level + " " + _md_text(block.text))
        elif isinstance(block, Para):
            out.append(_md_inline(block.content))
        elif isinstance(block, Bullets):
            out.append("\n".join("- " + _md_inline(item) for item in block.items))
        elif isinstance(block, Table):
            right = block.align_right or set()
            lines = ["| " + " | ".join(_md_text(h) for h in block.header) + " |"]
            lines.append("|" + "|".join("---:" if i in right else "---" for i in range(len(block.header))) + "|")
            lines += ["| " + " | ".join(_md_inline(cell, in_table=True) for cell in row) + " |" for row in block.rows]
            out.append("\n".join(lines))
        elif isinstance(block, Image):
            out.append(f"![{_md_text(block.alt)}]({block.path})")
        elif isinstance(block, CodeBlock):
            fence = "`" * max(3, max((len(m) for m in re.findall(r"`+", block.text)), default=0) + 1)
            out.append(f"{fence}\n{block.text}\n{fence}")
    return "\n\n".join(out) + "\n"


# -------------------------------------------------------------------- html

_CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #1f2328; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; display: block; overflow-x: auto; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; white-space: nowrap; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
code { background: #eff1f3; padding: 0 3px; border-radius: 3px; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 1em; overflow-x: auto; }
pre code { background: none; padding: 0; }
img { max-width: 100%; height: auto; }
""".strip()


def _html_inline(content: Inline) -> str:
    if isinstance(content, Code):
        return f"<code>{html.escape(content.text)}</code>"
    if isinstance(content, Strong):
        return f"<strong>{html.escape(content.text)}</strong>"
    if isinstance(content, list):
        return "".join(_html_inline(part) for part in content)
    return html.escape(str(content))


def to_html(blocks: list[Block], title: str, base_dir: Path) -> str:
    """Images are read from ``base_dir`` and embedded as data URIs: one file, opens offline."""
    body: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            body.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Para):
            body.append(f"<p>{_html_inline(block.content)}</p>")
        elif isinstance(block, Bullets):
            items = "".join(f"<li>{_html_inline(item)}</li>" for item in block.items)
            body.append(f"<ul>{items}</ul>")
        elif isinstance(block, Table):
            right = block.align_right or set()
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block.header)
            rows = "".join(
                "<tr>"
                + "".join(
                    f'<td class="num">{_html_inline(c)}</td>' if i in right else f"<td>{_html_inline(c)}</td>"
                    for i, c in enumerate(row)
                )
                + "</tr>"
                for row in block.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(block, Image):
            data = base64.b64encode((base_dir / block.path).read_bytes()).decode("ascii")
            body.append(f'<p><img alt="{html.escape(block.alt)}" src="data:image/png;base64,{data}"></p>')
        elif isinstance(block, CodeBlock):
            body.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
