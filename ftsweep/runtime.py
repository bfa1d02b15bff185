"""What a process needs around a run: quiet libraries, seeded state, signals, memory readings.

The basic launcher runs every job of a sweep in one process, so anything
global (random state, CUDA memory statistics, signal handlers) is set per run
here and nowhere else.
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import resource
import signal
import sys
import warnings
from contextlib import contextmanager


# Log lines a user cannot act on: bitsandbytes on a CPU with AVX512-BF16 says at import that an optional
# `kernels` package is missing (its fallback kernel computes the same result), and where that package is
# installed but the hub is offline, the package says it skips the kernel's publisher check; matplotlib's first
# report on a machine says "generated new fontManager" (its font cache), through Hydra's log format.
NOISY_LOGGERS = ("bitsandbytes.backends.cpu.ops", "kernels", "matplotlib.font_manager")


def quiet_imports() -> None:
    """Before anything imports the libraries: their import-time chatter stays off the console."""
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_libraries() -> None:
    """Our own progress bar and log lines are the console; library chatter goes."""
    import datasets
    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames (gradient_checkpointing_*)
    # PEFT asks the hub, at every adapter save, whether the base's vocabulary was resized; offline it cannot, warns,
    # and assumes not, which is right: ftsweep never resizes the embeddings.
    warnings.filterwarnings("ignore", message="Could not find a config file in .* vocabulary was not modified")
    hf_logging.disable_progress_bar()  # "Loading weights" bars
    hf_logging.set_verbosity_error()
    datasets.disable_progress_bars()  # "Saving the dataset" bars of the tokenized-data cache


def skip_exit_collection() -> None:
    """At exit Python's last garbage collection walks every object the libraries made at import (about
    700,000 with torch, transformers, PEFT and bitsandbytes): 1.5 s on 2 CPU cores after every command.
    Freezing them first skips the walk. Registered before any tracker is imported, it runs after the
    trackers' exit hooks; hooks that run after it (logging's flush) still run. ftsweep closes its own files
    itself, so nothing it writes waits on that collection."""
    atexit.register(gc.freeze)


def settle_heap() -> None:
    """Before a run builds its model: the cycle collector stops re-walking what lives for the whole process.

    Each full collection walks every tracked object, and torch, transformers, PEFT and bitsandbytes leave
    about 700,000 at import: 13 full collections, 2.3 s, in the default 4-run sweep. Here the heavy modules are
    imported, everything frozen by the previous run is thawed and the previous run's garbage collected (one
    full walk), then everything alive is frozen until the next run. That collection is also what frees the
    previous cell's model before this one loads (and before `reset_globals` empties the CUDA cache): a finished
    run sits in reference cycles (its trainer's callbacks hold the run), which reference counting never frees.
    The run object itself is alive and frozen with the rest; the next call thaws it, so that once finished it is
    collected like any other garbage."""
    import peft  # noqa: F401 - imported now, so that their objects are frozen too
    import transformers.trainer  # noqa: F401

    gc.unfreeze()
    gc.collect()
    gc.freeze()


def reset_globals(seed: int) -> None:
    """Seed every generator and start the memory peak afresh for this run (GPU memory, or this process's resident
    set on a CPU)."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        reset_peak_resident_set()


def random_state() -> dict:
    """Every generator a run draws from (Python, NumPy, torch on the CPU and on each GPU), to go back to."""
    import random

    import numpy as np
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def set_random_state(state: dict) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None:
        torch.cuda.set_rng_state_all(state["cuda"])


def reset_peak_resident_set() -> None:
    """The basic launcher runs a sweep's cells in one process, whose peak resident set (ru_maxrss) only grows: each
    cell after the largest one reported that one's peak as its own. Linux starts it again from the current resident
    set on writing 5 to /proc/self/clear_refs (proc(5)); elsewhere the peak stays the process's."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass


def _signal_reason(signum: int) -> str:
    return f"signal {int(signum)}"


def _signal_of(reason: str) -> int | None:
    """The signal number in an interrupt's reason ("signal 15"), None for Ctrl-C's (no reason)."""
    head, _, number = reason.partition(" ")
    return int(number) if head == "signal" and number.isdigit() else None


# A job scheduler's advance notice: submitit (hydra/launcher=slurm) sends SIGUSR2 before a SLURM time limit or on
# preemption, and its handler then requeues the job. While such a handler waits for one, a run takes the notice as
# a stop (at a step's end, with a checkpoint) and then passes it on, so the requeued job resumes where this one
# stopped instead of at its last periodic checkpoint.
NOTICE_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)


def stop_signal_set() -> tuple[int, ...]:
    """Ctrl-C, SIGTERM, and the scheduler notices that a Python handler is waiting for."""
    return (signal.SIGINT, signal.SIGTERM, *(s for s in NOTICE_SIGNALS if callable(signal.getsignal(s))))


def signal_name(signum: int) -> str:
    """How the console names a stop signal: Ctrl-C for SIGINT, else its name (SIGTERM, SIGUSR2)."""
    return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def interrupt(signum: int) -> KeyboardInterrupt:
    """The interrupt a stop signal raises: Ctrl-C's is Python's own (no message); any other names its signal, so
    ``exit_code`` and ``pass_on`` can tell them apart."""
    return KeyboardInterrupt() if signum == signal.SIGINT else KeyboardInterrupt(_signal_reason(signum))


def exit_code(reason: str) -> int:
    """128 + the number of the signal that stopped a run: 130 for Ctrl-C (SIGINT), 143 for SIGTERM."""
    return 128 + (_signal_of(reason) or int(signal.SIGINT))


def pass_on(stop: BaseException) -> None:
    """After a run stopped for a scheduler's notice and saved its checkpoint: the notice goes on to the scheduler's
    handler, which requeues the job (and exits)."""
    signum = _signal_of(str(stop))
    if signum in NOTICE_SIGNALS and callable(signal.getsignal(signum)):
        signal.raise_signal(signum)


@contextmanager
def stop_signals(handler, signals=None):
    """Inside the block ``handler(signum, frame)`` receives these signals (default: ``stop_signal_set()``); the
    previous handlers come back after.

    A signal that is ignored (SIGINT in a background job) stays ignored, and outside the main thread, where
    Python cannot set handlers, the block runs with the signals left to whoever owns them."""
    previous = _install(handler, stop_signal_set() if signals is None else signals)
    try:
        yield
    finally:
        for sig, before in previous.items():
            signal.signal(sig, before)


def _install(handler, signals) -> dict:
    """``handler`` for each of ``signals`` not ignored (a background job's SIGINT stays ignored); {signal: the handler
    it replaced}. Outside the main thread, where Python cannot set handlers, nothing changes."""
    previous = {}
    try:
        for sig in signals:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread
        pass
    return previous


@contextmanager
def stops_as_interrupt():
    """SIGTERM (scancel, kill, a pool shutting down) and a scheduler's notice behave like Ctrl-C inside the block."""

    def handler(signum, frame):
        raise interrupt(signum)

    with stop_signals(handler, [s for s in stop_signal_set() if s != signal.SIGINT]):
        yield


def exit_at_next_signal(code: int) -> None:
    """Once a stop is recorded and only the exit is left: another Ctrl-C or SIGTERM ends the process at once with
    ``code``, instead of a traceback from whichever exit hook it lands in."""

    def handler(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        os._exit(code)

    _install(handler, (signal.SIGINT, signal.SIGTERM))


def peak_memory_bytes() -> int:
    """Peak GPU memory allocated since this run began, or on CPU the process's peak resident set since then."""
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def device_name() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
