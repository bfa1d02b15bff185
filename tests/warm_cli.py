"""`python -m ftsweep ARGS` in a process forked from one that has already imported the heavy libraries.

A fresh `python -m ftsweep` spends about 10 s of a 2-core machine importing torch, transformers, PEFT,
bitsandbytes and datasets before it reads its first override, and a 6-step test run trains for about 1 s of
its 17. Most CLI tests only need what the command does and writes, so `run_cli` asks a server that imported
those libraries once (one per test process) to fork a child per command. The child is the same interpreter
a fresh process would be after those imports: it changes to the command's directory, takes its environment
and its stdin, stdout and stderr, and runs `python -m ftsweep` as runpy runs it. ftsweep's own modules are
imported by the child, so each command starts with ftsweep unimported, its import-time setup included.

What a forked child cannot show, and what therefore runs in a fresh process (`run_cli(..., fresh=True)`, or
any test that starts its own subprocess): what the libraries print while importing, settings that they read
from the environment at import (a command whose environment differs from the server's in anything but
ftsweep's and the trackers' variables gets a fresh process), and signals and terminals.
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
from pathlib import Path

# Variables read when a command runs, not when a library is imported: a command may set these and still fork.
RUN_TIME_VARIABLES = ("FTSWEEP_", "WANDB_", "SWANLAB_", "MPLCONFIGDIR", "HYDRA_FULL_ERROR", "PYTEST_CURRENT_TEST")

SERVER = r"""
import json, os, sys
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
        ready = self._reply(timeout=300)
        if not ready or not ready.get("ready"):
            raise RuntimeError("the warm CLI server did not start")

    def serves(self, env: dict) -> bool:
        """Whether a command with this environment behaves in a child of the server as in a fresh process."""
        keys = set(env) | set(self.env)
        return all(env.get(k) == self.env.get(k) for k in keys if not k.startswith(RUN_TIME_VARIABLES))

    def _reply(self, timeout: float) -> dict | None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        return json.loads(line) if line else None

    def run(self, args: list[str], cwd: Path, env: dict, timeout: float, input: str | None):
        with tempfile.TemporaryDirectory(prefix="ftsweep-warm-") as tmp:
            files = {name: str(Path(tmp) / name) for name in ("stdin", "stdout", "stderr")}
            for name, text in (("stdin", input or ""), ("stdout", ""), ("stderr", "")):
                Path(files[name]).write_text(text)
            request = {"args": list(args), "cwd": str(cwd), "env": env, **files}
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            pid = self._reply(timeout=60)["pid"]
            done = self._reply(timeout=timeout)
            if done is None:
                os.kill(pid, signal.SIGKILL)
                self._reply(timeout=60)
                raise subprocess.TimeoutExpired([sys.executable, "-m", "ftsweep", *args], timeout,
                                                Path(files["stdout"]).read_text(), Path(files["stderr"]).read_text())
            out, err = (Path(files[name]).read_text(errors="replace") for name in ("stdout", "stderr"))
            return subprocess.CompletedProcess([sys.executable, "-m", "ftsweep", *args], done["rc"], out, err)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


_server: WarmServer | None = None


def server() -> WarmServer:
    global _server
    if _server is None:
        _server = WarmServer()
        atexit.register(_server.close)
    return _server
