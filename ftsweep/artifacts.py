"""The run directory and the sweep directory: the one place that knows their files.

Here, and nowhere else in the code:
  - every file and folder name a run, a sweep, the report, the data cache or a
    tool writes (other modules import the constants),
  - the status vocabulary of summary.json,
  - typed records of what manifest.json, summary.json, metrics.jsonl lines and
    sweep.json hold,
  - their readers and writers, and the one atomic write (temp file in the same
    directory, fsync, rename) that every whole-file write goes through.

docs/run-directory.md describes the same files for people;
tests/test_run_directory_doc.py fails when the two disagree. Standard library
only: the report, the CLI and Hydra's launcher plugin import this without torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, TypedDict

# ---- file names: a run directory -------------------------------------------------------------------

MANIFEST = "manifest.json"  # what was run, and on what
METRICS = "metrics.jsonl"  # one line per logging step and per evaluation
SUMMARY = "summary.json"  # the result and the status
SAMPLES = "samples.jsonl"  # generations on held-out prompts (sft)
TEST_SAMPLES = "test_samples.jsonl"  # the same on data.test_path's prompts
HELD_OUT_LOSSES = "held_out_losses.json"  # the final held-out loss example by example (the report's paired intervals)
ADAPTER = "adapter"  # folder: loads with PeftModel.from_pretrained
ADAPTER_CONFIG = "adapter_config.json"  # inside adapter/ (written by PEFT): an adapter was saved
ADAPTER_INIT = "adapter_init"  # folder, PiSSA / OLoRA only: the initial adapter, gone once adapter/ is converted
CHECKPOINTS = "checkpoints"  # folder of the Trainer's checkpoints, for resume
CHECKPOINT_PREFIX = "checkpoint-"  # checkpoints/checkpoint-<step>/ (named by transformers' Trainer)
TRAINER_STATE = "trainer_state.json"  # inside a checkpoint, written last: a checkpoint holding it is complete
ADALORA_BUDGET = "adalora_budget.pt"  # inside a checkpoint, AdaLoRA only: its rank allocator, for resume
LOCK = ".lock"  # held (flock) by the process training the run; holds its pid; the lock goes with the process
RUN_LOG = "run.log"  # the console log; conf/hydra/job_logging/ftsweep.yaml names it too (a test keeps them equal)
HYDRA_DIR = ".hydra"  # written by Hydra
REPLACED = "replaced"  # folder: replaced/<config hash>/ keeps a finished run of another config that trained here
HYDRA_CONFIG = ".hydra/config.yaml"
HYDRA_OVERRIDES = ".hydra/overrides.yaml"
PLAN = "plan.json"  # mode=plan: the only file of a cell
GENERATIONS = "generations.jsonl"  # python -m ftsweep.generate's default output, beside samples.jsonl
GENERATION_METRICS_SUFFIX = ".metrics.json"  # generations.jsonl -> generations.metrics.json

# ---- file names: a sweep directory -----------------------------------------------------------------

SWEEP = "sweep.json"  # command, grid, start/end, counts
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
RUNS_CSV = "runs.csv"
PLOTS = "plots"  # folder of the report's figures
PLOT_EFFECTS = "effects.png"
PLOT_HEATMAP = "heatmap.png"
PLOT_DATA_SIZE = "data_size.png"
PLOT_LOSS_CURVES = "loss_curves.png"
PLOT_INTERACTIONS = "interactions.png"  # one panel per pair of swept factors
PLOT_FILES = (PLOT_EFFECTS, PLOT_HEATMAP, PLOT_INTERACTIONS, PLOT_DATA_SIZE, PLOT_LOSS_CURVES)
COMPARE = "compare"  # <first sweep>/compare/: the report of several sweeps
PLAN_TABLE = "plan.md"  # mode=plan: one row per cell
GPU_POOL_LOG = "gpu_pool.jsonl"  # hydra/launcher=ray: one line per cell (device, start, end, status)
SWANLOG = "swanlog"  # folder: SwanLab's local runs of every cell (logger=swanlab)
WANDB_DIR = "wandb_runs"  # folder: W&B's offline runs of every cell (logger=wandb)

# ---- file names: outside run directories --------------------------------------------------------

TOKENIZED = "tokenized"  # $FTSWEEP_HOME/tokenized/<key>/: the tokenized-data cache
CACHE_META = "meta.json"  # inside a cache entry: everything but the datasets
CACHE_TRAIN = "train"  # inside a cache entry: datasets.save_to_disk folders
CACHE_VAL = "val"
CACHE_TEST = "test"  # only when the run has data.test_path
TINY_PREFIX = "tiny-llama-v"  # the built-in tiny model's folder under $FTSWEEP_HOME: tiny-llama-v<builder version>
TINY_MARKER = "ftsweep.json"  # inside the built-in tiny model's folder: which builder made it
EXPORT_INFO = "ftsweep_export.json"  # inside an export folder: which run it was merged from

# What a finished run leaves as its results: kept in replaced/<config hash>/ when another config trains in its
# directory. Not run.log (appended to, and already open for the new run), .hydra/ (Hydra's, already rewritten),
# checkpoints/ (removed) or anything else a user put there.
RESULTS = (MANIFEST, METRICS, SUMMARY, SAMPLES, TEST_SAMPLES, HELD_OUT_LOSSES, ADAPTER, ADAPTER_INIT, GENERATIONS,
           Path(GENERATIONS).with_suffix(GENERATION_METRICS_SUFFIX).name)

# A directory is a run directory when it holds any of these.
RUN_MARKERS = (SUMMARY, MANIFEST, HYDRA_OVERRIDES)

# Every name above, grouped as docs/run-directory.md shows them (its test reads these).
RUN_DIR_NAMES = (MANIFEST, METRICS, SUMMARY, LOCK, SAMPLES, TEST_SAMPLES, HELD_OUT_LOSSES, ADAPTER, ADAPTER_CONFIG, ADAPTER_INIT, CHECKPOINTS, CHECKPOINT_PREFIX, ADALORA_BUDGET,
                 TRAINER_STATE, RUN_LOG, HYDRA_DIR, HYDRA_CONFIG, HYDRA_OVERRIDES, PLAN, GENERATIONS,
                 GENERATION_METRICS_SUFFIX, REPLACED)
SWEEP_DIR_NAMES = (SWEEP, REPORT_MD, REPORT_HTML, RUNS_CSV, PLOTS, *PLOT_FILES, COMPARE, PLAN_TABLE, GPU_POOL_LOG,
                   SWANLOG, WANDB_DIR)
OTHER_NAMES = (TOKENIZED, CACHE_META, CACHE_TRAIN, CACHE_VAL, CACHE_TEST, TINY_PREFIX, TINY_MARKER, EXPORT_INFO)
FOLDERS = (ADAPTER, ADAPTER_INIT, CHECKPOINTS, HYDRA_DIR, REPLACED, PLOTS, COMPARE, SWANLOG, WANDB_DIR, TOKENIZED, CACHE_TRAIN, CACHE_VAL, CACHE_TEST)

# ---- statuses --------------------------------------------------------------------------------------

RUNNING = "running"  # written first; stays if the process is killed
OK = "ok"
FAILED = "failed"
INTERRUPTED = "interrupted"  # Ctrl-C or SIGTERM: a checkpoint was saved, the same command resumes
SKIPPED = "skipped"  # skip_finished found the same config finished ok; summary.json is left alone
STATUSES = (RUNNING, OK, FAILED, INTERRUPTED, SKIPPED)

# The two the report assigns itself to a directory whose summary.json it cannot read.
NOT_STARTED = "not started"  # only .hydra/: Hydra made the directory, the run never began
UNKNOWN = "unknown"  # manifest or metrics but no readable status
# Every status, in the order the report lists them.
KNOWN_STATUSES = (OK, FAILED, INTERRUPTED, RUNNING, SKIPPED, NOT_STARTED, UNKNOWN)
# A result to read (the console line, the search objective).
HAS_RESULT = (OK, SKIPPED)
# What sweep.json lists under failed_runs: a run that did not finish.
UNFINISHED = (FAILED, INTERRUPTED, RUNNING)
POOL_CRASHED = "crashed"  # gpu_pool.jsonl: the job's process died; other lines hold Hydra's JobStatus names


# ---- typed records ------------------------------------------------------------------------------------
# TypedDicts: the files stay plain JSON objects (dicts in code), the records name every field once.


class ErrorInfo(TypedDict):
    type: str  # exception class, or "Interrupted"
    message: str  # one line


class AnswerSpread(TypedDict):
    """summary.json's answer_spread (ftsweep.evaluation.answer_spread): a run whose most common prediction is 90 %
    or more of them, and more frequent than the most common reference, gives one answer to nearly everything."""

    n: int  # predictions scored: sft, the first eval.num_samples held-out prompts; classify, every held-out example
    distinct: int
    top: str | int  # the most common prediction (a text, stripped; a class index)
    top_count: int
    reference_top_count: int  # how often the most common reference comes: the hits of always answering it


class Summary(TypedDict, total=False):
    """summary.json. Written `running` at start with the first six fields, then completed."""

    status: str  # one of STATUSES
    run_name: str
    config_hash: str
    data_hash: str | None  # the data files' identity: a re-run whose files changed trains again instead of skipping
    started_at: str
    resumed_from: str | None  # "checkpoint-40" when the run resumed
    trackers: dict[str, str]  # {"swanlab": id, "wandb": id}: the tracker records, which a resume continues
    cuda_visible_devices: str | None  # the device a GPU pool gave the run
    auto: dict  # what the `auto` speed knobs became for this cell (ftsweep/auto.py)
    trainable_params: int
    total_params: int
    trainable_share: float
    estimated_memory_bytes: int | None  # mode=plan's estimate for this cell
    config_source: str | None  # where the planner read the model's shape: a local config.json or the arch: facts
    eval_loss: float
    best_eval_loss: float
    best_step: int
    baseline_eval_loss: float | None
    perplexity: float
    train_loss: float
    task_metrics: dict  # name -> value (exact_match, rougeL, bleu; accuracy, precision, recall, f1)
    answer_spread: AnswerSpread | None  # how varied the final held-out predictions (samples.jsonl) were
    # With data.test_path, the final evaluation again on the test file: test_loss, test_perplexity and test_<name>
    # for each task metric (test_rougeL, test_accuracy, ...), flat so that the report and trackers read them as
    # they read eval_loss.
    test_loss: float
    test_perplexity: float
    steps: int
    tokens_seen: int
    tokens_per_second: float | None
    padding_efficiency: float | None
    train_seconds: float
    eval_seconds: float
    peak_memory_bytes: int
    oom_retries: int
    micro_batch_size: int
    grad_accum: int  # each process's, under torchrun
    processes: int  # data-parallel processes that trained the run (torchrun's WORLD_SIZE; 1 otherwise)
    effective_batch: int  # sequences per optimizer step: micro_batch_size x grad_accum x processes
    dropped_examples: int
    held_out_in_train: int  # held-out examples that are training examples too, token for token (duplicate records)
    tested_in_train: int  # the same for data.test_path's examples
    skipped_records: int
    truncated_examples: int
    turns_dropped: int  # whole exchanges dropped (oldest first) to fit data.max_length
    prompts_cut: int  # examples whose question text was cut
    responses_cut: int  # examples whose answer was cut from the right, after its header
    dropped_too_long: int  # examples that could not keep a header and one learned token
    device: str  # "cuda" or "cpu"
    finished_at: str
    wall_seconds: float
    error: ErrorInfo | None


class SweepRef(TypedDict):
    id: str
    dir: str


class GitState(TypedDict):
    commit: str | None
    dirty: bool | None


class DeviceInfo(TypedDict):
    type: str  # "cuda" or "cpu"
    name: str
    count: int
    visible: str | None  # CUDA_VISIBLE_DEVICES


class Manifest(TypedDict):
    """manifest.json, written once the data is ready (ftsweep.manifest.build)."""

    run_name: str
    overrides: list  # as typed
    command: str  # reproduces this run alone
    config: dict  # resolved, secrets removed
    config_hash: str
    seed: int
    sweep: SweepRef | None
    git: GitState
    packages: dict  # distribution name -> version (None when not installed)
    python: str
    platform: str
    device: DeviceInfo
    data_fingerprint: str | None
    test_fingerprint: str | None  # data.test_path's records (None without a test file)
    held_out_fingerprint: str | None  # the held-out examples as scored (token ids, labels): their loss compares across runs
    argv: list
    created_at: str


class TrainLine(TypedDict):
    """A metrics.jsonl line with split "train": one per logging step."""

    split: str
    step: int
    epoch: float
    tokens_seen: int
    loss: float
    learning_rate: float
    grad_norm: float | None
    tokens_per_second: float | None
    padding_efficiency: float | None
    time: float  # seconds since the run started


class EvalLine(TypedDict, total=False):
    """A metrics.jsonl line with split "eval": one per evaluation (step 0: the baseline)."""

    split: str
    step: int
    epoch: float
    tokens_seen: int
    eval_loss: float
    perplexity: float
    # Task metrics, where computed: sft's generation metrics at the final evaluation,
    # classify's at every evaluation.
    exact_match: float
    rougeL: float
    bleu: float
    accuracy: float
    precision: float
    recall: float
    f1: float
    time: float


MetricLine = TrainLine | EvalLine
# The fields every eval line has; the rest of an eval line are task metrics.
EVAL_LINE_FIELDS = ("split", "step", "epoch", "tokens_seen", "eval_loss", "perplexity", "time")
SPLIT_TRAIN, SPLIT_EVAL = "train", "eval"


class FailedRun(TypedDict):
    run: str  # the run directory's name
    reason: str


class SweepRecord(TypedDict):
    """sweep.json, written at the start of a multirun and rewritten at its end."""

    id: str  # <date>_<time>; also the tracker group
    command: str
    overrides: list
    grid: dict  # key -> list of values as typed
    swept: list  # the keys whose values vary: run directories and tracker tags are named by these
    started_at: str
    finished_at: str | None  # null while running
    counts: dict | None  # "total" and one count per status
    failed_runs: list  # FailedRun records
    previous_invocations: list  # command, started_at, finished_at, counts of earlier invocations


class HeldOutLosses(TypedDict):
    """held_out_losses.json: the final evaluation's held-out loss per example, in the held-out set's order. The
    run's eval_loss is sum(loss_sums) / sum(tokens)."""

    step: int
    loss_sums: list  # summed cross-entropy of each example's predicted tokens (nats)
    tokens: list  # predicted tokens of each example (classify: 1 each)


class Sample(TypedDict):
    """A samples.jsonl line (and a generations.jsonl line with a reference). classify: the example's text, its
    class index and the predicted one; exact_match says they are equal."""

    prompt: str
    reference: str | int
    prediction: str | int
    exact_match: bool
    rougeL: float  # sft, where task.metrics has rougeL: this example's score


class PoolLine(TypedDict):
    """A gpu_pool.jsonl line."""

    job: int
    overrides: list
    device: str
    start: float  # Unix time
    end: float
    status: str  # Hydra's JobStatus name, lower case, or POOL_CRASHED


def new_counts() -> dict[str, int]:
    """sweep.json's counts before the first run is counted."""
    return {"total": 0, OK: 0, FAILED: 0, INTERRUPTED: 0, RUNNING: 0, SKIPPED: 0}


# ---- the one atomic write ------------------------------------------------------------------------------


def _publish(tmp: str | Path, path: str | Path) -> None:
    os.replace(tmp, path)  # atomic on one file system: the old file or the new one, never half


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # newline="\n": the same bytes on every platform (a rebuilt report is byte-identical).
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Fill a temp folder beside ``target``; on success rename it to ``target``.

    A killed process never leaves half a folder at ``target``. When ``target``
    appeared meanwhile (another process built the same thing, e.g. a cache entry
    or the tiny model), its copy is kept and this one dropped: either is fine.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        try:
            _publish(tmp, target)
        except OSError:
            if not target.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def json_text(obj: Any) -> str:
    """A JSON file's text: indented, key order kept, UTF-8 as is."""
    return json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n"


def json_line(record: dict) -> str:
    """A JSONL line. default=float turns numpy and torch scalars into numbers."""
    return json.dumps(record, ensure_ascii=False, default=float) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    atomic_write_text(path, "".join(json_line(r) for r in rows))


def append_jsonl(path: str | Path, record: dict) -> None:
    """One line at the end of a log that several writers append to (gpu_pool.jsonl)."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json_line(record))


# ---- readers -------------------------------------------------------------------------------------------


def read_json(path: str | Path, problems: list[str] | None = None) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (said in ``problems`` if given)."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        if problems is not None:
            problems.append(f"{path.name} unreadable ({type(exc).__name__}: {exc})")
        return None


def read_json_object(path: str | Path, problems: list[str] | None = None) -> dict:
    """Like read_json, but {} unless the file holds a JSON object."""
    loaded = read_json(path, problems)
    if loaded is not None and not isinstance(loaded, dict):
        if problems is not None:
            problems.append(f"{Path(path).name} does not hold a JSON object")
        return {}
    return loaded if isinstance(loaded, dict) else {}


def read_metrics(path: str | Path, problems: list[str] | None = None) -> list[dict]:
    """The readable lines of metrics.jsonl (or any JSONL file), in file order.

    A killed run can leave a half-written last line; that and any other line
    that is not a JSON object is skipped (and counted in ``problems``), never fatal.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    except OSError as exc:
        if problems is not None:
            problems.append(f"{path.name} unreadable ({type(exc).__name__}: {exc})")
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
    if bad and problems is not None:
        shown = ", ".join(str(n) for n in bad[:5]) + (", ..." if len(bad) > 5 else "")
        problems.append(f"{path.name}: skipped {len(bad)} unreadable line(s) (line {shown})")
    return records


def read_summary(run_dir: str | Path, problems: list[str] | None = None) -> Summary | None:
    """summary.json, or None when it is missing or holds no JSON object."""
    return read_json_object(Path(run_dir) / SUMMARY, problems) or None  # type: ignore[return-value]


def write_summary(run_dir: str | Path, summary: Summary | dict) -> None:
    atomic_write_json(Path(run_dir) / SUMMARY, summary)


def read_manifest(run_dir: str | Path, problems: list[str] | None = None) -> Manifest | None:
    return read_json_object(Path(run_dir) / MANIFEST, problems) or None  # type: ignore[return-value]


def write_manifest(run_dir: str | Path, manifest: Manifest | dict) -> None:
    atomic_write_json(Path(run_dir) / MANIFEST, manifest)


def read_sweep(sweep_dir: str | Path, problems: list[str] | None = None) -> SweepRecord | None:
    return read_json_object(Path(sweep_dir) / SWEEP, problems) or None  # type: ignore[return-value]


def write_sweep(sweep_dir: str | Path, record: SweepRecord | dict) -> None:
    atomic_write_json(Path(sweep_dir) / SWEEP, record)


def write_samples(path: str | Path, rows: Iterable[Sample | dict]) -> None:
    atomic_write_jsonl(path, rows)


def is_run_dir(path: str | Path) -> bool:
    return any((Path(path) / marker).is_file() for marker in RUN_MARKERS)


def has_adapter(run_dir: str | Path) -> bool:
    return (Path(run_dir) / ADAPTER / ADAPTER_CONFIG).exists()


def checkpoint_step(checkpoint: Path | None) -> int | None:
    """checkpoints/checkpoint-40 -> 40."""
    return int(checkpoint.name.split("-")[-1]) if checkpoint else None


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    ckpts = [p for p in (Path(run_dir) / CHECKPOINTS).glob(CHECKPOINT_PREFIX + "*") if (p / TRAINER_STATE).exists()]
    return max(ckpts, key=checkpoint_step, default=None)


# ---- time ----------------------------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def add(self, seconds: float) -> None:
        """Count seconds spent before this process started timing (a resumed run's earlier sessions)."""
        self.start -= seconds


# ---- one process per run directory ---------------------------------------------------------------------


def lock_run(run_dir: str | Path):
    """Claims a run directory for this process: the open lock file (closing it, or the process ending in any way,
    releases the claim), or None while another process holds it. The same command started twice (two terminals,
    a sweep re-run while the first still trains) wrote one directory from two processes: interleaved metrics,
    checkpoints and summaries that nothing could tell apart."""
    import fcntl

    Path(run_dir).mkdir(parents=True, exist_ok=True)
    fh = open(Path(run_dir) / LOCK, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        return None
    except OSError:  # a file system without locks (some network mounts): the run goes on unclaimed, as it always did
        return fh
    fh.seek(0)
    fh.truncate()
    fh.write(f"{os.getpid()}\n")
    fh.flush()
    return fh


def lock_holder(run_dir: str | Path) -> str | None:
    """The pid of the process that holds the run directory's lock, or None when no process does."""
    import fcntl

    path = Path(run_dir) / LOCK
    if not path.exists():
        return None
    with open(path, encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return fh.read().strip() or "?"
        except OSError:
            return None
    return None


# ---- run names -----------------------------------------------------------------------------------------

# Letters and digits of any script stay (data.path="古诗.json" names a directory 古诗.json, not ___.json).
_UNSAFE = re.compile(r"[^\w.=,+\-@]")


def run_name(overrides: list[str], swept: list[str] | None = None) -> str:
    """A readable, filesystem-safe, stable directory name for a sweep cell.

    Built from the cell's overrides ("lora.r=8,optim.lr=0.0001", sorted as Hydra's
    override_dirname sorts them). In a sweep only the swept keys count (fixed
    overrides like optim.max_steps=50 are the same in every cell and say nothing);
    elsewhere every override except the result-neutral ones. Values are shown as
    ftsweep.naming shows them (a range() cell's 0.00030000000000000003 as 0.0003, a
    list as q+v_proj, a quoted string without its quotes). Path separators, spaces and
    shell-special characters become "_"; a name that lost characters so, or is very
    long, ends in a hash of the overrides as typed, so two cells never share a
    directory (data.path=a/b.json and data.path=a_b.json both read data.path=a_b.json).
    """
    from ftsweep import naming
    from ftsweep import overrides as ovr
    from ftsweep.config import RESULT_NEUTRAL_KEYS

    lines = [o for o in overrides if not ovr.is_under(ovr.key(o), ("hydra",))]
    if swept:
        lines = [o for o in lines if ovr.key(o) in swept]
    else:
        lines = [o for o in lines if not ovr.is_under(ovr.key(o), RESULT_NEUTRAL_KEYS)]
    # The key part as typed (`+x`, `lora`), the value part shortened; keys hold no "=".
    shown = [o.partition("=")[0] + "=" + naming.value_text(ovr.value(o)) if "=" in o else o for o in sorted(lines)]
    text = ",".join(shown)
    if not text:
        return "default"
    name = _UNSAFE.sub("_", text)
    if name != text or len(name) > 120:
        import hashlib

        # Hashed as typed: cells whose shortened values coincide still get their own directory.
        name = name[:100] + "-" + hashlib.sha1(",".join(sorted(lines)).encode()).hexdigest()[:10]
    return name


def swept_keys(sweep_dir: str | Path | None) -> list[str] | None:
    """The keys a sweep varies, as its sweep.json records them (None outside a sweep or before it is written)."""
    record = read_sweep(sweep_dir) if sweep_dir else None
    return list(record["swept"]) if record and record.get("swept") is not None else None


# ---- the metrics log -----------------------------------------------------------------------------------


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed per line.

    On resume, lines after the resumed step are dropped first so that no
    step appears twice.
    """

    def __init__(self, path: Path, resume_step: int | None = None):
        self.path = Path(path)
        if resume_step is not None and self.path.exists():
            keep = [line for line in self._lines() if json.loads(line).get("step", 0) <= resume_step]
            atomic_write_text(self.path, "".join(keep))
        elif self.path.exists() and resume_step is None:
            self.path.unlink()
        self._fh = open(self.path, "a", encoding="utf-8")

    def _lines(self) -> list[str]:
        out = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True):
            try:
                if isinstance(json.loads(line), dict):
                    out.append(line if line.endswith("\n") else line + "\n")
            except ValueError:
                pass  # a line cut by a kill
        return out

    def write(self, record: dict) -> None:
        self._fh.write(json_line(record))
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()
