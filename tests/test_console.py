"""The console of a real run: periodic step lines in a log file, the bar alone on a terminal."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios

import pytest
from conftest import FAST

ARGS = [*[a for a in FAST if not a.startswith("train.progress")], "train.progress=true", "optim.max_steps=6",
        "train.logging_steps=2", "eval.every_n_steps=3"]
STEP_LINE = re.compile(r"^(?P<label>\S+) \| step (?P<step>\d+)/6 \| loss (?P<loss>[\d.]+) \| lr (?P<lr>\d\.\de-\d\d) \| "
                       r"(?P<tps>\d+) tok/s(?: \| ETA (?P<eta>\d+:\d\d))?$")
EVAL_LINE = re.compile(r"^\S+ \| step (?P<step>\d+)(?:/6)? \| eval loss [\d.]+$")


@pytest.mark.slow
def test_without_a_terminal_each_logging_step_prints_one_line(cli, tmp_path):
    # stdout and stderr to files, as nohup or SLURM would
    proc = cli([*ARGS, f"hydra.run.dir={tmp_path / 'run'}"])
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-3000:]
    steps = [m for m in map(STEP_LINE.match, text.splitlines()) if m]
    # Every train line: each logging step (2) and the checkpoint's step (train.save_steps=3).
    assert [int(m["step"]) for m in steps] == [2, 3, 4, 6], text
    assert all(float(m["loss"]) > 0 and int(m["tps"]) > 0 for m in steps)
    assert [m["eta"] is not None for m in steps] == [True, True, True, False]  # no ETA once the last step is done
    evals = [int(m["step"]) for m in map(EVAL_LINE.match, text.splitlines()) if m]
    assert evals == [0, 3, 6]  # baseline, every 3 steps, final
    assert "\r" not in text  # no bar redraws in a file


@pytest.mark.slow
def test_on_a_terminal_the_bar_replaces_the_lines(cli, tmp_path):
    parent, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a terminal 160 columns wide: tqdm draws to fit
    proc = subprocess.Popen([sys.executable, "-m", "ftsweep", *ARGS, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path,
                            stdin=child, stdout=child, stderr=child, env=dict(os.environ), close_fds=True)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(parent, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=600)
    os.close(parent)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert not [line for line in text.splitlines() if STEP_LINE.match(line.strip())]
    assert re.search(r"\d+/6 \[", text), text[-2000:]  # tqdm's bar: "4/6 [00:01<00:00, ...]"
