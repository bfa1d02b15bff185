"""Read sweep and run directories into plain records.

This is the only module of the report that touches the file system on the way
in. It reads exactly the files docs/run-directory.md describes (sweep.json,
manifest.json, metrics.jsonl, summary.json, .hydra/overrides.yaml and
.hydra/config.yaml) and never raises on a damaged run: whatever cannot be read
becomes a line in ``Run.problems`` so the report can say so.

A path given by the user is one of
  - a sweep directory (holds sweep.json, or direct subdirectories that are runs),
  - a single run directory (outputs/<date>/<time>/, or one cell of a sweep),
    which is read as a sweep of one run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A directory is a run directory when it holds any of these.
RUN_MARKERS = ("summary.json", "manifest.json", ".hydra/overrides.yaml")

# The statuses summary.json can hold, plus the two the report assigns itself.
KNOWN_STATUSES = ("ok", "failed", "interrupted", "running", "skipped", "not started", "unknown")


class ReportError(ValueError):
    """Bad input: the message names the problem and the fix in one line."""


@dataclass
class Run:
    path: Path
    name: str  # the directory name, e.g. "lora.r=8,optim.lr=0.0001"
    sweep: str  # label of the sweep it belongs to
    status: str  # one of KNOWN_STATUSES (or whatever summary.json said)
    overrides: list[str]  # as typed, from .hydra/overrides.yaml or manifest["overrides"]
    summary: dict[str, Any]
    manifest: dict[str, Any]
    metrics: list[dict[str, Any]]  # the readable lines of metrics.jsonl, in file order
    problems: list[str] = field(default_factory=list)
    _config: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def value(self, metric: str) -> float | None:
        """A finite number for ``metric`` from summary.json (top level or task_metrics)."""
        raw = self.summary.get(metric)
        if raw is None:
            raw = (self.summary.get("task_metrics") or {}).get(metric)
        return as_number(raw)

    def config(self) -> dict[str, Any]:
        """The resolved config: manifest["config"], else .hydra/config.yaml (read on demand,
        because most reports never need it and YAML is the slowest file to parse)."""
        if self._config is None:
            cfg = self.manifest.get("config")
            if not isinstance(cfg, dict):
                cfg = _read_yaml(self.path / ".hydra" / "config.yaml", self.problems)
            self._config = cfg if isinstance(cfg, dict) else {}
        return self._config


@dataclass
class Sweep:
    path: Path
    label: str
    meta: dict[str, Any]  # sweep.json, or {} when there is none
    runs: list[Run]
    problems: list[str] = field(default_factory=list)


def as_number(raw: Any) -> float | None:
    """JSON numbers only (bools are not metrics); NaN and inf count as missing."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw) if math.isfinite(raw) else None


def is_run_dir(path: Path) -> bool:
    return any((path / marker).is_file() for marker in RUN_MARKERS)


def collect(paths: list[str | Path]) -> list[Sweep]:
    """Read every given path; raise ReportError naming the first unusable one."""
    if not paths:
        raise ReportError("no sweep directory given: pass a multirun/<date>/<time> folder")
    sweeps, seen = [], set()
    for given in paths:
        path = Path(given)
        if path.resolve() in seen:
            continue  # the same folder twice would only double every run
        seen.add(path.resolve())
        if not path.exists():
            raise ReportError(f"{given}: no such directory; pass a sweep folder such as multirun/<date>/<time>")
        if not path.is_dir():
            raise ReportError(f"{given}: not a directory; pass the sweep folder that holds the run directories")
        sweeps.append(read_sweep(path))
    _unique_labels(sweeps)
    return sweeps


def read_sweep(path: Path) -> Sweep:
    problems: list[str] = []
    meta: dict[str, Any] = {}
    if (path / "sweep.json").is_file():
        loaded = _read_json(path / "sweep.json", problems)
        meta = loaded if isinstance(loaded, dict) else {}
    label = str(meta.get("id") or path.resolve().name)

    if not meta and is_run_dir(path):
        run_dirs = [path]  # a single run: a sweep of one
    else:
        run_dirs = sorted((p for p in path.iterdir() if p.is_dir() and is_run_dir(p)), key=lambda p: p.name)
    if not run_dirs:
        raise ReportError(
            f"{path}: no run directories found (a run directory holds summary.json, manifest.json "
            f"or .hydra/overrides.yaml); pass a multirun/<date>/<time> or outputs/<date>/<time> folder"
        )
    return Sweep(path=path, label=label, meta=meta, runs=[read_run(d, label) for d in run_dirs], problems=problems)


def read_run(path: Path, sweep: str) -> Run:
    problems: list[str] = []
    summary = _read_json_dict(path / "summary.json", problems)
    manifest = _read_json_dict(path / "manifest.json", problems)
    metrics = _read_metrics(path / "metrics.jsonl", problems)

    overrides = _read_yaml(path / ".hydra" / "overrides.yaml", problems)
    if not isinstance(overrides, list):
        overrides = manifest.get("overrides")
    if not isinstance(overrides, list):
        overrides = []
        problems.append("no overrides found (.hydra/overrides.yaml and manifest.json both missing or unreadable)")
    overrides = [str(o) for o in overrides]

    if (path / "summary.json").is_file():
        status = str(summary.get("status") or "unknown").strip().lower()
        if status == "unknown":
            problems.append("summary.json holds no status")
    elif (path / "manifest.json").is_file() or metrics:
        # summary.json is written "running" before anything else happens, so a run
        # that got as far as a manifest or metrics but has no summary lost it.
        status = "unknown"
        problems.append("summary.json missing: status unknown")
    else:
        status = "not started"  # only .hydra: Hydra made the directory, the run never began
    return Run(
        path=path,
        name=path.resolve().name,
        sweep=sweep,
        status=status,
        overrides=overrides,
        summary=summary,
        manifest=manifest,
        metrics=metrics,
        problems=problems,
    )


def _read_json(path: Path, problems: list[str]) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        problems.append(f"{path.name} unreadable ({type(exc).__name__}: {exc})")
        return None


def _read_json_dict(path: Path, problems: list[str]) -> dict[str, Any]:
    loaded = _read_json(path, problems)
    if loaded is not None and not isinstance(loaded, dict):
        problems.append(f"{path.name} does not hold a JSON object")
    return loaded if isinstance(loaded, dict) else {}


def _read_metrics(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """The readable lines of metrics.jsonl. A killed run can leave a half-written last
    line; that and any other bad line is skipped and counted, never fatal."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        problems.append(f"metrics.jsonl unreadable ({type(exc).__name__}: {exc})")
        return []
    records, bad = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(number)
            continue
        if isinstance(record, dict):
            records.append(record)
        else:
            bad.append(number)
    if bad:
        shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        problems.append(f"metrics.jsonl: skipped {len(bad)} unreadable line(s) (line {shown})")
    return records


def _read_yaml(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    import yaml  # PyYAML comes with omegaconf/hydra; imported here to keep `import ftsweep.report` light

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        problems.append(f".hydra/{path.name} unreadable ({type(exc).__name__}: {first_line})")
        return None


def _unique_labels(sweeps: list[Sweep]) -> None:
    """Two sweeps named alike (the same time on different days) get their parent
    folder's name in front, then a number, so their rows never mix."""
    taken: set[str] = set()
    for sweep in sweeps:
        label = sweep.label
        if label in taken:
            label = f"{sweep.path.resolve().parent.name}/{sweep.label}"
        base, n = label, 2
        while label in taken:
            label, n = f"{base} ({n})", n + 1
        taken.add(label)
        if label != sweep.label:
            sweep.label = label
            for run in sweep.runs:
                run.sweep = label
