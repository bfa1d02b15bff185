"""How a value typed on the command line (or made by a Hydra sweep) is shown in names and reports.

Two readers need a value shorter than Hydra's text of it:
  - run directory names (artifacts.run_name) and tracker run names,
  - the report's level labels (tables, plot ticks).

Floats: Hydra's ``range(1e-4,4e-4,1e-4)`` hands its third cell the text
``0.00030000000000000003`` (1e-4 + 2e-4 in binary floating point). A float
whose text carries more than 12 significant digits is shown rounded to 12,
then as the shortest decimal that reads back as that rounded number:
``0.0003``. Anything with 12 digits or fewer is shown exactly as typed
(``1e-4`` stays ``1e-4``). The manifest keeps the exact text: its command
must reproduce the same float.

Lists: ``[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]`` is shown
as ``q+k+v+o+gate+up+down_proj`` (a suffix every item shares is written once,
items joined by ``+``, which neither a shell nor a file system treats
specially); a list too long for that keeps its first items, the count and a
hash, so two lists never share a name.

Standard library only, and pure: the CLI names a cell's directory with this
before anything else is imported.
"""

from __future__ import annotations

import hashlib
import math
import re

SIGNIFICANT = 12  # digits a float keeps when its text has more (float noise lives in digits 16-17)
MAX_LIST_TEXT = 48  # characters of a shortened list before it is cut and hashed
LIST_HEAD = 3  # items a cut list still shows

_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+(?=[eE]))([eE][+-]?\d+)?$")
_DIGITS = re.compile(r"[1-9]\d*")


def clean_float(text: str) -> str:
    """``0.00030000000000000003`` -> ``0.0003``; ``1e-4`` -> ``1e-4`` (typed text kept); non-floats unchanged."""
    stripped = text.strip()
    if not _FLOAT.match(stripped):
        return text
    value = float(stripped)
    if not math.isfinite(value) or _significant(stripped) <= SIGNIFICANT:
        return text
    return repr(float(f"{value:.{SIGNIFICANT}g}"))


def _significant(text: str) -> int:
    """Significant digits written in a decimal literal (leading zeros do not count; trailing ones do)."""
    mantissa = re.split(r"[eE]", text.lstrip("+-"))[0].replace(".", "")
    match = _DIGITS.search(mantissa)
    return len(mantissa) - match.start() if match else 0


def split_list(text: str) -> list[str] | None:
    """``[a, b,c]`` -> ``['a', 'b', 'c']``; None when the text is not a flat list.

    Hydra's own list syntax; nested lists and dicts are left to the generic path.
    """
    stripped = text.strip()
    if len(stripped) < 2 or stripped[0] != "[" or stripped[-1] != "]":
        return None
    inner = stripped[1:-1]
    if any(c in inner for c in "[]{}"):
        return None
    items = [item.strip().strip("'\"") for item in inner.split(",")] if inner.strip() else []
    return items


def short_list(items: list[str]) -> str:
    """``['q_proj', 'v_proj']`` -> ``q+v_proj``; a long list -> ``q+k+v+4more-1a2b3c``."""
    if not items:
        return "[]"
    items = [clean_float(item) for item in items]
    suffix = _shared_suffix(items)
    heads = [item[: len(item) - len(suffix)] for item in items] if suffix else items
    text = "+".join(heads) + suffix
    if len(text) <= MAX_LIST_TEXT:
        return text
    digest = hashlib.sha1(",".join(items).encode()).hexdigest()[:6]
    more = len(items) - LIST_HEAD
    count = f"+{more}more" if more > 0 else ""  # a list of LIST_HEAD or fewer long items shows them all
    return "+".join(heads[:LIST_HEAD]) + f"{count}{suffix}-{digest}"


def _shared_suffix(items: list[str]) -> str:
    """The ``_word`` ending every item shares (``_proj``), when each item has something before it."""
    if len(items) < 2:
        return ""
    first = items[0]
    cut = first.rfind("_")
    if cut <= 0:
        return ""
    suffix = first[cut:]
    return suffix if all(item.endswith(suffix) and len(item) > len(suffix) for item in items) else ""


def value_text(text: str) -> str:
    """A value as names and the report show it: floats without noise, lists shortened, the rest as typed."""
    items = split_list(text)
    if items is not None:
        return short_list(items)
    return clean_float(text)


__all__ = ["clean_float", "short_list", "split_list", "value_text"]
