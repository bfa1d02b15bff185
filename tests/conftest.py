"""Shared test setup: offline, a per-session FTSWEEP_HOME with the tiny model, CLI helpers."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

# No per-example deadline: the first example pays for imports, and CI machines are shared.
settings.register_profile("ftsweep", deadline=None)
settings.load_profile("ftsweep")

# Offline everywhere, before anything imports transformers or a tracker.
_HOME = Path(os.environ.get("FTSWEEP_TEST_HOME") or tempfile.mkdtemp(prefix="ftsweep-test-home-"))
if not os.environ.get("FTSWEEP_TEST_HOME"):
    atexit.register(shutil.rmtree, _HOME, ignore_errors=True)  # one per test process, gone with it
os.environ["FTSWEEP_HOME"] = str(_HOME)
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Under pytest-xdist (-n 2, the default addopts) two workers share the 2 cores: one thread each, or the
# OpenMP threads of two torch processes spin against each other and every run gets many times slower.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from the demo test

REPO = Path(__file__).resolve().parent.parent

# Overrides that make a real run take seconds: few steps, small data, few samples.
FAST = [
    "logger=none",
    "optim.max_steps=6",
    "optim.micro_batch_size=4",
    "eval.every_n_steps=3",
    "eval.num_samples=4",
    "eval.generation.max_new_tokens=8",
    "data.num_records=80",
    "data.val_size=8",
    "train.logging_steps=2",
    "train.save_steps=3",
    "train.progress=false",
]


# The data settings the in-process data tests start from: every key the data pipeline reads, one held-out
# record, nothing dropped silently. Each test names only what it changes.
DATA_SETTINGS = dict(name="t", source="auto", path=None, format="alpaca", columns={}, roles={}, template=None, system=None,
                     custom_template={}, n=None, val_size=1, val_path=None, test_path=None, max_length=512, train_on_prompt=False,
                     shuffle_seed=0, shuffle=True, instruction_as_system=False, on_bad_record="error",
                     pad_to_multiple_of=None, hub_config=None, split="train")


def data_cfg(path=None, **changes):
    """A data config: DATA_SETTINGS with the file at ``path`` and these changes."""
    from omegaconf import OmegaConf

    return OmegaConf.create({**DATA_SETTINGS, "path": None if path is None else str(path), **changes})


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from ftsweep.models import ensure_tiny_model

    return ensure_tiny_model()


def train_steps(metrics: Path) -> list[int]:
    """The steps of a metrics.jsonl's train lines, in file order ([] before the file exists)."""
    from ftsweep import artifacts

    return [r["step"] for r in artifacts.read_metrics(metrics) if r.get("split") == "train"]


def train_lines(run_dir: Path) -> dict[int, dict]:
    """A run directory's train lines of metrics.jsonl, by step."""
    from ftsweep import artifacts

    return {r["step"]: r for r in artifacts.read_metrics(run_dir / artifacts.METRICS) if r.get("split") == "train"}


def classify_data(tmp_path: Path) -> str:
    """48 multiple-choice records with 4 answers (labels 0 to 3, 0 the most common) for task=classify."""
    path = tmp_path / "mc.jsonl"
    rows = [{"context": f"c{i}", "question": f"q{i % 5}", "answers": ["a", "b", "c", "d"], "label": [0, 0, 0, 1, 2, 3][i % 6],
             "id_string": str(i)} for i in range(48)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (its children, theirs, ...), from the kernel's per-thread children lists."""
    found, todo = [], [pid]
    while todo:
        for task in Path(f"/proc/{todo.pop()}/task").glob("*"):
            children = [int(c) for c in (task / "children").read_text().split()]
            found += children
            todo += children
    return found


def start_as_from_a_terminal(cmd: list[str], **kwargs) -> subprocess.Popen:
    """Popen with Ctrl-C reaching the child, as for a command typed in a terminal. A command started in the background
    of a script (`pytest ... &`) inherits SIGINT ignored, and Python then never raises KeyboardInterrupt; a handled
    signal is reset to the default at exec, so the child starts with Python's own Ctrl-C handling."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(cmd, **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)


def run_cli(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 600, input: str | None = None,
            fresh: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m ftsweep ARGS` in a process of its own, as a user would: forked from a server that has
    imported the heavy libraries (warm_cli.py says what that leaves out), or ``fresh`` from nothing."""
    import warm_cli

    full_env = _cli_env(env)
    server = _free_warm_server(full_env, fresh)
    if server:
        return server.run(args, cwd, full_env, timeout, input, warm_cli.sigint_as_inherited())
    return subprocess.run([sys.executable, "-m", "ftsweep", *args], cwd=cwd, env=full_env, capture_output=True,
                          text=True, timeout=timeout, input=input)


def regenerate_samples(run_dir: Path, out: Path) -> tuple[subprocess.CompletedProcess, list[str], list[str]]:
    """`python -m ftsweep.generate` on a run's own held-out prompts (samples.jsonl, rendered as trained), in a fresh
    process: (the process, its predictions, the run's own predictions), both in samples.jsonl's order."""
    from ftsweep import artifacts

    samples = run_dir / artifacts.SAMPLES
    proc = subprocess.run([sys.executable, "-m", "ftsweep.generate", str(run_dir), "--file", str(samples), "--raw",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    again = [json.loads(x)["prediction"] for x in out.read_text().splitlines()] if proc.returncode == 0 else []
    return proc, again, [json.loads(x)["prediction"] for x in samples.read_text().splitlines()]


def start_cli(args: list[str], cwd: Path, env: dict | None = None, terminal: bool = False):
    """Start `python -m ftsweep ARGS` and leave it running, for a test to signal: a subprocess.Popen (pid, poll,
    wait, send_signal, communicate; text stdout and stderr), forked warm where run_cli would be. ``terminal``:
    Ctrl-C reaches it as for a command typed in a terminal (start_as_from_a_terminal)."""
    import warm_cli

    full_env = _cli_env(env)
    server = _free_warm_server(full_env, fresh=False)
    if server:
        sigint = "default" if terminal else warm_cli.sigint_as_inherited()
        return server.start(args, cwd, full_env, None, sigint)
    cmd = [sys.executable, "-m", "ftsweep", *args]
    kwargs = dict(cwd=cwd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return start_as_from_a_terminal(cmd, **kwargs) if terminal else subprocess.Popen(cmd, **kwargs)


def _cli_env(env: dict | None) -> dict:
    """This process's environment as a user's shell would have it (HYDRA_FULL_ERROR only where a test sets it)."""
    return {**{k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}, **(env or {})}


def _free_warm_server(env: dict, fresh: bool):
    """This test process's warm server, locked for one command, where it can run one with ``env``; else None."""
    import warm_cli

    if fresh or os.environ.get("FTSWEEP_TEST_FRESH") == "1":
        return None
    server = warm_cli.server()
    if server.serves(env) and server.lock.acquire(blocking=False):  # busy (a test's own threads): fresh
        return server
    return None


@pytest.fixture(autouse=True)
def _no_warm_command_outlives_its_test():
    yield
    import warm_cli

    if warm_cli.running is not None:
        warm_cli.running.end()
        warm_cli.running = None


def run_printed(command: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command ftsweep printed ("resume with: python -m ftsweep ..."), as a user would paste it."""
    import shlex

    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "ftsweep"], command
    return run_cli(words[3:], cwd=cwd, timeout=timeout)


@pytest.fixture
def cli(tmp_path, tiny_model_dir):
    """cli(args) runs the real CLI with tmp_path as the working directory."""

    def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
        return run_cli(args, cwd=kw.pop("cwd", tmp_path), **kw)

    return _run


def compose(overrides=(), config_name: str = "config"):
    """The config a run with these overrides gets, composed in-process by Hydra's compose API
    (schema checked, as the CLI composes it) without a subprocess or a run directory."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from ftsweep.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides))


@pytest.fixture
def composed():
    """composed(overrides) -> the composed DictConfig (a fresh copy per call: tests may change it)."""
    return compose


@pytest.fixture(scope="session")
def default_cfg():
    """The default config, composed once; read-only (use `composed` for one to change)."""
    from omegaconf import OmegaConf

    cfg = compose()
    OmegaConf.set_readonly(cfg, True)
    return cfg


# The fast unit lane (pytest -m unit, what `mutmut run` runs): in-process tests of pure code, no
# subprocess, no training. Everything under tests/unit/ is in it, and so are these in-process files,
# except tests that take the real-CLI fixture or a trained run.
UNIT_FILES = {"test_properties.py", "test_data_truncation.py", "test_data_formats.py", "test_data_tools.py",
              "test_data_sources.py", "test_report_units.py", "test_artifacts.py"}
NOT_UNIT_FIXTURES = {"cli", "qlora_run"}
# The longest files start first: under `-n 2` a minute-long test that starts last keeps one worker busy
# while the other idles (measured: 100 s of a 10-minute run).
LONGEST_FIRST = ("test_ray.py", "test_distributed.py", "test_documented_commands.py", "test_promises.py", "test_sweep.py")


def pytest_collection_modifyitems(config, items):
    unit_dir = Path(__file__).parent / "unit"
    for item in items:
        path = Path(str(item.fspath))
        in_lane = unit_dir in path.parents or path.name in UNIT_FILES
        if in_lane and not NOT_UNIT_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.unit)
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))  # stable: the rest keep their order
