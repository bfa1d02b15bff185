"""Command-line overrides, read by Hydra's own parser: the one parser ftsweep uses.

`lora.r=8`, `+data.columns.x=y`, `~key`, `'data.roles={human: user}'` and the
sweep forms (`1,2`, `range(...)`, `glob(...)`) all mean here exactly what
they mean to Hydra.
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=1)
def _parser():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create()


def parse(text: str):
    """One override as Hydra's ``Override`` object."""
    return _parser().parse_override(text)


def key(text: str) -> str:
    """`+lora.r=8` -> `lora.r`; `hydra/launcher=ray` -> `hydra/launcher`; `~x` -> `x`."""
    return parse(text).key_or_group


def value(text: str) -> str:
    """The value as the user typed it (`1e-4` stays `1e-4`); quotes around a whole string are removed."""
    ov = parse(text)
    # Hydra's parse_rule always records the line it parsed (input_line).
    typed = str(ov.input_line).partition("=")[2].strip()
    if ov.is_delete() and not typed:
        return "(deleted)"
    if len(typed) >= 2 and typed[0] == typed[-1] and typed[0] in "'\"":
        return typed[1:-1]
    return typed


def split(text: str) -> tuple[str, str]:
    return key(text), value(text)


def is_under(name: str, keys) -> bool:
    """`logger.mode` is under `logger`; `hydra/launcher` is under `hydra`."""
    return any(name == k or name.startswith((k + ".", k + "/")) for k in keys)
