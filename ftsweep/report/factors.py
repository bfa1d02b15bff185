"""Which parameters the runs vary (the factors), and the level each run has.

A parameter is a key typed on the command line, read from each run's overrides.
It is a factor when its value differs between runs. A run that did not override
a key has the value of its resolved config, so `lora.r=16` in one sweep and no
override (config lora.r: 8) in another are the levels 16 and 8 of lora.r.

Values compare as numbers when they parse as numbers, so `1e-4` and `0.0001`
are one level (and a typed list `[q_proj,v_proj]` is the list a config holds);
levels sort numerically, then as text.

`seed` is never a factor: runs that differ only in seed are replicates of one
configuration, and the report averages over them.

With several sweeps the sweep itself becomes a factor only when nothing else
tells their runs apart (two runs of different sweeps share all other levels,
e.g. the same grid run at two commits). Otherwise the overrides already say
what differs (e.g. lora=dora) and a sweep factor would only duplicate them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ftsweep import naming
from ftsweep import overrides as ovr
from ftsweep.config import RESULT_NEUTRAL_KEYS

from .collect import Run, Sweep

# Keys that change how a run is launched or logged, not what it learns: never a factor.
EXCLUDED = ("hydra",) + RESULT_NEUTRAL_KEYS
SEED = "seed"
SWEEP = "sweep"
DATA_SIZE = "data.n"  # the training-set size: a curve of its own, and no "try a larger one" edge
NOT_SET = "(not set)"


@dataclass(frozen=True)
class Level:
    key: tuple  # identity and sort order: numbers, then booleans, then text, then null
    text: str  # shown in tables and plots, as typed where a run typed it

    @property
    def number(self) -> float | None:
        return self.key[1] if self.key[0] == 0 else None


@dataclass
class Factor:
    name: str
    levels: list[Level]  # sorted

    @property
    def numeric(self) -> bool:
        return all(level.number is not None for level in self.levels)


@dataclass
class Design:
    runs: list[Run]  # in the order given: sweep by sweep, run directories by name
    factors: list[Factor]
    levels: list[dict[str, Level]]  # per run: factor name -> its level
    seeds: list[str | None]  # per run
    sweeps: list[str]  # sweep labels in the order given

    @property
    def multi_sweep(self) -> bool:
        return len(self.sweeps) > 1

    def configuration(self, i: int) -> tuple[Level, ...]:
        """What identifies run i apart from its seed."""
        return tuple(self.levels[i][f.name] for f in self.factors)

    def label(self, configuration: tuple[Level, ...]) -> str:
        if not self.factors:
            return "all runs"
        return ", ".join(f"{f.name}={level.text}" for f, level in zip(self.factors, configuration))


def parse_override(text: str) -> tuple[str, str] | None:
    """`lora.r=8` -> ("lora.r", "8"), value as typed, by Hydra's parser; None for what Hydra would reject."""
    try:
        return ovr.split(text)
    except Exception:  # noqa: BLE001 - a hand-edited overrides.yaml line is not a factor
        return None


def level_of(value: Any) -> Level:
    """A level from a typed string (shown as typed, or as ftsweep.naming shortens it: a range()
    cell's 0.00030000000000000003 as 0.0003, as its run directory is named) or a config value."""
    if isinstance(value, str):
        return Level(_sort_key(_parse_scalar(value)), naming.value_text(value))
    return Level(_sort_key(value), format_value(value))


def format_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return naming.clean_float(repr(value))
    if isinstance(value, (list, tuple)):
        return naming.short_list([format_value(v) for v in value])  # as a typed list is shown
    return str(value)


def build_design(sweeps: list[Sweep]) -> Design:
    runs = [run for sweep in sweeps for run in sweep.runs]
    typed = [_typed_overrides(run) for run in runs]

    # Candidate keys: the sweeps' grids first (their order is the order typed), then any
    # other key in order of appearance.
    keys: list[str] = []
    for sweep in sweeps:
        grid = sweep.meta.get("grid")
        keys += [k.lstrip("+") for k in grid] if isinstance(grid, dict) else []
    for overrides in typed:
        keys += list(overrides)
    keys = [k for k in dict.fromkeys(keys) if k != SEED and not _excluded(k)]

    factors, levels = [], [dict() for _ in runs]
    for key in keys:
        per_run = [_level(run, overrides, key) for run, overrides in zip(runs, typed)]
        if len({level.key for level, _ in per_run}) < 2:
            continue
        factor = Factor(key, _canonical_levels(per_run))
        canonical = {level.key: level for level in factor.levels}
        factors.append(factor)
        for i, (level, _) in enumerate(per_run):
            levels[i][key] = canonical[level.key]

    sweep_labels = [sweep.label for sweep in sweeps]
    if len(sweep_labels) > 1 and _sweeps_overlap(runs, levels, factors):
        per_run = [Level((2, 0.0, run.sweep), run.sweep) for run in runs]
        order = {label: i for i, label in enumerate(sweep_labels)}
        factors.insert(0, Factor(SWEEP, sorted(dict.fromkeys(per_run), key=lambda lv: order[lv.text])))
        for i, level in enumerate(per_run):
            levels[i][SWEEP] = level

    seeds = [_seed(run, overrides) for run, overrides in zip(runs, typed)]
    return Design(runs=runs, factors=factors, levels=levels, seeds=seeds, sweeps=sweep_labels)


def _typed_overrides(run: Run) -> dict[str, str]:
    parsed = (parse_override(text) for text in run.overrides)
    return dict(p for p in parsed if p is not None)


def _level(run: Run, overrides: dict[str, str], key: str) -> tuple[Level, bool]:
    """The run's level of ``key`` and whether it was typed (else read from its config)."""
    if key in overrides:
        return level_of(overrides[key]), True
    value = _lookup(run.config(), key)
    return (Level((2, 0.0, NOT_SET), NOT_SET) if value is _MISSING else level_of(value)), False


def _seed(run: Run, overrides: dict[str, str]) -> str | None:
    if SEED in overrides:
        return overrides[SEED]
    for value in (run.manifest.get(SEED), run.summary.get(SEED)):
        if value is not None:
            return format_value(value)
    value = _lookup(run.config(), SEED)
    return None if value is _MISSING else format_value(value)


_MISSING = object()


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    if isinstance(node, dict):
        # A config group (`lora=dora`): the composed group records its choice as `name`.
        return node.get("name", _MISSING)
    return node


def _sweeps_overlap(runs: list[Run], levels: list[dict[str, Level]], factors: list[Factor]) -> bool:
    sweeps_of: dict[tuple, set[str]] = {}
    for run, run_levels in zip(runs, levels):
        configuration = tuple(run_levels[f.name] for f in factors)
        sweeps_of.setdefault(configuration, set()).add(run.sweep)
    return any(len(s) > 1 for s in sweeps_of.values())


def _canonical_levels(per_run: list[tuple[Level, bool]]) -> list[Level]:
    """One Level per value, sorted. `1e-4` and `0.0001` are one value; it is shown as the
    first run (in the order given) typed it, or as its config holds it if none typed it."""
    by_key: dict[tuple, Level] = {}
    for level, typed in sorted(per_run, key=lambda pair: not pair[1]):  # stable: typed first
        by_key.setdefault(level.key, level)
    return sorted(by_key.values(), key=lambda level: level.key)


def _excluded(key: str) -> bool:
    return ovr.is_under(key, EXCLUDED)


def _parse_scalar(text: str) -> Any:
    items = naming.split_list(text)
    if items is not None:  # a typed list is the same level as that list in a config
        return [_parse_scalar(item) for item in items]
    lowered = text.strip().lower()
    if lowered in ("null", "none", "~"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (3, 0.0, "")
    if isinstance(value, bool):
        return (1, float(value), "")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return (0, float(value), "")
    return (2, 0.0, format_value(value))
