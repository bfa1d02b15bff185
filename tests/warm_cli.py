"""`python -m ftsweep ARGS` in a process forked from one that has already imported the heavy libraries.

A fresh `python -m ftsweep` spends about 10 s of a 2-core machine importing torch, transformers, PEFT,
bitsandbytes and datasets before it reads its first override, and a 6-step test run trains for about 1 s of
its 17. Most CLI tests only need what the command does and writes, so `run_cli` asks a server that imported
those libraries once (one per test process) to fork a child per command. The child is the same interpreter
a fresh process would be after those imports: it changes to the command's directory, takes its environment
and its stdin, stdout and stderr, and runs `python -m ftsweep` as runpy runs it. ftsweep's own modules are
imported by the child, so each command starts with ftsweep unimported, its import-time setup included.

A command can also be started and left running (`start`, conftest's `start_cli`) for a test to signal it: the
child is a real process with its own PID, started with Ctrl-C handled as a fresh one would start (Python's
own handler, or ignored where the test process ignores it: a suite started in the background), and every
other signal as the imports left it, which is how a fresh process meets its first override too.

What a forked child cannot show, and what therefore runs in a fresh process (`run_cli(..., fresh=True)`, or
any test that starts its own subprocess): what the libraries print while importing, settings that they read
from the environment at import (a command whose environment differs from the server's in anything but
ftsweep's and the trackers' variables gets a fresh process), terminals, and processes that other programs
start (torchrun's ranks, Ray's and submitit's workers).
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# Variables read when a command runs, not when a library is imported: a command may set these and still fork.
RUN_TIME_VARIABLES = ("FTSWEEP_", "WANDB_", "SWANLAB_", "MPLCONFIGDIR", "HYDRA_FULL_ERROR", "PYTEST_CURRENT_TEST")

SERVER = r"""
import json, os, signal, sys
requests = os.fdopen(os.dup(0), "r")
replies = os.fdopen(os.dup(1), "w", buffering=1)
null = os.open(os.devnull, os.O_RDWR)
os.dup2(null, 0); os.dup2(null, 1)  # the pipes are for requests and replies only

import torch, transformers, transformers.trainer, peft, bitsandbytes, datasets, hydra, omegaconf, sacrebleu
import sklearn.metrics
from rouge_score import rouge_scorer
replies.write(json.dumps({"ready": True}) + "\n")

for line in requests:
    request = json.loads(line)
    sys.stdout.flush(); sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        requests.close(); replies.close()
        signal.signal(signal.SIGINT, signal.SIG_IGN if request["sigint"] == "ignore" else signal.default_int_handler)
        os.chdir(request["cwd"])
        os.environ.clear(); os.environ.update(request["env"])
        for fd, name, flags in ((0, "stdin", os.O_RDONLY), (1, "stdout", os.O_WRONLY), (2, "stderr", os.O_WRONLY)):
            os.dup2(os.open(request[name], flags), fd)
        sys.path[0] = os.getcwd()  # as `python -m` puts the working directory first
        sys.argv = ["-m", *request["args"]]
        import runpy
        runpy.run_module("ftsweep", run_name="__main__", alter_sys=True)
        raise SystemExit(0)  # the interpreter then exits as a fresh process would: atexit hooks, flushes
    replies.write(json.dumps({"pid": pid}) + "\n")
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
"""


class WarmServer:
    """One server per test process, started at its first command; one command at a time."""

    def __init__(self):
        self.env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=self.env, text=True, bufsize=1)
        self.lock = threading.Lock()
        self.pending = b""  # replies read from the pipe and not yet taken (the PID and the exit code can come at once)
        ready = self._reply(timeout=300)
        if not ready or not ready.get("ready"):
            raise RuntimeError("the warm CLI server did not start")

    def serves(self, env: dict) -> bool:
        """Whether a command with this environment behaves in a child of the server as in a fresh process."""
        keys = set(env) | set(self.env)
        return all(env.get(k) == self.env.get(k) for k in keys if not k.startswith(RUN_TIME_VARIABLES))

    def _reply(self, timeout: float | None) -> dict | None:
        """The server's next reply line, or None if none comes within ``timeout`` seconds (None: wait for it).
        Read from the descriptor, not through a buffered reader, whose buffer select() cannot see."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.proc.stdout], [], [], left)[0]:
                return None
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise RuntimeError("the warm CLI server ended")
            self.pending += chunk
        line, self.pending = self.pending.split(b"\n", 1)
        return json.loads(line)

    def start(self, args: list[str], cwd: Path, env: dict, input: str | None, sigint: str) -> WarmProcess:
        """Fork a child for the command; the caller holds ``lock`` until the WarmProcess has ended."""
        tmp = tempfile.TemporaryDirectory(prefix="ftsweep-warm-")
        files = {name: str(Path(tmp.name) / name) for name in ("stdin", "stdout", "stderr")}
        for name, text in (("stdin", input or ""), ("stdout", ""), ("stderr", "")):
            Path(files[name]).write_text(text)
        request = {"args": list(args), "cwd": str(cwd), "env": env, "sigint": sigint, **files}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            pid = self._reply(timeout=60)["pid"]
        except Exception:
            self.lock.release()
            raise
        global running
        running = WarmProcess(self, [sys.executable, "-m", "ftsweep", *args], pid, tmp, files)
        return running

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float, input: str | None, sigint: str):
        proc = self.start(args, cwd, env, input, sigint)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait(timeout=60)
            exc.output, exc.stderr = proc.communicate()
            raise
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class WarmProcess:
    """A running child of the server, used as a subprocess.Popen: pid, poll, wait, send_signal, kill,
    communicate, returncode; stdout and stderr are read from the files the child writes."""

    def __init__(self, server: WarmServer, args: list[str], pid: int, tmp: tempfile.TemporaryDirectory, files: dict):
        self.server, self.args, self.pid, self.tmp, self.files = server, args, pid, tmp, files
        self.returncode: int | None = None
        self.stdout, self.stderr = (open(files[name], errors="replace") for name in ("stdout", "stderr"))  # noqa: SIM115 - closed by communicate

    def poll(self) -> int | None:
        return self.wait(timeout=0) if self.returncode is None else self.returncode

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the child has ended; with a timeout, None (poll) or TimeoutExpired (wait) before."""
        if self.returncode is None:
            done = self.server._reply(timeout=timeout)
            if done is None:
                if timeout == 0:
                    return None
                raise subprocess.TimeoutExpired(self.args, timeout)
            self.returncode = done["rc"]
            self.server.lock.release()
        return self.returncode

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        self.wait(timeout)
        out, err = self.stdout.read(), self.stderr.read()
        for stream in (self.stdout, self.stderr):
            stream.close()
        self.tmp.cleanup()
        return out, err

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # not a PID the system may have given to another process since
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def end(self) -> None:
        """Kill the child if it still runs and collect it: the server is free for the next command."""
        if self.returncode is None:
            self.kill()
            self.wait(timeout=60)
        if not self.stdout.closed:
            self.communicate()


_server: WarmServer | None = None
running: WarmProcess | None = None  # the last command started: a test that failed may have left it running


def sigint_as_inherited() -> str:
    """How a fresh child of this process would start with Ctrl-C: ignored where this process ignores it."""
    return "ignore" if signal.getsignal(signal.SIGINT) is signal.SIG_IGN else "default"


def server() -> WarmServer:
    global _server
    if _server is None:
        _server = WarmServer()
        atexit.register(_server.close)
    return _server
