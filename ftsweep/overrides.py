"""Command-line overrides, read by Hydra's own parser: the one parser ftsweep uses.

`lora.r=8`, `+data.columns.x=y`, `~key`, `'data.roles={human: user}'` and the
sweep forms (`1,2`, `range(...)`, `glob(...)`) all mean here exactly what
they mean to Hydra.
"""

from __future__ import annotations

import shlex
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


# Where a command writes is not part of what it computes: `resume_at` names the directory when it matters.
_PLACE = ("hydra.sweep.dir=", "hydra.run.dir=", "hydra.mode=")


def command(task, *, hydra=(), multirun: bool = False) -> str:
    """The command line that gives these overrides again, each quoted for a POSIX shell, e.g.
    `python -m ftsweep -m lora.r=8,16 'data.system=Be brief.'`. Launcher and sweeper choices
    (`hydra/launcher=ray`) are kept, the run and sweep directories left out."""
    words = [str(o) for o in hydra if not str(o).startswith(_PLACE)] + [str(o) for o in task]
    return " ".join(["python -m ftsweep", *(["-m"] if multirun else []), *(shell_word(w) for w in words)])


def resume_at(command_line: str, directory, *, multirun: bool) -> str:
    """``command_line`` writing into ``directory``: the default directories are time-stamped, so the
    same command alone would start afresh in a new one instead of resuming this one."""
    return f"{command_line} " + shell_word(f"hydra.{'sweep' if multirun else 'run'}.dir={directory}")


def shell_word(word: str) -> str:
    """One word for a POSIX shell, as a person would type it: bare when it can be, in double quotes when it holds
    Hydra's single quotes (`"data.system='Be brief, please.'"`), else in single quotes."""
    quoted = shlex.quote(word)
    if quoted != word and "'" in word and not any(c in word for c in '"$`\\!'):
        return f'"{word}"'
    return quoted
