"""The run directory: file names, atomic writes, manifest, metrics log, summary.

Formats are described in docs/run-directory.md; the report reads only these files.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
SAMPLES = "samples.jsonl"
ADAPTER = "adapter"
CHECKPOINTS = "checkpoints"

STATUSES = ("running", "ok", "failed", "interrupted", "skipped")


def now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temp file in the same directory, fsync, rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+\-@]")


SWEPT_KEYS_ENV = "FTSWEEP_SWEPT_KEYS"  # set by the sweep callback: the keys whose values vary in this sweep


def split_overrides(override_dirname: str) -> list[str]:
    """'a=1,b=[x,y],c=2' -> ['a=1', 'b=[x,y]', 'c=2']: commas inside brackets or quotes stay."""
    items, depth, quote, cur = [], 0, None, ""
    for ch in override_dirname:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        cur += ch
    return [x for x in items + [cur] if x]


def run_name(override_dirname: str) -> str:
    """A readable, filesystem-safe, stable directory name for a sweep cell.

    Built from Hydra's override_dirname ("lora.r=8,optim.lr=0.0001"), keeping
    only the swept keys when the sweep callback has named them (fixed overrides
    like optim.max_steps=50 are the same in every cell and say nothing). Path
    separators and shell-special characters become "_", and very long names
    keep a hash suffix so two cells never share a directory.
    """
    swept = [k for k in os.environ.get(SWEPT_KEYS_ENV, "").split(",") if k]
    if swept:
        override_dirname = ",".join(i for i in split_overrides(override_dirname) if i.split("=", 1)[0].lstrip("+~") in swept)
    if not override_dirname:
        return "default"
    name = _UNSAFE.sub("_", override_dirname)
    if len(name) > 120:
        import hashlib

        name = name[:100] + "-" + hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
    return name


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed per line.

    On resume, lines at or after the resumed step are dropped first so that no
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
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            try:
                json.loads(line)
                out.append(line if line.endswith("\n") else line + "\n")
            except ValueError:
                pass  # a line cut by a kill
        return out

    def write(self, record: dict) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, default=float) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_metrics(path: Path) -> list[dict]:
    rows = []
    try:
        for line in Path(path).read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:
                continue
    except OSError:
        pass
    return rows


class Stopwatch:
    def __init__(self):
        self.start = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start
