"""Read sweep and run directories into plain records.

This is the only module of the report that touches the file system on the way
in. It reads exactly the files docs/run-directory.md describes (sweep.json,
manifest.json, metrics.jsonl, summary.json, held_out_losses.json,
samples.jsonl, .hydra/overrides.yaml and .hydra/config.yaml) and never raises on a damaged run: whatever cannot be read
becomes a line in ``Run.problems`` so the report can say so.

A path given by the user is one of
  - a sweep directory (holds sweep.json, or direct subdirectories that are runs),
  - a single run directory (outputs/<date>/<time>/, or one cell of a sweep),
    which is read as a sweep of one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ftsweep import artifacts
from ftsweep.artifacts import (  # noqa: F401 - RUN_MARKERS, KNOWN_STATUSES: still importable from here
    HYDRA_CONFIG,
    HYDRA_OVERRIDES,
    KNOWN_STATUSES,
    MANIFEST,
    METRICS,
    NOT_STARTED,
    OK,
    RUN_MARKERS,
    SUMMARY,
    UNKNOWN,
    is_run_dir,
)
from ftsweep.metrics import as_number, summary_value  # noqa: F401 - as_number: still importable from here


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
    _held_out: tuple | None = field(default=None, repr=False)
    _samples: list | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == OK

    def value(self, metric: str) -> float | None:
        """A finite number for ``metric`` from summary.json (top level or task_metrics)."""
        return summary_value(self.summary, metric)

    def held_out_losses(self) -> tuple[list[float], list[int]] | None:
        """The final held-out loss per example (held_out_losses.json): loss sums and predicted tokens, read on
        demand; None when the file is missing or damaged (a run from before it existed, a failed run)."""
        if self._held_out is None:
            found = artifacts.read_json_object(self.path / artifacts.HELD_OUT_LOSSES, [])
            sums, tokens = found.get("loss_sums"), found.get("tokens")
            good = (isinstance(sums, list) and isinstance(tokens, list) and len(sums) == len(tokens) > 0
                    and all(as_number(x) is not None for x in sums) and all(isinstance(t, int) for t in tokens))
            self._held_out = ([float(x) for x in sums], list(tokens)) if good else ()
        return self._held_out or None

    def samples(self) -> list[dict]:
        """samples.jsonl's lines (the final held-out predictions), read on demand; [] when missing."""
        if self._samples is None:
            self._samples = artifacts.read_metrics(self.path / artifacts.SAMPLES, [])
        return self._samples

    def config(self) -> dict[str, Any]:
        """The resolved config: manifest["config"], else .hydra/config.yaml (read on demand,
        because most reports never need it and YAML is the slowest file to parse)."""
        if self._config is None:
            cfg = self.manifest.get("config")
            if not isinstance(cfg, dict):
                cfg = _read_yaml(self.path / HYDRA_CONFIG, self.problems)
            self._config = cfg if isinstance(cfg, dict) else {}
        return self._config


@dataclass
class Sweep:
    path: Path
    label: str
    meta: dict[str, Any]  # sweep.json, or {} when there is none
    runs: list[Run]
    problems: list[str] = field(default_factory=list)


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
    if (path / artifacts.SWEEP).is_file():
        loaded = artifacts.read_json(path / artifacts.SWEEP, problems)
        meta = loaded if isinstance(loaded, dict) else {}
    label = str(meta.get("id") or path.resolve().name)

    if not meta and is_run_dir(path):
        run_dirs = [path]  # a single run: a sweep of one
    else:
        run_dirs = sorted((p for p in path.iterdir() if p.is_dir() and is_run_dir(p)), key=lambda p: p.name)
    if not run_dirs:
        raise ReportError(
            f"{path}: no run directories found (a run directory holds {SUMMARY}, {MANIFEST} "
            f"or {HYDRA_OVERRIDES}); pass a multirun/<date>/<time> or outputs/<date>/<time> folder"
        )
    return Sweep(path=path, label=label, meta=meta, runs=[read_run(d, label) for d in run_dirs], problems=problems)


def read_run(path: Path, sweep: str) -> Run:
    problems: list[str] = []
    summary = artifacts.read_json_object(path / SUMMARY, problems)
    manifest = artifacts.read_json_object(path / MANIFEST, problems)
    metrics = artifacts.read_metrics(path / METRICS, problems)

    overrides = _read_yaml(path / HYDRA_OVERRIDES, problems)
    if not isinstance(overrides, list):
        overrides = manifest.get("overrides")
    if not isinstance(overrides, list):
        overrides = []
        problems.append(f"no overrides found ({HYDRA_OVERRIDES} and {MANIFEST} both missing or unreadable)")
    overrides = [str(o) for o in overrides]

    if (path / SUMMARY).is_file():
        status = str(summary.get("status") or UNKNOWN).strip().lower()
        if status == UNKNOWN:
            problems.append(f"{SUMMARY} holds no status")
    elif (path / MANIFEST).is_file() or metrics:
        # summary.json is written "running" before anything else happens, so a run
        # that got as far as a manifest or metrics but has no summary lost it.
        status = UNKNOWN
        problems.append(f"{SUMMARY} missing: status unknown")
    else:
        status = NOT_STARTED  # only .hydra: Hydra made the directory, the run never began
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


def _read_yaml(path: Path, problems: list[str]) -> Any:
    if not path.is_file():
        return None
    import yaml  # PyYAML comes with omegaconf/hydra; imported here to keep `import ftsweep.report` light

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=loader)  # noqa: S506 - a safe loader
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        problems.append(f"{artifacts.HYDRA_DIR}/{path.name} unreadable ({type(exc).__name__}: {first_line})")
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


def available_metrics(runs: list[Run]) -> list[str]:
    """Numbers that ok runs report in summary.json (top level or task_metrics)."""
    names: set[str] = set()
    for run in runs:
        if run.ok:
            names |= {k for k, v in run.summary.items() if as_number(v) is not None}
            names |= {k for k, v in (run.summary.get("task_metrics") or {}).items() if as_number(v) is not None}
    return sorted(names)
