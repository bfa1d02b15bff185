"""One tracker interface for a run: metrics.jsonl always, SwanLab and W&B behind it.

Each backend gets exactly one run per sweep cell, opened before training and
finished in a ``finally`` - the stock transformers integrations do neither, so
in a multirun the second job would log into the first job's run. A backend
that raises never fails training: it warns once and is switched off.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ftsweep import artifacts, runtime

log = logging.getLogger("ftsweep.tracking")

# One colour per sweep cell, by the cell's index (SwanLab's own preset palette, which its cloud mode also
# assigns by index). Left to itself, local mode draws a random colour from Python's global `random`,
# which the run has just seeded: every cell of a sweep would get the same one.
PALETTE = ["#528d59", "#587ad2", "#c24d46", "#9cbe5d", "#6ebad3", "#dfb142", "#6d4ba4", "#8cc5b7",
           "#892d58", "#40877c", "#d0703c", "#d47694", "#e3b292", "#b15fbb", "#905f4a", "#989fa3"]

# metrics.jsonl key -> chart name. Keys not listed keep their name (task metrics: eval/accuracy, ...).
TRAIN_NAMES = {"loss": "loss", "learning_rate": "lr", "grad_norm": "grad_norm", "tokens_per_second": "tokens_per_second",
               "padding_efficiency": "padding_efficiency", "epoch": "epoch", "tokens_seen": "tokens_seen"}
EVAL_NAMES = {"eval_loss": "loss", "perplexity": "perplexity"}
# Bookkeeping of an eval record that the train series already chart (epoch, tokens) or that is no metric.
EVAL_SKIP = {"split", "step", "time", "epoch", "tokens_seen"}
# Summary fields that are the last point of a chart: the run's summary does not repeat them.
SUMMARY_AS_CHART = {"eval_loss": "eval/loss", "perplexity": "eval/perplexity"}
# Summary fields that are text, kept as they are; every other field must be a finite number.
SUMMARY_TEXT = ("status",)


def _clean(metrics: dict) -> dict[str, float]:
    """Numbers only, finite only: trackers reject None / NaN."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _value(v: Any) -> Any:
    """A config value a tracker table can show: scalars as they are, anything else as text."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)) and all(x is None or isinstance(x, (bool, int, float, str)) for x in v):
        return list(v)
    return str(v)


def flatten(config: dict, first: list[str] = (), prefix: str = "") -> dict[str, Any]:
    """Nested config -> one level of dotted keys (`lora.r: 8`), the keys in `first` leading.

    Trackers show a nested group as one JSON blob (`[object Object]` on SwanLab's run card); flat keys are
    table columns a sweep can be compared by. A key in `first` may name a leaf (`lora.r`) or a group chosen on
    the command line (`lora=dora`: its `lora.name` leads).
    """
    flat: dict[str, Any] = {}

    def walk(node: dict, path: str) -> None:
        for k, v in node.items():
            key = f"{path}{k}"
            if isinstance(v, dict) and v:
                walk(v, key + ".")
            else:
                flat[key] = _value(v)

    walk(config, prefix)
    lead = []
    for key in first:
        key = prefix + key
        for candidate in (key, key + ".name"):
            if candidate in flat and candidate not in lead:
                lead.append(candidate)
                break
    return {k: flat[k] for k in lead} | {k: v for k, v in flat.items() if k not in lead}


def swept_keys(tags: list[str]) -> list[str]:
    """`lora.r=8` -> `lora.r`: the tags are the cell's swept overrides."""
    from ftsweep import overrides as ovr

    return [ovr.key(t) for t in tags if "=" in t]


def cell_index(run_name: str) -> int:
    """The cell's position in its sweep (Hydra's job number); a run outside Hydra hashes its name."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return int(HydraConfig.get().job.num)
    except Exception:  # noqa: BLE001 - no Hydra, or a job config without a number
        pass
    return zlib.crc32(run_name.encode())


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


@contextmanager
def _swanlab_console(quiet: bool):
    """SwanLab prints its greeting (version, run folder, `swanlab watch` hint) at every init and the hint again at
    every finish: 5 lines per cell of a sweep. Its console is a rich Console with a `quiet` switch."""
    try:
        from swanlab.sdk.internal.pkg import console

        before = console.c.quiet, console.c.soft_wrap
    except (ImportError, AttributeError):  # another SwanLab layout: its own output stays
        yield
        return
    # soft_wrap: in a log file rich would break the hint at 80 columns, mid-sentence.
    console.c.quiet, console.c.soft_wrap = quiet or before[0], True
    try:
        yield
    finally:
        console.c.quiet, console.c.soft_wrap = before


@contextmanager
def _own_ctrl_c():
    """Ctrl-C stays with the run. swanlab.init installs a handler that ends the record as aborted at once and then
    interrupts: the run's own finish (its summary values, its ending) would find the record closed and fail. The run
    ends the record itself on every path (Run.close), so SwanLab's handler is put back to what it replaced; SwanLab
    restores that same handler at finish."""
    import signal

    before = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        try:
            signal.signal(signal.SIGINT, before)
        except (ValueError, TypeError):  # not the main thread (SwanLab installed nothing either), or set outside Python
            pass


def _order_swanlab_config(run_dir: Path, lead: int) -> None:
    """SwanLab writes files/config.yaml with its keys sorted alphabetically, each with its insertion `sort`; the local
    dashboard lays out its table columns in file order (data.columns, data.custom_template, ...). Rewritten with the
    same content in the order: the `lead` swept keys, the run's summary values, the rest of the config."""
    import yaml

    path = Path(run_dir) / "files" / "config.yaml"
    if not path.is_file():
        return
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}

    def rank(item):
        key, entry = item
        sort = entry.get("sort", 0) if isinstance(entry, dict) else 0
        return (0 if sort < lead else 1 if key.startswith("summary.") else 2, sort)

    ordered = dict(sorted(config.items(), key=rank))
    artifacts.atomic_write_text(path, yaml.safe_dump(ordered, allow_unicode=True, default_flow_style=False, sort_keys=False))


@dataclass(frozen=True)
class Ending:
    """How a run ended, as the trackers record it: SwanLab's success / aborted / crashed states; for W&B an exit
    code, 0 finished, else failed, with 128 + the signal for a stop (W&B's convention for runs ended by a signal)."""

    status: str
    error: str
    exit_code: int

    @classmethod
    def of(cls, summary: dict) -> Ending:
        status, error = summary.get("status"), (summary.get("error") or {}).get("message") or ""
        if status == artifacts.OK:
            return cls(status, "", 0)
        if status == artifacts.INTERRUPTED:
            return cls(status, error or "interrupted", runtime.exit_code(error))
        return cls(str(status), error or f"run {status}", 1)


class SwanLabBackend:
    name = "swanlab"

    def __init__(self, *, project, run_name, group, tags, config, mode, logdir, color, lead=0, resume_id=None):
        import swanlab

        self.swanlab = swanlab
        # SwanLab stores a None config value as {}: spell it as Hydra does.
        config = {k: "null" if v is None else v for k, v in config.items()}
        # The greeting once per log folder: the first run of a sweep says where the runs are and how to watch them.
        first = not any(Path(logdir).glob("run-*"))
        # Only SwanLab's cloud resumes an experiment by its id; locally a resumed run is a new experiment (named
        # `<name>-2` by SwanLab), which gets the stopped session's steps again from metrics.jsonl (Tracker.replay).
        self.continued = bool(resume_id) and mode == "online"
        resume = {"id": resume_id, "resume": "allow"} if self.continued else {}
        description = "resumed from a checkpoint: the steps before it are replayed from metrics.jsonl" if resume_id and not self.continued else None
        with _swanlab_console(quiet=not first), _own_ctrl_c():
            self.run = swanlab.init(project=project, name=run_name, group=group, tags=tags, config=config, color=color,
                                    mode=mode, log_dir=str(logdir), description=description, **resume)
        self.id = self.run.id
        self.dir = Path(self.run.dir)
        self.lead = lead
        _order_swanlab_config(self.dir, lead)

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict, ending: Ending) -> None:
        # SwanLab has no run summary: the values join the config, so the experiment table has them as columns
        # (a value logged as a metric would be a chart with one point).
        self.run.config.update({f"summary.{k}": v for k, v in summary.items()})
        state = {artifacts.OK: "success", artifacts.INTERRUPTED: "aborted"}.get(ending.status, "crashed")
        with _swanlab_console(quiet=True):  # the `swanlab watch` hint again
            self.swanlab.finish(state=state, error=None if state == "success" else ending.error)
        _order_swanlab_config(self.dir, self.lead)

    def abandon(self, reason: str) -> None:
        """End the record as crashed: left active, the dashboard would show it running for ever, its Ctrl-C handler
        would stay installed, and the next cell's swanlab.init (which refuses while a run is active) would fail."""
        with _swanlab_console(quiet=True):
            self.swanlab.finish(state="crashed", error=reason)


WANDB_TAG_LIMIT = 64  # wandb.Settings refuses a longer tag, and with it the whole run


def wandb_tag(tag: str, limit: int = WANDB_TAG_LIMIT) -> str:
    """An override as a W&B tag: whole when it fits, else its key and the end of its value, which tells files apart
    (data.path=/home/someone/projects/chat-experiments/2026/train_v2.jsonl, 70 characters, becomes
    data.path=…someone/projects/chat-experiments/2026/train_v2.jsonl)."""
    if len(tag) <= limit:
        return tag
    key, sep, value = tag.partition("=")
    keep = limit - len(key) - len(sep) - 1  # 1: the ellipsis
    return f"{key}{sep}…{value[-keep:]}" if sep and keep >= 8 else tag[: limit - 1] + "…"


class WandbBackend:
    name = "wandb"

    def __init__(self, *, project, run_name, group, tags, config, mode, logdir, color, lead=0, resume_id=None):
        import wandb

        if mode == "local":
            mode = "offline"
        if os.environ.get("WANDB_MODE"):
            mode = os.environ["WANDB_MODE"]
        elif mode == "offline" and os.environ.get("WANDB_API_KEY"):
            mode = "online"  # credentials present: sync live
        Path(logdir).mkdir(parents=True, exist_ok=True)
        tags = [wandb_tag(t) for t in tags]
        # A resumed run continues its W&B run: online by its id; offline the two sessions' folders share the id and
        # `wandb sync` uploads them, in order, as one run.
        resume = {"id": resume_id, "resume": "allow"} if resume_id else {}
        self.run = wandb.init(project=project, name=run_name, group=group, tags=tags, config=config, mode=mode,
                              dir=str(logdir), reinit="finish_previous",
                              # quiet: no history sparklines and summary at finish (about 35 lines per cell);
                              # ftsweep's own closing lines say the same.
                              settings=wandb.Settings(quiet=True), **resume)
        self.id = self.run.id
        self.continued = bool(resume_id)

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self, summary: dict, ending: Ending) -> None:
        for k, v in summary.items():
            self.run.summary[k] = v
        self.run.finish(exit_code=ending.exit_code)
        self.flush()

    def abandon(self, reason: str) -> None:
        """End the run as failed (exit code 1) rather than leave it open until the next cell's init."""
        self.run.finish(exit_code=1)
        self.flush()

    @staticmethod
    def flush() -> None:
        """finish() returns before W&B's service has written the run's file (offline, 7 bytes of it right after,
        once in six); the process's exit waits for it, but a Ray or SLURM worker may be stopped before its exit
        hooks run. Teardown waits for it now and stops the service, which the next cell's init starts again
        (0.2 s a cell)."""
        import wandb

        wandb.teardown()


BACKENDS = {"swanlab": SwanLabBackend, "wandb": WandbBackend}


def log_dir(logger_cfg, backend: str, root: Path) -> Path:
    """Where a tracker writes its local runs: logger.swanlab_dir / logger.wandb_dir, else a folder of the sweep
    (or single run) directory, so that every cell of a sweep is in one place."""
    given = logger_cfg.get(f"{backend}_dir")
    if given:
        return Path(str(given)).expanduser()
    return root / (artifacts.SWANLOG if backend == "swanlab" else artifacts.WANDB_DIR)


class Tracker:
    """Fan-out to the configured backends; every call is guarded."""

    def __init__(self, backends: list[Any]):
        self.backends = backends
        self.last: dict[str, float] = {}  # chart name -> its last value, so the summary does not repeat it
        self.eval_charts: set[str] | None = None  # the metrics every evaluation has, known from the first
        self.step = 0  # the last step charted: a tracker's steps only grow

    @classmethod
    def open(cls, logger_cfg, *, run_name: str, group: str | None, tags: list[str], config: dict, root: Path,
             index: int | None = None, resume: dict[str, str] | None = None) -> "Tracker":
        """``resume``: a resumed run's tracker records ({backend: id}, the stopped session's `trackers`), continued
        where the backend can."""
        backends = []
        resume = resume or {}
        if logger_cfg.mode == "disabled":
            return cls([])
        swept = swept_keys(tags)
        flat = flatten(config, swept)
        lead = sum(1 for k in swept if k in flat or f"{k}.name" in flat)
        color = colour(cell_index(run_name) if index is None else index)
        for name in logger_cfg.backends:
            logdir = log_dir(logger_cfg, name, root)
            try:
                backends.append(BACKENDS[name](project=logger_cfg.project, run_name=run_name, group=group, tags=tags,
                                               config=flat, mode=logger_cfg.mode, logdir=logdir, color=color,
                                               lead=lead, resume_id=resume.get(name)))
            except Exception as exc:  # not installed, no network, bad key: train anyway
                log.warning("tracker %s could not start (%s: %s); training goes on, metrics.jsonl is complete",
                            name, type(exc).__name__, exc)
        return cls(backends)

    def _guard(self, backend, what: str, fn, *args) -> None:
        try:
            fn(*args)
        except Exception as exc:
            reason = f"tracker {backend.name} failed on {what} ({type(exc).__name__}: {exc})"
            log.warning("%s; it is switched off for this run", reason)
            self.backends = [b for b in self.backends if b is not backend]
            try:
                backend.abandon(f"{reason}; the run's metrics.jsonl is complete")
            except Exception:  # noqa: BLE001 - already warned; the run goes on without it
                pass

    @staticmethod
    def chart_names(record: dict) -> dict[str, float]:
        """A metrics.jsonl record -> {chart name: value}: `train/loss`, `train/lr`, `eval/loss`, `eval/accuracy`."""
        values = _clean(record)
        if record.get("split") == "eval":
            return {"eval/" + EVAL_NAMES.get(k, k): v for k, v in values.items() if k not in EVAL_SKIP}
        return {"train/" + TRAIN_NAMES.get(k, k): v for k, v in values.items() if k not in ("step", "time")}

    def ids(self) -> dict[str, str]:
        """{backend: its record's id}: kept in summary.json, so that a resumed run continues the same records."""
        return {b.name: b.id for b in self.backends}

    def charts(self, record: dict) -> tuple[int, dict[str, float]]:
        """A metrics.jsonl record -> (step, the charts it adds a point to)."""
        step = int(record.get("step", 0))
        metrics = self.chart_names(record)
        if record.get("split") == "eval":
            # A metric only the final evaluation computes (generation metrics of a causal LM) would be a chart
            # with one point: it goes to the summary instead.
            if self.eval_charts is None:
                self.eval_charts = set(metrics)
            metrics = {k: v for k, v in metrics.items() if k in self.eval_charts}
        self.last.update(metrics)
        self.step = max(self.step, step)
        return step, metrics

    def log(self, record: dict) -> None:
        if int(record.get("step", 0)) < self.step:
            # An out-of-memory retry trains again from step 0, with the same effective batch, data order and random
            # state: the charts keep the first attempt's points for the steps it reached (W&B would drop these with
            # a warning each), and metrics.jsonl has the retry's.
            return
        step, metrics = self.charts(record)
        for b in list(self.backends):
            self._guard(b, "log", b.log, metrics, step)

    def replay(self, history: list[dict]) -> None:
        """A resumed run's metrics.jsonl lines up to its checkpoint. A record that starts anew (SwanLab's local mode
        cannot resume one) logs them, so that its charts begin at the baseline; a continued one has them already."""
        fresh = [b for b in self.backends if not b.continued]
        for record in history:
            step, metrics = self.charts(record)
            for b in fresh:
                if b in self.backends:
                    self._guard(b, "log", b.log, metrics, step)

    def summary_values(self, summary: dict) -> dict[str, Any]:
        """The run's end values that no chart already ends with: numbers, and the status as text."""
        fields = {k: v for k, v in summary.items() if k != "task_metrics"} | dict(summary.get("task_metrics") or {})
        values: dict[str, Any] = {k: fields[k] for k in SUMMARY_TEXT if isinstance(fields.get(k), str)}
        for k, v in _clean(fields).items():
            chart = SUMMARY_AS_CHART.get(k, f"eval/{k}")
            if chart in self.last and self.last[chart] == v:
                continue  # the chart's last point is this value
            values[k] = v
        return values

    def finish(self, summary: dict) -> None:
        """End every record with the run's end values and its real ending: a failed or stopped run is not shown
        as finished."""
        values, ending = self.summary_values(summary), Ending.of(summary)
        for b in list(self.backends):
            self._guard(b, "finish", b.finish, values, ending)
        self.backends = []
