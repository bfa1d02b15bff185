"""Reproducibility: what each run ran on, and the command that runs it again.

Facts (git commit, dirty tree, package versions, python, platform, device, data
fingerprint) are compared across every run that wrote a manifest. A fact that
differs between runs is a confounder: a difference in the metric may come from
it rather than from the swept parameters. The one expected difference is the
data fingerprint when a `data.*` parameter is swept and the fingerprint follows
it; that is reported, not flagged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from ftsweep import overrides
from ftsweep.artifacts import HYDRA_OVERRIDES, MANIFEST

from .collect import Run
from .factors import SWEEP, Design, format_value
from .table import Configuration


HELD_OUT = "held-out tokens"  # the held-out examples as their loss scores them (manifest held_out_fingerprint)


@dataclass
class Fact:
    name: str
    values: Counter  # value -> number of runs
    confounder: bool
    note: str = ""
    setting: tuple[str, ...] = ()  # the swept parameters it follows, where one alone determines it

    def describe(self) -> str:
        if len(self.values) == 1:
            return next(iter(self.values))
        # Most common first; ties by value, so the text is stable.
        parts = sorted(self.values.items(), key=lambda kv: (-kv[1], kv[0]))
        return ", ".join(f"{value} in {n} run{'s' if n != 1 else ''}" for value, n in parts)


def run_facts(run: Run) -> dict[str, str]:
    m = run.manifest
    git = m.get("git") if isinstance(m.get("git"), dict) else {}
    device = m.get("device") if isinstance(m.get("device"), dict) else {}
    facts = {
        "git commit": _text(git.get("commit")),
        "git dirty": _text(git.get("dirty")),
    }
    packages = m.get("packages") if isinstance(m.get("packages"), dict) else {}
    facts |= {name: _text(version) for name, version in packages.items()}
    facts["python"] = _text(m.get("python"))
    facts["platform"] = _text(m.get("platform"))
    if device:
        count = device.get("count")
        facts["device"] = f"{_text(device.get('type'))}: {_text(device.get('name'))}" + (
            f" x{count}" if isinstance(count, int) and count > 1 else ""
        )
    else:
        facts["device"] = "(missing)"
    facts["data fingerprint"] = _text(m.get("data_fingerprint"))
    if m.get("test_fingerprint"):
        facts["test data fingerprint"] = _text(m.get("test_fingerprint"))
    if m.get("held_out_fingerprint"):
        facts[HELD_OUT] = _text(m.get("held_out_fingerprint"))
    return facts


def facts(design: Design) -> tuple[list[Fact], int]:
    """The facts across runs with a manifest, and how many runs have none."""
    indices = [i for i, run in enumerate(design.runs) if run.manifest]
    per_run = {i: run_facts(design.runs[i]) for i in indices}
    names = list(dict.fromkeys(name for i in indices for name in per_run[i]))
    result = []
    for name in names:
        values = Counter(per_run[i].get(name, "(missing)") for i in indices)
        fact = Fact(name, values, confounder=len(values) > 1)
        if fact.confounder and name == "data fingerprint":
            data_factors = [f.name for f in design.factors if f.name.startswith("data.") or f.name == "data"]
            if data_factors and follows(design, indices, per_run, name, data_factors):
                fact.confounder = False
                fact.note = "follows " + ", ".join(data_factors) + " (expected)"
        if fact.confounder and name == HELD_OUT:  # a confounder of every held-out number, whatever it follows
            fact.setting = tuple(f.name for f in design.factors if f.name != SWEEP and follows(design, indices, per_run, name, [f.name]))
            fact.note = "follows " + ", ".join(fact.setting) if fact.setting else ""
        result.append(fact)
    return result, len(design.runs) - len(indices)


def follows(design: Design, indices: list[int], per_run: dict, name: str, factor_names: list[str]) -> bool:
    """True when runs at the same levels of ``factor_names`` always share the fact."""
    seen: dict[tuple, str] = {}
    for i in indices:
        key = tuple(design.levels[i][f].key for f in factor_names)
        if seen.setdefault(key, per_run[i].get(name)) != per_run[i].get(name):
            return False
    return True


def dirty_runs(design: Design) -> int:
    return sum(1 for run in design.runs if isinstance(run.manifest.get("git"), dict) and run.manifest["git"].get("dirty"))


@dataclass
class Command:
    run: Run
    comment: str
    command: str


def commands(design: Design, configs: list[Configuration]) -> list[Command]:
    """Every run's command, in the order of the runs table."""
    out = []
    for config in configs:
        for i in config.runs:
            run = design.runs[i]
            config_hash = run.manifest.get("config_hash") or run.summary.get("config_hash")
            parts = [run.name if not design.multi_sweep else f"{run.sweep}/{run.name}"]
            parts += [f"seed {design.seeds[i]}"] if design.seeds[i] is not None else []
            parts += [f"config_hash {config_hash}"] if config_hash else []
            parts.append(run.status)
            command = run.manifest.get("command")
            if not isinstance(command, str) or not command.strip():
                # No manifest: the run's own overrides still say what it was.
                command = overrides.command(run.overrides)
                parts.append(f"rebuilt from {HYDRA_OVERRIDES}, no {MANIFEST}")
            out.append(Command(run, " | ".join(parts), command))
    return out


def _text(value: object) -> str:
    return "(none)" if value is None else format_value(value)
