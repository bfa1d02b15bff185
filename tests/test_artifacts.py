"""The run directory's writers and readers (ftsweep/artifacts.py) and the metric registry (ftsweep/metrics.py)."""

from __future__ import annotations

import json
import math

import pytest

from ftsweep import artifacts, metrics

# ----------------------------------------------------------------- the one atomic write


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path):
    path = tmp_path / "deep" / artifacts.SUMMARY
    artifacts.write_summary(path.parent, {"status": artifacts.RUNNING})
    artifacts.write_summary(path.parent, {"status": artifacts.OK, "eval_loss": 3.41, "note": "ünïcode"})
    assert path.read_bytes() == b'{\n  "status": "ok",\n  "eval_loss": 3.41,\n  "note": "\xc3\xbcn\xc3\xafcode"\n}\n'
    assert [p.name for p in path.parent.iterdir()] == [artifacts.SUMMARY]
    assert artifacts.read_summary(path.parent) == {"status": "ok", "eval_loss": 3.41, "note": "ünïcode"}


def test_a_write_that_fails_halfway_keeps_the_old_file(tmp_path):
    path = tmp_path / artifacts.REPORT_MD
    artifacts.atomic_write_text(path, "old\n")
    with pytest.raises(TypeError):
        artifacts.atomic_write_text(path, None)  # type: ignore[arg-type] - fails inside the write
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == [artifacts.REPORT_MD]


def test_atomic_dir_publishes_whole_and_keeps_a_copy_that_won_the_race(tmp_path):
    target = tmp_path / artifacts.TOKENIZED / "key"
    with artifacts.atomic_dir(target) as tmp:
        assert not target.exists()  # nothing at the target while the folder is being filled
        (tmp / artifacts.CACHE_META).write_text("{}")
    assert (target / artifacts.CACHE_META).read_text() == "{}"

    with artifacts.atomic_dir(target) as tmp:  # another process got there first: its copy stays
        (tmp / artifacts.CACHE_META).write_text('{"second": true}')
    assert (target / artifacts.CACHE_META).read_text() == "{}"

    other = tmp_path / "other"
    with pytest.raises(RuntimeError):
        with artifacts.atomic_dir(other) as tmp:
            (tmp / "half").write_text("x")
            raise RuntimeError("killed while building")
    assert not other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [artifacts.TOKENIZED]  # no temp folder left
    assert [p.name for p in target.parent.iterdir()] == ["key"]


# ----------------------------------------------------------------- readers


def test_read_metrics_skips_cut_and_foreign_lines_and_says_so(tmp_path):
    path = tmp_path / artifacts.METRICS
    path.write_text('{"split": "train", "step": 1}\n[1, 2]\n\n{"split": "eval", "step": 1}\n{"split": "tr')
    problems: list[str] = []
    rows = artifacts.read_metrics(path, problems)
    assert rows == [{"split": "train", "step": 1}, {"split": "eval", "step": 1}]
    assert problems == ["metrics.jsonl: skipped 2 unreadable line(s) (line 2, 5)"]
    assert artifacts.read_metrics(tmp_path / "missing.jsonl", problems) == [] and len(problems) == 1


def test_read_json_object_tells_missing_from_damaged(tmp_path):
    problems: list[str] = []
    assert artifacts.read_json_object(tmp_path / artifacts.MANIFEST, problems) == {} and problems == []
    (tmp_path / artifacts.MANIFEST).write_text('{"run_name": ')
    assert artifacts.read_manifest(tmp_path, problems) is None
    assert problems[0].startswith("manifest.json unreadable (JSONDecodeError: ")
    (tmp_path / artifacts.SWEEP).write_text("[1]")
    assert artifacts.read_sweep(tmp_path, problems) is None
    assert problems[1] == "sweep.json does not hold a JSON object"


def test_metrics_log_resume_drops_the_steps_after_the_checkpoint(tmp_path):
    path = tmp_path / artifacts.METRICS
    log = artifacts.MetricsLog(path)
    for step in (0, 10, 20, 30):
        log.write({"split": "train", "step": step, "loss": math.pi})
    log.close()
    log = artifacts.MetricsLog(path, resume_step=20)
    log.write({"split": "train", "step": 30, "loss": 1.0})
    log.close()
    assert [(r["step"], r["loss"]) for r in artifacts.read_metrics(path)] == [(0, math.pi), (10, math.pi), (20, math.pi), (30, 1.0)]
    artifacts.MetricsLog(path).close()  # a fresh run starts an empty log
    assert path.read_text() == ""


def test_last_checkpoint_is_the_newest_complete_one(tmp_path):
    for step, complete in ((5, True), (40, True), (100, False)):
        ckpt = tmp_path / artifacts.CHECKPOINTS / f"{artifacts.CHECKPOINT_PREFIX}{step}"
        ckpt.mkdir(parents=True)
        if complete:
            (ckpt / artifacts.TRAINER_STATE).write_text("{}")
    last = artifacts.last_checkpoint(tmp_path)
    assert last.name == "checkpoint-40" and artifacts.checkpoint_step(last) == 40
    assert artifacts.last_checkpoint(tmp_path / "nothing") is None


def test_jsonl_lines_are_utf8_and_numbers_from_numpy_scalars(tmp_path):
    import numpy as np

    path = tmp_path / artifacts.SAMPLES
    artifacts.write_samples(path, [{"prompt": "你好", "reference": "a", "prediction": "a", "exact_match": True, "x": np.float32(0.5)}])
    assert path.read_text(encoding="utf-8") == '{"prompt": "你好", "reference": "a", "prediction": "a", "exact_match": true, "x": 0.5}\n'
    artifacts.append_jsonl(tmp_path / artifacts.GPU_POOL_LOG, {"job": 0, "status": artifacts.POOL_CRASHED})
    artifacts.append_jsonl(tmp_path / artifacts.GPU_POOL_LOG, {"job": 1, "status": "completed"})
    assert [json.loads(x)["job"] for x in (tmp_path / artifacts.GPU_POOL_LOG).read_text().splitlines()] == [0, 1]


# ----------------------------------------------------------------- the metric registry


@pytest.mark.parametrize(
    ("name", "direction", "unit", "digits", "header"),
    [
        ("eval_loss", metrics.MINIMIZE, "nats/token", 4, "eval loss"),
        ("perplexity", metrics.MINIMIZE, "", 2, "perplexity"),
        ("baseline_eval_loss", metrics.MINIMIZE, "nats/token", 4, "baseline eval loss"),
        ("exact_match", metrics.MAXIMIZE, "0-1", 4, "exact_match"),
        ("bleu", metrics.MAXIMIZE, "0-100", 2, "bleu"),
        ("f1", metrics.MAXIMIZE, "0-1", 4, "f1"),
        ("tokens_per_second", None, "tokens/s", 0, "tokens/s"),
        ("peak_memory_bytes", None, "bytes", 2, "peak memory (GiB)"),
        # Families: names the registry does not list.
        ("rouge1", metrics.MAXIMIZE, "0-1", 4, "rouge1"),
        ("rougeLsum", metrics.MAXIMIZE, "0-1", 4, "rougeLsum"),
        ("val_loss", metrics.MINIMIZE, "nats/token", 4, "val_loss"),
        ("eval_accuracy", metrics.MAXIMIZE, "0-1", 4, "eval_accuracy"),
        ("sacrebleu", metrics.MAXIMIZE, "0-100", 2, "sacrebleu"),
        ("chrf", None, "", 4, "chrf"),
    ],
)
def test_registry_and_families(name, direction, unit, digits, header):
    m = metrics.get(name)
    assert (m.direction, m.unit, m.digits, m.header) == (direction, unit, digits, header)
    assert metrics.known(name) == (direction is not None)
    assert metrics.maximizes(name) == (direction == metrics.MAXIMIZE)


def test_a_registered_quality_metric_goes_the_way_its_family_does():
    # The registry only refines a family (unit, digits, header); it never turns a *loss* into a maximum.
    for name, m in metrics.REGISTRY.items():
        family = next((d for hint, d, _, _ in metrics.FAMILIES if hint in name.lower()), None)
        assert m.direction in (family, None), name
        if m.direction is None:
            assert not m.spread, f"{name}: a cost shows its mean, not mean ± std"


def test_formats_for_the_table_the_console_and_the_axes():
    assert metrics.get("trainable_params").format(136448) == "136,448"
    assert metrics.get("peak_memory_bytes").format(812000000) == f"{812000000 / 2**30:.2f}" == "0.76"
    assert metrics.get("eval_loss").format(float("nan")) == "—" and metrics.get("bleu").format(None) == "—"
    assert [metrics.console(k, v) for k, v in [("eval_loss", 3.41), ("bleu", 32.0), ("tokens_per_second", 2900.4),
                                               ("wall_seconds", 48.23), ("peak_memory_bytes", 812000000)]] == [
        "eval_loss 3.4100", "bleu 32.00", "2900 tok/s", "48.2 s", "0.76 GiB"]
    assert metrics.get("eval_loss").axis_label(False) == "eval_loss (nats/token, lower is better)"
    assert metrics.get("perplexity").axis_label(False) == "perplexity (lower is better)"


def test_summary_values_for_the_report_and_the_search_objective():
    summary = {"status": "ok", "eval_loss": 3.5, "steps": True, "perplexity": float("inf"),
               "task_metrics": {"bleu": 31, "rougeL": None}}
    assert metrics.summary_value(summary, "eval_loss") == 3.5
    assert metrics.summary_value(summary, "bleu") == 31.0  # from task_metrics
    assert metrics.summary_value(summary, "steps") is None  # a bool is not a number here
    assert metrics.summary_value(summary, "perplexity") is None  # nor is inf
    assert metrics.summary_value(summary, "rougeL") is None
    assert metrics.worst(True) == -math.inf and metrics.worst(False) == math.inf
