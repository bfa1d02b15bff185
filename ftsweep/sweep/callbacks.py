"""Hydra callback for a multirun: sweep.json at start and end, the report, the sweep's outcome."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ftsweep import artifacts
from ftsweep import overrides as ovr
from ftsweep.artifacts import now_iso

log = logging.getLogger("ftsweep.sweep")


class SweepFailed(BaseException):
    """Raised after the report is written when some cells did not finish ok; the CLI prints it and exits 1.

    A BaseException, like KeyboardInterrupt: Hydra's callback dispatcher turns every Exception
    into a warning, and the sweep's outcome must reach the CLI's exit code.
    """

    def __init__(self, failed: list[tuple[str, str]]):
        self.failed = failed
        super().__init__(f"{len(failed)} run(s) failed: " + "; ".join(f"{n} ({r})" for n, r in failed))


def grid(overrides: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """'lora.r=8,16' -> ({'lora.r': ['8', '16']}, ['lora.r']): values as typed, and the swept keys.

    A sweep whose values need the config tree to expand (glob over a group's options) is swept
    with its values unknown here ([]); the end of the sweep fills them in from the run directories.
    """
    values: dict[str, list[str]] = {}
    swept: list[str] = []
    for text in overrides:
        ov = ovr.parse(text)
        name = ov.key_or_group
        if not ov.is_sweep_override():
            values[name] = [ovr.value(text)]
            continue
        try:
            values[name] = [str(v) for v in ov.sweep_string_iterator()]
        except Exception:  # noqa: BLE001 - glob() needs Hydra's config loader, which callbacks do not get
            values[name] = []
        if len(values[name]) != 1:
            swept.append(name)
    return values, swept


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        # Unresolved: an override whose value interpolates ('lora.alpha=${lora.r}') is a different value in each cell,
        # and list() of the node would resolve it once, here, against the sweep's own config (lora.alpha=8).
        overrides = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)
        self.started = now_iso()
        previous = artifacts.read_sweep(sweep_dir) or {}
        values, swept = grid(overrides)
        # A search sweeper's own params vary too (hparams_search=optuna).
        for key in (str(k) for k in (config.hydra.sweeper.get("params") or {})):
            values.setdefault(key, [])  # sampled as the search goes: filled in from the run directories at the end
            if key not in swept:
                swept.append(key)
        self.info = {
            "id": "_".join(sweep_dir.resolve().parts[-2:]),
            "command": ovr.command(overrides, hydra=OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False), multirun=True),
            "overrides": overrides,
            "grid": values,
            "swept": sorted(swept),
            "started_at": self.started,
            "finished_at": None,
            "counts": None,
            "failed_runs": [],
            "previous_invocations": previous.get("previous_invocations", []) + ([{k: previous.get(k) for k in ("command", "started_at", "finished_at", "counts")}] if previous else []),
        }
        artifacts.write_sweep(sweep_dir, self.info)  # the jobs read "swept" from here to name themselves
        global _running
        _running = sweep_dir

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global _running
        sweep_dir = Path(config.hydra.sweep.dir)
        record = close_sweep(sweep_dir)
        if config.get("mode") == "plan":
            from ftsweep.plan import write_table

            print(f"plan: {write_table(sweep_dir)}", flush=True)
        else:
            _report(sweep_dir)
        _running = None
        failed = [(f["run"], f["reason"]) for f in record["failed_runs"]]
        if failed:
            raise SweepFailed(failed)


# The sweep this process is running, from its start to its report: a stop between cells (or while the
# report is written) still names the cells not yet run and the command that resumes them.
_running: Path | None = None


def running_sweep() -> Path | None:
    return _running


def forget_running_sweep() -> None:
    """At the end of the command, however it ended (an in-process caller may start another sweep)."""
    global _running
    _running = None


def close_sweep(sweep_dir: Path) -> dict:
    """Count the cells by status and finish sweep.json; at the end of a sweep or when it is stopped.

    Interrupted cells are counted apart from failed ones: the same command resumes them.
    """
    info = artifacts.read_sweep(sweep_dir) or {}
    started = info.get("started_at")
    counts, failed = artifacts.new_counts(), []
    for summary_path in sorted(sweep_dir.glob(f"*/{artifacts.SUMMARY}")):
        s = artifacts.read_json(summary_path) or {}
        status = s.get("status", artifacts.RUNNING)
        if status == artifacts.OK and started and (s.get("finished_at") or "") < started:
            status = artifacts.SKIPPED  # finished ok by an earlier invocation of this sweep (ISO times sort as text)
        counts["total"] += 1
        counts[status] = counts.get(status, 0) + 1
        if status in (artifacts.FAILED, artifacts.RUNNING):  # running at the end: its process died, or another has it
            reason = (s.get("error") or {}).get("message") or status
            if status == artifacts.RUNNING and (pid := artifacts.lock_holder(summary_path.parent)):
                reason = f"running in another process (pid {pid})"
            failed.append({"run": summary_path.parent.name, "reason": reason})
    _fill_unknown_values(info, sweep_dir)
    info.update(finished_at=now_iso(), counts=counts, failed_runs=failed)
    artifacts.write_sweep(sweep_dir, info)
    return info


def unstarted_cells(sweep_dir: Path, record: dict) -> list[str] | None:
    """The grid's cells with no summary yet, in launch order; None when the grid is not known up front
    (a search sweeper, or a glob over options)."""
    import itertools

    grid, swept = record.get("grid") or {}, record.get("swept") or []
    keys = [k for k in grid if k in swept]  # the order the command gave them
    if not swept or len(keys) != len(swept) or not all(grid[k] for k in keys):
        return None
    cells = [artifacts.run_name([f"{k}={v}" for k, v in zip(keys, combo)], swept)
             for combo in itertools.product(*(record["grid"][k] for k in keys))]
    return [c for c in cells if not (sweep_dir / c / artifacts.SUMMARY).exists()]


def _fill_unknown_values(info: dict, sweep_dir: Path) -> None:
    """The values a glob() or a search chose, as the run directories' overrides show them."""
    unknown = [k for k, v in (info.get("grid") or {}).items() if not v]
    if not unknown:
        return
    import yaml

    for run_dir in sorted(sweep_dir.iterdir()):
        overrides_file = run_dir / artifacts.HYDRA_OVERRIDES
        if not overrides_file.exists():
            continue
        for text in yaml.safe_load(overrides_file.read_text()) or []:
            name, value = ovr.split(text)
            if name in unknown and value not in info["grid"][name]:
                info["grid"][name].append(value)


def _report(sweep_dir: Path) -> None:
    print("\n".join(ranking(sweep_dir)), flush=True)
    try:
        from ftsweep.report import build_report

        report_md = build_report([sweep_dir])
        print(f"report: {report_md}\nreport: {report_md.with_name(artifacts.REPORT_HTML)}", flush=True)
    except ImportError:
        pass
    except Exception as exc:  # noqa: BLE001 - a report problem must not hide the runs' results
        print(f"ftsweep: the report could not be built: {type(exc).__name__}: {exc}", file=sys.stderr)


def ranking(sweep_dir: Path, metric: str = "eval_loss") -> list[str]:
    """The sweep's closing lines: one per cell, best first by ``metric``, then the best run named."""
    from ftsweep import metrics

    entry = metrics.get(metric)
    cells = []
    for path in sorted(sweep_dir.glob(f"*/{artifacts.SUMMARY}")):
        s = artifacts.read_json(path) or {}
        cells.append((path.parent.name, s.get("status", artifacts.RUNNING), metrics.summary_value(s, metric), s))
    ranked = sorted((c for c in cells if c[2] is not None and c[1] in artifacts.HAS_RESULT),
                    key=lambda c: -c[2] if entry.maximize else c[2])
    rest = [c for c in cells if c not in ranked]
    lines = [f"sweep: {len(cells)} cell(s), ranked by {metric} ({'higher' if entry.maximize else 'lower'} is better)"]
    for i, (name, status, value, s) in enumerate(ranked, 1):
        base = metrics.as_number(s.get("baseline_eval_loss")) if metric == "eval_loss" else None
        before = f" (baseline {entry.format(base)})" if base is not None else ""
        lines.append(f"  {i}. {status:<11} {metric} {entry.format(value)}{before}  {name}")
    for name, status, _, s in rest:
        reason = (s.get("error") or {}).get("message") or ""
        reason = reason.removeprefix(f"{name}: ")  # a config error names the override, which the line names already
        lines.append(f"  -  {status:<11} {name}" + (f": {reason}" if reason else ""))
    if ranked:
        lines.append(f"best: {ranked[0][0]} ({metric} {entry.format(ranked[0][2])}) -> {sweep_dir / ranked[0][0]}")
    if len(ranked) > 1:
        lines += (_against_next_over_seeds(sweep_dir, metric, entry)
                  or _against_next(sweep_dir / ranked[0][0], sweep_dir / ranked[1][0], metric, entry))
    return lines


def _against_next_over_seeds(sweep_dir: Path, metric: str, entry) -> list[str]:
    """With repeated seeds, the best cell is the luckiest seed of some configuration: name the best configuration
    by its mean over its seeds and weigh it against the next with the seeds' spread, as the report's first lines
    do (report/effects.py). Empty when no configuration ran twice, or when the runs cannot be read as a design (the
    closing lines and the report must still come)."""
    from ftsweep.report import collect, effects, factors, table

    try:
        design = factors.build_design([collect.read_sweep(sweep_dir)])
        frame = table.runs_frame(design, metric)
        configs = table.configurations(design, frame, metric, entry.maximize)
        seeds = effects.best_against_next_over_seeds(configs, effects.seed_noise(design, frame, metric), metric)
    except Exception as exc:  # noqa: BLE001 - a summary the report cannot read must not hide the ranking above
        print(f"ftsweep: the best configuration over seeds could not be worked out: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return []
    if seeds is None:
        return []
    a, b = seeds.best.stats[metric], seeds.next.stats[metric]
    verdict = "within the seeds' noise" if seeds.within_noise else "more than the seeds' noise"
    return [f"best configuration: {seeds.best.label} ({metric} {entry.format(a.mean)}, mean of {a.n} "
            f"seed{'s' if a.n != 1 else ''})",
            f"  against the next, {seeds.next.label} ({entry.format(b.mean)}, mean of {b.n}): "
            f"{entry.difference(seeds.gap)} better (95 % interval {entry.difference(seeds.gap - seeds.half)} to "
            f"{entry.difference(seeds.gap + seeds.half)} over seeds), {verdict}"]


def _against_next(best: Path, second: Path, metric: str, entry) -> list[str]:
    """Whether the best cell beats the second by more than the held-out sample's noise (report/paired.py), said
    where the sweep ends, for a reader who never opens the report. Not for two seeds of one configuration."""
    from ftsweep.report import collect, paired

    runs = [collect.read_run(path, "") for path in (best, second)]
    configs = [{k: v for k, v in (run.manifest.get("config") or {}).items() if k != "seed"} for run in runs]
    if configs[0] == configs[1]:
        return []
    pair = paired.between(*runs, metric, entry.maximize)
    if pair is None:
        return []
    if pair.tied:
        return [f"  against the next, {pair.worse}: equal on every one of the {pair.examples} held-out examples, a tie"]
    verdict = "more than the held-out sample's noise" if pair.stands_out else "within the held-out sample's noise"
    return [f"  against the next, {pair.worse}: {entry.difference(pair.diff)} better (95 % interval "
            f"{entry.difference(pair.low)} to {entry.difference(pair.high)} over {pair.examples} held-out examples), {verdict}"]
