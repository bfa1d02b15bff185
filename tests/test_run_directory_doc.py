"""docs/run-directory.md against ftsweep/artifacts.py and ftsweep/metrics.py.

The page is what people read; the modules are what the code writes. Each test
names one way they could drift apart: a file the page does not mention, a
record field on one side only, a status or a metric described differently.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ftsweep import artifacts, metrics

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "run-directory.md").read_text(encoding="utf-8")


# ----------------------------------------------------------------- reading the page


def section(start: str, doc: str = DOC) -> str:
    """The paragraph that opens with ``start`` ("`summary.json` — ...", "`sweep.json`:"), up to the
    next heading or the next such paragraph."""
    lines = doc.splitlines()
    first = next(i for i, line in enumerate(lines) if re.match(re.escape(start) + "( —|:|,)", line))
    out = [lines[first]]
    for line in lines[first + 1 :]:
        if line.startswith("#") or re.match(r"`[\w./]+`( —|:|,)", line):  # a heading, or the next file's paragraph
            break
        out.append(line)
    return "\n".join(out)


def json_blocks(text: str) -> list[str]:
    return re.findall(r"```json\n(.*?)```", text, flags=re.S)


def strip_comments(block: str) -> str:
    """Drop `// ...` to the end of the line, outside strings."""
    out, in_string, i = [], False, 0
    while i < len(block):
        ch = block[i]
        if in_string:
            out.append(ch)
            if ch == "\\":
                out.append(block[i + 1])
                i += 1
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
            out.append(ch)
        elif block.startswith("//", i):
            while i < len(block) and block[i] != "\n":
                i += 1
            continue
        else:
            out.append(ch)
        i += 1
    return "".join(out)


def key_paths(block: str) -> set[tuple[str, ...]]:
    """Every key of a JSON-like block (comments, `...` placeholders allowed) as its path from the top:
    {"a": 1, "b": {"c": 2}, "d": [{"e": 3}]} -> {("a",), ("b",), ("b", "c"), ("d",), ("d", "e")}.
    Several top-level objects (JSONL) share the top."""
    text = strip_comments(block)
    paths: set[tuple[str, ...]] = set()
    stack: list[str | None] = []  # one entry per open { or [: the key it belongs to
    last_key: str | None = None
    for match in re.finditer(r'"((?:[^"\\]|\\.)*)"\s*(:)?|[{}\[\]]', text):
        token = match.group(0)
        if token in "{[":
            stack.append(last_key)
            last_key = None
        elif token in "}]":
            stack.pop()
            last_key = None
        elif match.group(2):  # a key
            key = match.group(1)
            parents = tuple(k for k in stack if k is not None)
            paths.add(parents + (key,))
            last_key = key
        else:
            last_key = None
    return paths


def top(paths: set[tuple[str, ...]]) -> set[str]:
    return {p[0] for p in paths if len(p) == 1}


def under(paths: set[tuple[str, ...]], parent: str) -> set[str]:
    return {p[1] for p in paths if len(p) == 2 and p[0] == parent}


def fields(record) -> set[str]:
    return set(record.__annotations__)


def mentioned(name: str, text: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", text) is not None


# ----------------------------------------------------------------- the parser itself


def test_key_paths_reads_nesting_lists_and_comments():
    block = '{"a": 1, // "x": 2\n "b": {"c": "}"}, "d": [{"e": 3}], "f": { ...free text... }}'
    assert key_paths(block) == {("a",), ("b",), ("b", "c"), ("d",), ("d", "e"), ("f",)}


# ----------------------------------------------------------------- file names


@pytest.mark.parametrize("name", artifacts.RUN_DIR_NAMES + artifacts.SWEEP_DIR_NAMES + artifacts.OTHER_NAMES)
def test_every_file_name_the_code_writes_is_on_the_page(name):
    if name in artifacts.FOLDERS:
        assert f"{name}/" in DOC, f"folder {name}/ is not in docs/run-directory.md"
    else:
        assert name in DOC, f"{name} is not in docs/run-directory.md"


def test_every_file_the_page_draws_is_a_name_the_code_knows():
    known = set(artifacts.RUN_DIR_NAMES + artifacts.SWEEP_DIR_NAMES + artifacts.OTHER_NAMES)
    known |= {Path(n).name for n in known}  # .hydra/config.yaml -> config.yaml
    hydra_own = {"hydra.yaml"}  # written by Hydra, read by nobody here
    trees = [line for line in DOC.splitlines() if line.startswith("    ") and not line.lstrip().startswith(("{", '"', "//"))]
    assert len(trees) > 15
    unknown = []
    for line in trees:
        names = re.split(r"\s{3,}", line.strip())[0]
        for token in names.split():
            for part in token.strip("/").split("/"):
                if not part or any(c in part for c in "<>=$*") or part in ("...", "multirun") or part[0].isdigit():
                    continue
                if part.startswith("tiny-llama-v"):  # models.ensure_tiny_model: named by the builder's version
                    continue
                if part not in known and part not in hydra_own:
                    unknown.append(part)
    assert unknown == [], f"docs/run-directory.md names files artifacts.py does not define: {unknown}"


def test_run_log_is_the_name_hydra_logging_writes():
    logging_cfg = yaml.safe_load((ROOT / "conf" / "hydra" / "job_logging" / "ftsweep.yaml").read_text())
    assert logging_cfg["handlers"]["file"]["filename"].endswith("/" + artifacts.RUN_LOG)


# ----------------------------------------------------------------- records


def test_summary_fields_match_the_record():
    text = section("`summary.json`")
    (block,) = json_blocks(text)
    paths = key_paths(block)
    assert top(paths) == fields(artifacts.Summary)
    assert under(paths, "task_metrics") <= fields(artifacts.EvalLine)
    for name in fields(artifacts.ErrorInfo):
        assert f'"{name}"' in block, f"summary.json's error.{name} is not on the page"


def test_the_status_vocabulary_is_the_one_on_the_page():
    (block,) = json_blocks(section("`summary.json`"))
    comment = re.search(r'"status":.*//\s*(.+)', block).group(1)
    assert tuple(s.strip() for s in comment.split("|")) == artifacts.STATUSES
    for status in (artifacts.NOT_STARTED, artifacts.UNKNOWN, artifacts.POOL_CRASHED):
        assert f"`{status}`" in DOC


def test_manifest_fields_match_the_record():
    (block,) = json_blocks(section("`manifest.json`"))
    paths = key_paths(block)
    assert top(paths) == fields(artifacts.Manifest)
    assert under(paths, "sweep") == fields(artifacts.SweepRef)
    assert under(paths, "git") == fields(artifacts.GitState)
    assert under(paths, "device") == fields(artifacts.DeviceInfo)


def test_metric_lines_match_the_records():
    text = section("`metrics.jsonl`")
    (block,) = json_blocks(text)
    lines = [line for line in re.split(r"\n(?=\{)", block.strip())]
    train = [key_paths(line) for line in lines if '"split": "train"' in line]
    evals = [key_paths(line) for line in lines if '"split": "eval"' in line]
    assert train and evals
    for paths in train:
        assert top(paths) == fields(artifacts.TrainLine)
    seen = set().union(*(top(p) for p in evals))
    assert seen <= fields(artifacts.EvalLine)
    for name in fields(artifacts.EvalLine):
        assert mentioned(name, text), f"metrics.jsonl eval field {name} is not on the page"


def test_sweep_record_fields_match_the_record():
    (block,) = json_blocks(section("`sweep.json`"))
    paths = key_paths(block)
    assert top(paths) == fields(artifacts.SweepRecord)
    assert under(paths, "counts") == set(artifacts.new_counts()) == {"total", *artifacts.STATUSES}
    assert under(paths, "failed_runs") == fields(artifacts.FailedRun)


def test_gpu_pool_and_sample_lines_match_their_records():
    (block,) = json_blocks(section("`gpu_pool.jsonl`"))
    assert top(key_paths(block)) == fields(artifacts.PoolLine)
    sample = re.search(r"`samples\.jsonl` holds.*?`(\{.*?\})`", DOC, flags=re.S).group(1)
    assert top(key_paths(sample)) == fields(artifacts.Sample)


# ----------------------------------------------------------------- metrics


def metric_rows() -> dict[str, tuple[str, str, str]]:
    text = DOC.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in text.splitlines() if line.startswith("|")][2:]
    out = {}
    for row in rows:
        name, better, unit, digits = [cell.strip() for cell in row.strip("|").split("|")]
        out[name] = (better, unit, digits)
    return out


def test_metric_table_is_the_registry():
    rows = metric_rows()
    assert set(rows) == set(metrics.REGISTRY)
    better = {metrics.MINIMIZE: "lower", metrics.MAXIMIZE: "higher", None: ""}
    for name, metric in metrics.REGISTRY.items():
        assert rows[name] == (better[metric.direction], metric.unit, str(metric.digits)), name
