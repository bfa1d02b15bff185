"""What ftsweep/artifacts.py writes and reads back in a run or sweep directory: the statuses and counts, the JSON
text of each file, damaged files that are told apart from missing ones, run-directory markers, checkpoints,
sweep.json's swept keys, and metrics.jsonl across a resume. (tests/test_artifacts.py covers the atomic write
and the basic readers; these are the cases it leaves out.)"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest

from ftsweep import artifacts

# ---- statuses and counts ----------------------------------------------------------------------------------


def test_status_vocabulary_and_the_groups_built_from_it():
    assert artifacts.STATUSES == ("running", "ok", "failed", "interrupted", "skipped")
    assert artifacts.KNOWN_STATUSES == ("ok", "failed", "interrupted", "running", "skipped", "not started", "unknown")
    assert artifacts.HAS_RESULT == ("ok", "skipped")
    assert artifacts.UNFINISHED == ("failed", "interrupted", "running")


def test_a_new_sweep_counts_zero_of_every_status():
    counts = artifacts.new_counts()
    assert counts == {"total": 0, "ok": 0, "failed": 0, "interrupted": 0, "running": 0, "skipped": 0}
    assert set(counts) == {"total", *artifacts.STATUSES}
    counts["ok"] += 1
    assert artifacts.new_counts()["ok"] == 0  # a fresh dict each time


# ---- the JSON text of a file -----------------------------------------------------------------------------


def test_json_files_keep_key_order_indent_two_and_write_paths_and_dates_as_text(tmp_path):
    record = {"z": 1, "a": [1, 2], "path": Path("/x/y"), "when": datetime(2024, 1, 2, 3, 4, 5), "名": "値"}
    artifacts.write_manifest(tmp_path, record)
    text = (tmp_path / "manifest.json").read_text(encoding="utf-8")
    assert text == ('{\n  "z": 1,\n  "a": [\n    1,\n    2\n  ],\n  "path": "/x/y",\n'
                    '  "when": "2024-01-02 03:04:05",\n  "名": "値"\n}\n')
    assert artifacts.read_manifest(tmp_path) == {"z": 1, "a": [1, 2], "path": "/x/y", "when": "2024-01-02 03:04:05",
                                                  "名": "値"}


def test_a_jsonl_line_is_one_compact_object_and_a_jsonl_file_one_line_per_record(tmp_path):
    assert artifacts.json_line({"b": 1, "a": "é"}) == '{"b": 1, "a": "é"}\n'
    path = tmp_path / "rows.jsonl"
    artifacts.atomic_write_jsonl(path, [{"i": 0}, {"i": 1}])
    assert path.read_bytes() == b'{"i": 0}\n{"i": 1}\n'
    artifacts.atomic_write_jsonl(path, [])
    assert path.read_bytes() == b""


def test_writers_put_each_record_in_its_own_file(tmp_path):
    artifacts.write_summary(tmp_path, {"status": "ok"})
    artifacts.write_sweep(tmp_path, {"id": "s", "swept": ["lora.r"]})
    artifacts.write_manifest(tmp_path, {"run_name": "r"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json", "summary.json", "sweep.json"]
    assert json.loads((tmp_path / "summary.json").read_text()) == {"status": "ok"}
    assert artifacts.read_summary(tmp_path) == {"status": "ok"}
    assert artifacts.read_sweep(tmp_path) == {"id": "s", "swept": ["lora.r"]}
    assert artifacts.read_manifest(tmp_path) == {"run_name": "r"}


def test_the_temp_file_is_hidden_beside_the_target_until_it_is_renamed(tmp_path, monkeypatch):
    seen = []
    publish = artifacts._publish

    def spy(tmp, path):
        seen.append((Path(tmp), Path(path), Path(tmp).read_text(encoding="utf-8")))
        publish(tmp, path)

    monkeypatch.setattr(artifacts, "_publish", spy)
    artifacts.atomic_write_text(tmp_path / "report.md", "x\ny\n")
    (tmp, target, content), = seen
    assert tmp.parent == target.parent == tmp_path  # the same file system: the rename is atomic
    assert tmp.name.startswith(".report.md.") and content == "x\ny\n"
    assert not tmp.exists() and target.read_text() == "x\ny\n"


def test_a_failed_rename_leaves_neither_file_nor_temp(tmp_path, monkeypatch):
    def fail(tmp, path):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts, "_publish", fail)
    with pytest.raises(OSError, match="disk full"):
        artifacts.atomic_write_json(tmp_path / "summary.json", {"status": "ok"})
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_raises_when_the_rename_fails_and_nothing_is_there(tmp_path, monkeypatch):
    def fail(tmp, path):
        raise OSError("read-only")

    monkeypatch.setattr(artifacts, "_publish", fail)
    with pytest.raises(OSError, match="read-only"):
        with artifacts.atomic_dir(tmp_path / "cache" / "key") as tmp:
            (tmp / "meta.json").write_text("{}")
    assert list((tmp_path / "cache").iterdir()) == []


def test_appended_lines_accumulate_in_utf8(tmp_path):
    path = tmp_path / "gpu_pool.jsonl"
    artifacts.append_jsonl(path, {"device": "0", "note": "é"})
    artifacts.append_jsonl(path, {"device": "1"})
    assert path.read_bytes() == '{"device": "0", "note": "é"}\n{"device": "1"}\n'.encode("utf-8")


# ---- readers: missing, damaged, not an object ------------------------------------------------------------


def test_read_json_says_why_a_file_is_unreadable(tmp_path):
    problems: list[str] = []
    assert artifacts.read_json(tmp_path / "missing.json", problems) is None and problems == []
    (tmp_path / "bytes.json").write_bytes(b"\xff\xfe{")
    assert artifacts.read_json(tmp_path / "bytes.json", problems) is None
    assert problems == ["bytes.json unreadable (UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 0: "
                        "invalid start byte)"]
    (tmp_path / "folder.json").mkdir()
    assert artifacts.read_json(tmp_path / "folder.json", problems) is None
    assert problems[1] == f"folder.json unreadable (IsADirectoryError: [Errno 21] Is a directory: '{tmp_path / 'folder.json'}')"
    assert artifacts.read_json(tmp_path / "bytes.json") is None  # no list given: still no exception
    (tmp_path / "list.json").write_text("[1, 2]")
    assert artifacts.read_json(tmp_path / "list.json") == [1, 2]


def test_read_json_object_accepts_only_objects(tmp_path):
    (tmp_path / "a.json").write_text('{"k": 1}')
    (tmp_path / "b.json").write_text("3")
    (tmp_path / "c.json").write_text("{}")
    problems: list[str] = []
    assert artifacts.read_json_object(tmp_path / "a.json", problems) == {"k": 1}
    assert artifacts.read_json_object(tmp_path / "b.json", problems) == {}
    assert artifacts.read_json_object(tmp_path / "b.json") == {}
    assert artifacts.read_json_object(tmp_path / "c.json", problems) == {}
    assert problems == ["b.json does not hold a JSON object"]


def test_an_empty_or_damaged_summary_reads_as_none(tmp_path):
    assert artifacts.read_summary(tmp_path) is None
    (tmp_path / "summary.json").write_text("{}")
    assert artifacts.read_summary(tmp_path) is None
    (tmp_path / "summary.json").write_text('{"status": "ok"')
    problems: list[str] = []
    assert artifacts.read_summary(tmp_path, problems) is None
    assert problems[0].startswith("summary.json unreadable (JSONDecodeError: ")
    (tmp_path / "sweep.json").write_text('{"id": "x"')
    assert artifacts.read_sweep(tmp_path, problems) is None
    assert problems[1].startswith("sweep.json unreadable (JSONDecodeError: ")
    (tmp_path / "manifest.json").write_text("{}")
    assert artifacts.read_manifest(tmp_path) is None


def test_read_metrics_lists_the_first_five_bad_lines_then_dots(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(['{"step": 1}'] + ["oops"] * 7 + ['{"step": 2}']) + "\n")
    problems: list[str] = []
    assert artifacts.read_metrics(path, problems) == [{"step": 1}, {"step": 2}]
    assert problems == ["metrics.jsonl: skipped 7 unreadable line(s) (line 2, 3, 4, 5, 6, ...)"]
    path.write_text("\n".join(["x"] * 5) + '\n{"step": 3}')
    problems.clear()
    assert artifacts.read_metrics(path, problems) == [{"step": 3}]
    assert problems == ["metrics.jsonl: skipped 5 unreadable line(s) (line 1, 2, 3, 4, 5)"]
    assert artifacts.read_metrics(path) == [{"step": 3}]  # no list given: no exception


def test_read_metrics_survives_bad_bytes_blank_lines_and_a_folder(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "note": "\xff"}\n   \n{"step": 2}\n')
    problems: list[str] = []
    assert artifacts.read_metrics(path, problems) == [{"step": 1, "note": "\ufffd"}, {"step": 2}]
    assert problems == []
    (tmp_path / "dir.jsonl").mkdir()
    assert artifacts.read_metrics(tmp_path / "dir.jsonl", problems) == []
    assert problems == [f"dir.jsonl unreadable (IsADirectoryError: [Errno 21] Is a directory: '{tmp_path / 'dir.jsonl'}')"]
    assert artifacts.read_metrics(tmp_path / "dir.jsonl") == []


# ---- what makes a run directory, an adapter, a checkpoint ------------------------------------------------


@pytest.mark.parametrize("marker", ["summary.json", "manifest.json", ".hydra/overrides.yaml"])
def test_any_one_marker_file_makes_a_run_directory(tmp_path, marker):
    assert not artifacts.is_run_dir(tmp_path)
    (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / marker).write_text("{}")
    assert artifacts.is_run_dir(tmp_path)


def test_a_folder_named_like_a_marker_does_not_make_a_run_directory(tmp_path):
    (tmp_path / "summary.json").mkdir()
    (tmp_path / ".hydra").mkdir()
    (tmp_path / "metrics.jsonl").write_text("")
    assert not artifacts.is_run_dir(tmp_path)


def test_an_adapter_was_saved_when_its_config_is_there(tmp_path):
    assert not artifacts.has_adapter(tmp_path)
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_model.safetensors").write_text("")
    assert not artifacts.has_adapter(tmp_path)
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert artifacts.has_adapter(tmp_path)


def test_checkpoint_steps_compare_as_numbers(tmp_path):
    assert artifacts.checkpoint_step(Path("checkpoints/checkpoint-40")) == 40
    assert artifacts.checkpoint_step(None) is None
    for step in (9, 10, 100):
        ckpt = tmp_path / "checkpoints" / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        (ckpt / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoints" / "other-500").mkdir()  # not a Trainer checkpoint
    (tmp_path / "checkpoints" / "other-500" / "trainer_state.json").write_text("{}")
    assert artifacts.last_checkpoint(tmp_path) == tmp_path / "checkpoints" / "checkpoint-100"
    assert artifacts.last_checkpoint(str(tmp_path)).name == "checkpoint-100"


# ---- time ------------------------------------------------------------------------------------------------


def test_timestamps_are_utc_to_the_second():
    stamp = artifacts.now_iso()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    parsed = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")
    assert abs((parsed - datetime.utcnow()).total_seconds()) < 5


def test_a_stopwatch_counts_seconds_from_its_start():
    watch = artifacts.Stopwatch()
    time.sleep(0.02)
    first = watch.elapsed()
    assert 0.02 <= first < 1
    assert watch.elapsed() >= first


# ---- sweep.json's swept keys ------------------------------------------------------------------------------


def test_swept_keys_as_sweep_json_records_them(tmp_path):
    assert artifacts.swept_keys(None) is None
    assert artifacts.swept_keys(tmp_path) is None  # not written yet
    artifacts.write_sweep(tmp_path, {"id": "s"})
    assert artifacts.swept_keys(tmp_path) is None  # an older sweep.json without the field
    artifacts.write_sweep(tmp_path, {"id": "s", "swept": None})
    assert artifacts.swept_keys(tmp_path) is None
    artifacts.write_sweep(tmp_path, {"id": "s", "swept": []})
    assert artifacts.swept_keys(tmp_path) == []
    artifacts.write_sweep(tmp_path, {"id": "s", "swept": ["lora.r", "optim.lr"]})
    assert artifacts.swept_keys(str(tmp_path)) == ["lora.r", "optim.lr"]


# ---- metrics.jsonl across a resume --------------------------------------------------------------------


@pytest.mark.parametrize("before, after", [
    # Lines up to the checkpoint stay (a line without a step too); later, cut or non-object lines go.
    ('{"split": "eval", "step": 0}\n{"note": "no step"}\n[1]\n{"step": 10}\n{"step": 20}\n{"step": 1',
     '{"split": "eval", "step": 0}\n{"note": "no step"}\n{"step": 10}\n'),
    # A last line without its newline is completed before the next record.
    ('{"step": 5}\n{"step": 10}', '{"step": 5}\n{"step": 10}\n'),
], ids=["drops-cut-or-foreign", "completes-last-line"])
def test_resume_at_step_10_keeps_what_the_checkpoint_saw(tmp_path, before, after):
    path = tmp_path / "metrics.jsonl"
    path.write_text(before)
    log = artifacts.MetricsLog(path, resume_step=10)
    log.write({"step": 11})
    log.close()
    assert path.read_text() == after + '{"step": 11}\n'


def test_resume_with_no_log_yet_and_a_fresh_run_start_empty(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = artifacts.MetricsLog(path, resume_step=40)
    log.write({"step": 41, "loss": 1.5})
    log.close()
    assert path.read_text() == '{"step": 41, "loss": 1.5}\n'
    log = artifacts.MetricsLog(path, resume_step=0)  # resuming at step 0 keeps only step 0
    log.close()
    assert path.read_text() == ""
    path.write_text('{"step": 1}\n')
    log = artifacts.MetricsLog(path)
    log.write({"step": 1, "loss": 2.0})
    assert path.read_text() == '{"step": 1, "loss": 2.0}\n'  # flushed per line, before close
    log.close()


def test_six_bad_lines_are_all_counted_and_the_sixth_is_dots(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(["bad"] * 6) + '\n{"step": 1}\n')
    problems: list[str] = []
    assert artifacts.read_metrics(path, problems) == [{"step": 1}]
    assert problems == ["metrics.jsonl: skipped 6 unreadable line(s) (line 1, 2, 3, 4, 5, ...)"]


def test_a_write_creates_the_missing_folders_above_it(tmp_path):
    target = tmp_path / "sweep" / "cell" / "summary.json"
    artifacts.atomic_write_text(target, "{}\n")
    assert target.read_text() == "{}\n"


def test_timestamps_are_utc_whatever_the_machines_time_zone(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # UTC+9, no daylight saving
    time.tzset()
    try:
        parsed = datetime.strptime(artifacts.now_iso(), "%Y-%m-%dT%H:%M:%SZ")
        assert abs((parsed - datetime.utcnow()).total_seconds()) < 5
    finally:
        monkeypatch.undo()
        time.tzset()


def test_a_quoted_value_with_an_equals_sign_keeps_its_key_in_the_run_name():
    # The key ends at the first "=": the rest, "=" included, is the value (Hydra's quotes are not part of it).
    assert artifacts.run_name(["data.path='in=1.json'"]) == "data.path=in=1.json"
