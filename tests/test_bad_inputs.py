"""A table of bad inputs: each gets a non-zero exit, one line that names the problem, and nothing marked ok.

Config mistakes and data-file mistakes both go through the real CLI, as a user meets them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST

GOOD = {"instruction": "Reverse the word.", "input": "abc", "output": "cba"}


def write_jsonl(path: Path, records: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")


def make_data(tmp: Path, kind: str) -> str:
    """Write a bad data file of the given kind; return its path."""
    path = tmp / f"{kind}.jsonl"
    good = [dict(GOOD, input=f"abc{i}", output=f"{i}cba") for i in range(12)]
    if kind == "invalid_json_line":
        write_jsonl(path, [*good[:5], '{"instruction": "x", "output": ', *good[5:]])
    elif kind == "missing_field":
        write_jsonl(path, [*good[:3], {"instruction": "x", "input": "y"}, *good[3:]])
    elif kind == "wrong_type":
        write_jsonl(path, [*good[:2], {"instruction": ["a", "list"], "input": "", "output": "z"}, *good[2:]])
    elif kind == "empty_output":
        write_jsonl(path, [*good[:4], dict(GOOD, output=""), *good[4:]])
    elif kind == "not_utf8":
        path.write_bytes(json.dumps(GOOD).encode() + b"\n" + '{"instruction": "caf\u00e9", "input": "", "output": "x"}'.encode("latin-1") + b"\n")
    elif kind == "empty":
        path.write_text("", encoding="utf-8")
    elif kind == "small":
        write_jsonl(path, good)
    elif kind == "label_out_of_range":
        path = tmp / "labels.jsonl"
        recs = [{"context": "c", "question": "q", "answers": ["a", "b", "c", "d"], "label": i % 4, "id_string": str(i)} for i in range(12)]
        recs[6]["label"] = 7
        write_jsonl(path, recs)
    else:
        raise ValueError(kind)
    return str(path)


# (id, overrides, words the error line must contain). "{data:KIND}" is replaced by a file of that kind.
CASES = [
    ("typo_key", ["lora.rr=8"], ["lora.rr"]),
    ("wrong_type", ["optim.lr=abc"], ["optim.lr=abc"]),
    ("unknown_model", ["model=foo"], ["model=foo"]),
    ("unknown_lora", ["lora=nope"], ["lora=nope"]),
    ("unknown_group", ["foo=bar"], ["foo"]),
    ("rank_zero", ["lora.r=0"], ["lora.r=0", ">= 1"]),
    ("alpha_zero", ["lora.alpha=0"], ["lora.alpha=0"]),
    ("dropout_one", ["lora.dropout=1.0"], ["lora.dropout=1.0"]),
    ("negative_lr", ["optim.lr=-1e-4"], ["optim.lr"]),
    ("zero_batch", ["optim.micro_batch_size=0"], ["optim.micro_batch_size=0"]),
    ("zero_accum", ["optim.grad_accum=0"], ["optim.grad_accum=0"]),
    ("warmup_ratio", ["optim.warmup_ratio=1.5"], ["optim.warmup_ratio=1.5"]),
    ("data_n_zero", ["data.n=0"], ["data.n=0"]),
    ("val_size_zero", ["data.val_size=0"], ["data.val_size=0"]),
    ("max_length_tiny", ["data.max_length=2"], ["data.max_length=2"]),
    ("two_errors_at_once", ["lora.r=0", "optim.lr=-1"], ["lora.r=0", "optim.lr=-1"]),
    ("bad_mode", ["mode=bogus"], ["mode=bogus"]),
    ("unknown_target", ["lora.target_modules=[nope_proj]"], ["nope_proj", "q_proj"]),
    ("classify_one_label", ["task=classify", "task.num_labels=1"], ["num_labels"]),
    ("paged_optimizer_on_cpu", ["optim=paged_adamw_8bit"], ["paged", "optim=adamw"]),
    ("missing_model_dir", ["model.name_or_path=/nonexistent/model"], ["/nonexistent/model"]),
    ("alpaca_without_path", ["data=alpaca"], ["data.path"]),
    ("missing_data_file", ["data=alpaca", "data.path=nowhere.json"], ["nowhere.json"]),
    ("invalid_json_line", ["data=alpaca", "data.path={data:invalid_json_line}"], ["invalid_json_line.jsonl", "6"]),
    ("missing_field", ["data=alpaca", "data.path={data:missing_field}"], ["missing_field.jsonl", "4", "output"]),
    ("field_wrong_type", ["data=alpaca", "data.path={data:wrong_type}"], ["wrong_type.jsonl", "3", "instruction"]),
    ("empty_output", ["data=alpaca", "data.path={data:empty_output}"], ["empty_output.jsonl", "5", "output"]),
    ("not_utf8", ["data=alpaca", "data.path={data:not_utf8}"], ["not_utf8.jsonl", "UTF-8"]),
    ("empty_dataset", ["data=alpaca", "data.path={data:empty}"], ["empty.jsonl"]),
    ("n_larger_than_data", ["data=alpaca", "data.path={data:small}", "data.val_size=2", "data.n=500"], ["data.n=500"]),
    # Hydra's own line was "LexerNoViableAltException: data.path=古诗.json; ^; See https://hydra.cc/...".
    ("unquoted_chinese", ["data=alpaca", "data.path=古诗.json"], ["data.path=古诗.json", "'data.path=\"古诗.json\"'"]),
    # Hydra's own line was "mismatched input '=' expecting <EOF>; See https://hydra.cc/...", naming no override.
    ("unquoted_equals", ["hydra.run.dir=out/lr=1e-4"], ["'hydra.run.dir=out/lr=1e-4'", "'hydra.run.dir=\"out/lr=1e-4\"'"]),
]


# Refused before a run starts: by Hydra while composing, or (an unknown mode) before any mode runs.
NO_RUN_DIR = {"typo_key", "wrong_type", "unknown_model", "unknown_lora", "unknown_group", "unquoted_chinese",
              "unquoted_equals"}


@pytest.mark.parametrize("case, overrides, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_one_line_a_nonzero_exit_and_no_ok(cli, tmp_path, case, overrides, words):
    args = []
    for o in overrides:
        if "{data:" in o:
            key, spec = o.split("=", 1)
            o = f"{key}={make_data(tmp_path, spec[len('{data:'):-1])}"
        args.append(o)
    proc = cli([*FAST, *args], timeout=180)
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [x for x in proc.stderr.splitlines() if x.startswith("ftsweep: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    for w in words:
        assert w in errors[0], (w, errors[0])
    summaries = list(tmp_path.glob("outputs/**/summary.json"))
    # Mistakes caught before a run starts leave no run directory; every later one is recorded as failed in
    # the run's directory, and the error line names that directory.
    assert len(summaries) == (0 if case in NO_RUN_DIR else 1), (case, summaries)
    for summary in summaries:
        data = json.loads(summary.read_text())
        assert data["status"] == "failed" and data["error"]["message"]
        assert not (summary.parent / "adapter").exists()
        assert f"(run dir: {summary.parent}" in errors[0], errors[0]


@pytest.mark.parametrize("override, torch_loaded", [("lora.r=-1", False), ("optim=paged_adamw_8bit", True)])
def test_a_config_needs_torch_only_to_judge_a_gpu_setting(tmp_path, override, torch_loaded):
    """A range mistake is refused before torch's import (1.5 s instead of 7 s for a fresh process on a slow day);
    only a setting that needs a GPU asks torch whether there is one, and is refused on this CPU machine."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "ftsweep", override, "logger=none"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ftsweep: error:")]
    assert len(errors) == 1 and override.split("=")[1] in errors[0], proc.stderr[-2000:]
    assert bool(re.search(r"\|\s+torch$", proc.stderr, re.M)) is torch_loaded


def test_classify_label_outside_num_labels(cli, tmp_path):
    path = make_data(tmp_path, "label_out_of_range")
    proc = cli([*FAST, "task=classify", "task.num_labels=4", "data=alpaca", "data.format=multiple_choice",
                f"data.path={path}", "data.val_size=2"], timeout=180)
    assert proc.returncode == 1
    errors = [x for x in proc.stderr.splitlines() if x.startswith("ftsweep: error:")]
    assert len(errors) == 1 and "labels.jsonl" in errors[0] and "label" in errors[0] and "7" in errors[0], proc.stderr[-2000:]


def test_skip_bad_records_counts_them_and_the_run_is_ok(cli, tmp_path):
    path = make_data(tmp_path, "missing_field")
    proc = cli([*FAST, "data=alpaca", f"data.path={path}", "data.val_size=2", "data.on_bad_record=skip",
                "optim.max_steps=2", "eval.every_n_steps=0"], timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(next(tmp_path.glob("outputs/**/summary.json")).read_text())
    assert summary["status"] == "ok" and summary["skipped_records"] == 1
    assert ("data: 1 bad record skipped (data.on_bad_record=skip):\n  missing_field.jsonl: record 4: field 'output' is "
            "missing") in proc.stdout + proc.stderr
