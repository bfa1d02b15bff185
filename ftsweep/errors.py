"""Turn an exception into the one line a person can act on."""

from __future__ import annotations

import re

_FIXES = [
    # Hydra / OmegaConf composition errors -> what to type instead.
    (re.compile(r"Could not override '([^']+)'.*?Key '([^']+)' is not in struct", re.S),
     lambda m: f"unknown config key '{m[1]}': check the spelling (`python -m ftsweep --cfg job` lists every key)"),
    (re.compile(r"Key '([^']+)' is not in struct.*?full_key: (\S+)", re.S),
     lambda m: f"unknown config key '{m[2]}': check the spelling (`python -m ftsweep --cfg job` lists every key)"),
    (re.compile(r"Value '([^']*)' (?:of type '\w+' )?could not be converted to (\w+).*?full_key: (\S+)", re.S),
     lambda m: f"{m[3]}={m[1]}: expected {m[2].lower()} (e.g. {m[3]}={_example(m[2])})"),
    (re.compile(r"Value '([^']*)' is not a valid (\w+).*?full_key: (\S+)", re.S),
     lambda m: f"{m[3]}={m[1]}: expected {m[2].lower()}"),
    (re.compile(r"Could not find '([^'/]+)/([^']+)'.*?Available options in '[^']+':\s*(.*?)(?:\nConfig search path|\n\n|$)", re.S),
     lambda m: f"unknown option {m[1]}={m[2]}; available: {', '.join(o for o in m[3].split() if not o.endswith('_schema'))}"),
    (re.compile(r"Could not override '([^']+)'\.\s*To append", re.S),
     lambda m: f"unknown config key '{m[1]}': check the spelling (`python -m ftsweep --cfg job` lists every key)"),
    (re.compile(r"In '([^']+)': Could not find '([^']+)'", re.S),
     lambda m: f"config '{m[1]}' names '{m[2]}', which does not exist"),
    (re.compile(r"Missing mandatory value: (\S+)", re.S),
     lambda m: f"{m[1]} is required: set it on the command line, e.g. {m[1]}=..."),
    (re.compile(r"(?:couldn't connect to|offline mode is enabled|OfflineModeIsEnabled).*?(?:repo|model)?[^']*'?([\w./-]+)?", re.S | re.I),
     lambda m: "cannot reach the model hub (offline?): download the model first or set model.name_or_path to a local directory"),
    (re.compile(r"(?:Lexer|Parser)?NoViableAltException: ([^\n]+)", re.S), lambda m: _quote_hint(m[1])),
    (re.compile(r"Error parsing override '([^']+)'", re.S),
     lambda m: f"cannot parse the override '{m[1]}': write key=value, quote values with spaces"),
]


def _quote_hint(override: str) -> str:
    """Hydra reads an unquoted value as letters, digits and a few signs (._-/:+ ...): anything else, such as
    Chinese text or a ';', needs quotes, one pair per value of a sweep."""
    key, _, values = override.strip().partition("=")
    quoted = ",".join('"' + v.strip().strip("'\"") + '"' for v in values.split(","))
    return (f"cannot parse the override '{override.strip()}': quote a value with characters other than ASCII letters "
            f"and digits, each value of a sweep in its own quotes: '{key}={quoted}'")


def _example(type_name: str) -> str:
    return {"Float": "3e-4", "Integer": "8", "Boolean": "true"}.get(type_name, "...")


def one_line(exc: BaseException) -> str:
    """A single line naming the problem and the fix."""
    text = str(exc)
    # `raise ... from None` says the message is complete: the suppressed context is not read for a fix.
    cause = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    full = text + ("\n" + str(cause) if cause is not None else "")
    for pattern, fix in _FIXES:
        m = pattern.search(full)
        if m:
            return fix(m)
    if isinstance(getattr(exc, "override", None), str):  # Hydra's OverrideParseException: "mismatched input '='"
        return _quote_hint(exc.override)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines and cause is not None:
        lines = [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    return "; ".join(lines) if len(lines) <= 4 else "; ".join(lines[:4]) + " ..."
