"""Trackers for real: SwanLab in local mode and W&B offline, one run per cell, read back from their own files."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import FAST

from ftsweep import artifacts

SECRET = "hf_test_secret_value_31415"
ARGS = [*FAST, "optim.max_steps=4", "train.logging_steps=1", "eval.every_n_steps=2"]


@pytest.fixture(scope="module")
def tracked_sweep(tmp_path_factory, tiny_model_dir):
    from conftest import run_cli

    cwd = tmp_path_factory.mktemp("tracked")
    sweep = cwd / "sweep"
    env = {"HF_TOKEN": SECRET, "OPENAI_API_KEY": "sk-" + SECRET, "WANDB_MODE": "offline"}
    proc = run_cli(["-m", "lora.r=4,8", "optim.lr=1e-4,3e-4", *ARGS, "logger=swanlab_wandb", f"hydra.sweep.dir={sweep}"], cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return sweep


def train_losses(run_dir: Path) -> int:
    return sum(1 for r in artifacts.read_metrics(run_dir / artifacts.METRICS) if r["split"] == "train")


def swanlab_runs(swanlog: Path) -> dict[str, dict]:
    """Each local SwanLab run's start record and its scalar series, read with SwanLab's own record reader."""
    return {run["name"]: run for run in map(swanlab_run, swanlog.glob("run-*/run-*.swanlab"))}


def swanlab_run(path: Path) -> dict:
    """One local SwanLab run's file, read as swanlab_runs describes."""
    from swanlab.proto.swanlab.record.v1.record_pb2 import Record
    from swanlab.proto.swanlab.run.v1.run_pb2 import RunState
    from swanlab.sdk.internal.core_python.store import DataStoreReader

    reader = DataStoreReader()
    reader.open(path)
    start, finish, series = None, None, {}
    for blob in reader:
        rec = Record()
        rec.ParseFromString(blob)
        kind = rec.WhichOneof("record_type")
        if kind == "start":
            start = rec.start
        elif kind == "finish":
            finish = rec.finish
        elif kind == "scalar":
            series.setdefault(rec.scalar.key, []).append(rec.scalar)
    reader.close()
    config = yaml.safe_load((path.parent / "files" / "config.yaml").read_text())
    return {"name": start.name, "id": start.id, "group": start.group,
            "tags": list(start.tags), "series": series, "finished": finish is not None,
            "state": RunState.Name(finish.state) if finish else None, "error": finish.error if finish else None,
            "color": start.color, "config": config, "description": start.description}


def wandb_runs(root: Path) -> dict[str, dict]:
    """Each offline W&B run's run record and history rows (W&B's own protobuf, read with a leveldb-log reader)."""
    return {run["name"]: run for run in wandb_sessions(root)}


def wandb_sessions(root: Path) -> list[dict]:
    """Every offline run folder, oldest first: a resumed run has one per session, all with the run's id (a session
    begun in the same second as the one before gets the folder name with "-1" after it, which sorts after it)."""
    from swanlab.converter.wb.wbdatastore import WBDataStoreReader
    from wandb.proto import wandb_internal_pb2 as pb

    # No wandb.teardown() here: each run's own finish waits for its file (WandbBackend.flush), which this reads.
    runs = []
    for path in sorted(root.glob("wandb/offline-run-*/run-*.wandb")):
        reader = WBDataStoreReader()
        reader.open(path)
        run, history, exit_code, summary = None, [], None, {}
        while (blob := reader.scan()) is not None:
            rec = pb.Record()
            rec.ParseFromString(blob)
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                run = rec.run
            elif kind == "history":
                history.append({"/".join(i.nested_key) if i.nested_key else i.key: json.loads(i.value_json) for i in rec.history.item})
            elif kind == "summary":
                summary.update({"/".join(i.nested_key) if i.nested_key else i.key: json.loads(i.value_json)
                                for i in rec.summary.update})
            elif kind == "exit":
                exit_code = rec.exit.exit_code
        reader.close()
        config = {u.key: json.loads(u.value_json) for u in run.config.update}
        runs.append({"name": run.display_name, "id": run.run_id, "group": run.run_group, "tags": list(run.tags),
                     "history": history, "config": config, "exit_code": exit_code, "summary": summary})
    return runs


CELLS = ["lora.r=4,optim.lr=0.0001", "lora.r=4,optim.lr=0.0003", "lora.r=8,optim.lr=0.0001", "lora.r=8,optim.lr=0.0003"]


@pytest.mark.slow
def test_swanlab_local_has_one_run_per_cell_with_the_full_loss_series(tracked_sweep):
    runs = swanlab_runs(tracked_sweep / "swanlog")
    assert sorted(runs) == CELLS
    for name, run in runs.items():
        assert run["group"] == "_".join(tracked_sweep.parts[-2:])  # the sweep id
        assert run["tags"] == name.split(",")  # the swept values, not the fixed overrides
        assert run["state"] == "RUN_STATE_FINISHED"
        assert len(run["series"]["train/loss"]) == train_losses(tracked_sweep / name) == 4
        assert len(run["series"]["eval/loss"]) == 3  # steps 0, 2, 4
        assert {"train/lr", "train/grad_norm", "train/tokens_per_second", "eval/perplexity"} <= set(run["series"])
        # Short names, one chart per metric: no summary charts, no eval/eval_loss, no eval copy of train bookkeeping.
        ours = {k: v for k, v in run["series"].items() if not k.startswith("__swanlab__")}  # SwanLab's system monitor
        assert not [k for k in ours if k.startswith("summary") or k.count("/") != 1 or "eval_" in k]
        assert not {"eval/epoch", "eval/tokens_seen"} & set(ours)
        # Generation metrics exist only at the final evaluation: summary values, not one-point charts.
        assert all(len(points) > 1 for points in ours.values()), {k: len(v) for k, v in ours.items()}


@pytest.mark.slow
def test_swanlab_runs_of_a_sweep_have_distinct_colours_and_flat_config_with_swept_keys_first(tracked_sweep):
    runs = swanlab_runs(tracked_sweep / "swanlog")
    assert len({run["color"] for run in runs.values()}) == 4
    db = sqlite3.connect(tracked_sweep / "swanlog" / "runs.swanlab")  # what the dashboard draws with
    assert len({light for (light,) in db.execute("select light from experiment")}) == 4
    db.close()
    for name, run in runs.items():
        config = run["config"]
        r, lr = (v.split("=")[1] for v in name.split(","))
        assert config["lora.r"]["value"] == int(r) and config["optim.lr"]["value"] == float(lr)
        assert sorted(config, key=lambda k: config[k]["sort"])[:2] == ["lora.r", "optim.lr"]  # swept keys first
        # ... also in the file, whose order the local dashboard's table columns follow; the summary next.
        assert list(config)[:2] == ["lora.r", "optim.lr"] and list(config)[2].startswith("summary.")
        assert not [k for k, v in config.items() if isinstance(v["value"], dict)]  # no nested group
        # The summary joins the config (no run summary in SwanLab); eval_loss is the last point of eval/loss.
        assert config["summary.status"]["value"] == "ok"
        assert config["summary.baseline_eval_loss"]["value"] > 0 and "summary.exact_match" in config
        assert "summary.eval_loss" not in config


@pytest.mark.slow
def test_wandb_offline_has_one_run_per_cell_grouped_by_sweep(tracked_sweep):
    runs = wandb_runs(tracked_sweep / "wandb_runs")
    assert sorted(runs) == CELLS
    for name, run in runs.items():
        assert run["group"] == "_".join(tracked_sweep.parts[-2:]) and run["tags"] == name.split(",")
        assert run["exit_code"] == 0  # ended as finished
        losses = [h["train/loss"] for h in run["history"] if "train/loss" in h]
        assert len(losses) == train_losses(tracked_sweep / name) == 4
        r, lr = (v.split("=")[1] for v in name.split(","))
        assert run["config"]["lora.r"] == int(r) and run["config"]["optim.lr"] == float(lr)  # flat keys
        summary = run["summary"]
        assert summary["eval/loss"] == artifacts.read_json(tracked_sweep / name / artifacts.SUMMARY)["eval_loss"]
        assert "best_eval_loss" in summary and "exact_match" in summary and summary["status"] == "ok"
        # No value under two names.
        assert not {"eval_loss", "eval/eval_loss", "perplexity", "summary/eval_loss"} & set(summary)


@pytest.mark.slow
def test_no_secret_from_the_environment_is_written_anywhere(tracked_sweep):
    leaked = [p for p in tracked_sweep.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_swanlab_watch_serves_both_runs(tracked_sweep):
    port = free_port()
    exe = Path(sys.executable).with_name("swanlab")
    server = subprocess.Popen([str(exe), "watch", str(tracked_sweep / "swanlog"), "-h", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        project = None
        for _ in range(150):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/project", timeout=2) as resp:
                    project = json.loads(resp.read())["data"]
                break
            except OSError:
                time.sleep(0.2)
        assert project is not None, "swanlab watch did not answer"
        experiments = {e["name"]: e["id"] for e in project["experiments"]}
        assert sorted(experiments) == CELLS
        # The colour each run is drawn in, and its config as the run table shows it.
        assert len({e["light"] for e in project["experiments"]}) == 4
        for e in project["experiments"]:
            r, lr = (v.split("=")[1] for v in e["name"].split(","))
            assert e["config"]["lora.r"]["value"] == int(r) and e["config"]["optim.lr"]["value"] == float(lr)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/experiment/{experiments[CELLS[0]]}") as resp:
            assert json.loads(resp.read())["data"]["config"]["lora.r"]["value"] == 4
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/experiment/{experiments[CELLS[-1]]}/tag/train/loss") as resp:
            series = json.loads(resp.read())["data"]
        assert series["sum"] == 4
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_tracker_that_raises_on_every_log_leaves_the_run_ok(tiny_model_dir, tmp_path, monkeypatch, caplog, request):
    import signal

    from hydra import compose, initialize_config_dir

    from ftsweep import tracking
    from ftsweep.cli import config_dir
    from ftsweep.run import Run

    def broken(self, metrics, step):
        raise OSError("disk full")

    monkeypatch.setattr(tracking.SwanLabBackend, "log", broken)
    # Python's own Ctrl-C handling, as in a terminal: a suite started in the background (`pytest ... &`) inherits
    # SIGINT ignored, and SwanLab's handler is then never installed or removed.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    overrides = [o for o in ARGS if not o.startswith("logger=")] + ["logger=swanlab"]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    summary = Run(cfg, tmp_path / "run", "run", overrides, None).execute()
    assert summary["status"] == "ok"
    assert train_losses(tmp_path / "run") == 4  # metrics.jsonl is complete
    warnings = [r.message for r in caplog.records if "tracker swanlab failed" in r.getMessage()]
    assert len(warnings) == 1  # one warning, then the tracker is off for this run

    # The switched-off SwanLab run was ended (as crashed), not left active: its Ctrl-C handler is gone, and the
    # next cell in this process starts its own SwanLab run (swanlab.init refuses while another is active).
    import swanlab

    assert not swanlab.has_run() and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    caplog.clear()
    assert Run(cfg, tmp_path / "run2", "run2", overrides, None).execute()["status"] == "ok"
    assert not [r for r in caplog.records if "tracker swanlab" in r.getMessage()], [r.getMessage() for r in caplog.records]
    assert len(list((tmp_path / "run2" / "swanlog").glob("run-*"))) == 1


# Both trackers, no samples: the cell of the tests that stop, fail and resume a run in this process.
TRACKED = [o for o in ARGS if not o.startswith("logger=")] + ["logger=swanlab_wandb", "eval.num_samples=0"]


def sigterm_in_step_3(step):
    """A training_step that sends this process SIGTERM as step 3 begins, as a scheduler would."""
    import os
    import signal

    def stopped_in_step_3(self, *args, **kwargs):
        if self.state.global_step == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, *args, **kwargs)

    return stopped_in_step_3


def test_a_stopped_or_failed_run_is_recorded_as_such_by_both_trackers(tiny_model_dir, tmp_path, monkeypatch, composed):
    """A run stopped by SIGTERM ends its SwanLab record as aborted and its W&B run with exit code 143 (128 + the
    signal, W&B's convention); a failed run as crashed, with its error, and exit code 1. Before, both were recorded
    as finished successfully."""
    from ftsweep import training
    from ftsweep.cli import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    cell = TRACKED
    step = training.SweepTrainer.training_step
    stopped_in_step_3 = sigterm_in_step_3(step)

    def fails_in_step_3(self, *args, **kwargs):
        if self.state.global_step == 2:
            raise RuntimeError("the GPU fell off the bus")
        return step(self, *args, **kwargs)

    for name, training_step in (("stopped", stopped_in_step_3), ("failed", fails_in_step_3)):
        monkeypatch.setattr(training.SweepTrainer, "training_step", training_step)
        assert train(composed(cell), tmp_path / name, name, cell)["status"] == {"stopped": "interrupted"}.get(name, name)

    swan = {**swanlab_runs(tmp_path / "stopped" / "swanlog"), **swanlab_runs(tmp_path / "failed" / "swanlog")}
    assert swan["stopped"]["state"] == "RUN_STATE_ABORTED"
    assert swan["failed"]["state"] == "RUN_STATE_CRASHED" and "the GPU fell off the bus" in swan["failed"]["error"]
    wb = {**wandb_runs(tmp_path / "stopped" / "wandb_runs"), **wandb_runs(tmp_path / "failed" / "wandb_runs")}
    assert wb["stopped"]["exit_code"] == 143 and wb["stopped"]["summary"]["status"] == "interrupted"
    assert wb["failed"]["exit_code"] == 1 and wb["failed"]["summary"]["status"] == "failed"


def test_a_resumed_run_continues_its_wandb_run_and_its_swanlab_charts_start_at_the_baseline(
        tiny_model_dir, tmp_path, monkeypatch, composed):
    """Stopped at step 3 of 4 and resumed: the W&B run continues under its id (offline, the two sessions' folders
    share it and `wandb sync` uploads them as one run), and the new session logs only the steps after the checkpoint.
    SwanLab's local mode cannot resume an experiment: the resumed one logs the stopped session's steps again from
    metrics.jsonl, so its charts are whole. Before, each tool held two unrelated runs, the second starting at step 4
    with no baseline."""
    from ftsweep import training
    from ftsweep.cli import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    cell = TRACKED
    step = training.SweepTrainer.training_step
    monkeypatch.setattr(training.SweepTrainer, "training_step", sigterm_in_step_3(step))
    first = train(composed(cell), tmp_path, "cell", cell)
    assert first["status"] == "interrupted"
    monkeypatch.setattr(training.SweepTrainer, "training_step", step)
    # A resume that fails before its trackers open (here: loading the adapter) keeps the ids for the next one.
    from ftsweep.run import Run

    with monkeypatch.context() as m:
        m.setattr(Run, "setup_adapter", lambda self: (_ for _ in ()).throw(RuntimeError("node lost")))
        lost = train(composed(cell), tmp_path, "cell", cell)
    assert lost["status"] == "failed" and lost["trackers"] == first["trackers"]
    second = train(composed(cell), tmp_path, "cell", cell)
    assert second["status"] == "ok" and second["resumed_from"] == "checkpoint-3"
    assert second["trackers"]["wandb"] == first["trackers"]["wandb"]

    lines = artifacts.read_metrics(tmp_path / artifacts.METRICS)
    train_steps = [r["step"] for r in lines if r["split"] == "train"]
    eval_steps = [r["step"] for r in lines if r["split"] == "eval"]
    assert train_steps == [1, 2, 3, 4] and eval_steps == [0, 2, 4]

    stopped, resumed = wandb_sessions(tmp_path / "wandb_runs")
    assert stopped["id"] == resumed["id"] == first["trackers"]["wandb"]
    assert (stopped["exit_code"], resumed["exit_code"]) == (143, 0)
    assert sorted({h["_step"] for h in resumed["history"]}) == [4]  # only what came after checkpoint-3
    assert {h["_step"] for h in stopped["history"]} == {0, 1, 2, 3}

    sessions = sorted((swanlab_run(p) for p in (tmp_path / "swanlog").glob("run-*/run-*.swanlab")),
                      key=lambda r: r["state"])
    assert [r["state"] for r in sessions] == ["RUN_STATE_ABORTED", "RUN_STATE_FINISHED"]
    whole = sessions[1]
    assert whole["id"] == second["trackers"]["swanlab"] != first["trackers"]["swanlab"]
    assert [p.step for p in whole["series"]["train/loss"]] == train_steps
    assert [p.step for p in whole["series"]["eval/loss"]] == eval_steps
    assert [p.value.number for p in whole["series"]["eval/loss"]] == pytest.approx([r["eval_loss"] for r in lines if r["split"] == "eval"])
    assert "resumed" in whole["description"]


def test_the_trackers_write_where_logger_dirs_say_and_get_the_test_numbers(tiny_model_dir, tmp_path, monkeypatch, composed):
    """logger.swanlab_dir / logger.wandb_dir move the local runs out of the run directory (they were read by nothing
    before); a run with data.test_path ends both records with its test_loss."""
    from ftsweep.cli import train

    monkeypatch.setenv("WANDB_MODE", "offline")
    records = [{"instruction": "Say hi.", "input": str(i), "output": f"hi {i}"} for i in range(40)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records[:5]))
    cell = [o for o in ARGS if not o.startswith(("logger=", "data."))] + [
        "logger=swanlab_wandb", "eval.num_samples=0", "data=alpaca", f"data.path={tmp_path / 'd.jsonl'}",
        "data.val_size=4", f"data.test_path={tmp_path / 't.jsonl'}",
        f"logger.swanlab_dir={tmp_path / 'swan'}", f"logger.wandb_dir={tmp_path / 'wb'}"]
    run_dir = tmp_path / "run"
    summary = train(composed(cell), run_dir, "cell", cell)
    assert summary["status"] == "ok"
    assert not (run_dir / artifacts.SWANLOG).exists() and not (run_dir / artifacts.WANDB_DIR).exists()
    swan = swanlab_runs(tmp_path / "swan")
    assert list(swan) == ["cell"] and swan["cell"]["state"] == "RUN_STATE_FINISHED"
    assert swan["cell"]["config"]["summary.test_loss"]["value"] == pytest.approx(summary["test_loss"])
    wb = wandb_runs(tmp_path / "wb")
    assert list(wb) == ["cell"] and wb["cell"]["summary"]["test_loss"] == pytest.approx(summary["test_loss"])
    # Overrides longer than W&B's 64-character tags (these paths) are shortened, not a reason to drop the tracker.
    tags = wb["cell"]["tags"]
    assert len(tags) == len(cell) and max(map(len, tags)) == 64
    assert f"data.test_path=…{str(tmp_path / 't.jsonl')[-48:]}" in tags and "data=alpaca" in tags


def test_a_wandb_tag_keeps_its_key_and_the_end_of_its_value():
    from ftsweep.tracking import wandb_tag

    assert wandb_tag("lora.r=8") == "lora.r=8"
    path = "data.path=/home/someone/projects/chat-experiments/2026/train_v2.jsonl"
    assert wandb_tag(path) == "data.path=…someone/projects/chat-experiments/2026/train_v2.jsonl" and len(wandb_tag(path)) == 64
    assert wandb_tag("x" * 70) == "x" * 63 + "…"
    assert wandb_tag("k" * 60 + "=value") == "k" * 60 + "=va…"  # no room for the value's end: cut at the limit


def test_ctrl_c_outside_training_steps_ends_the_swanlab_record_once_with_the_run_summary(tiny_model_dir, tmp_path,
                                                                                         monkeypatch, composed, caplog):
    """Ctrl-C during the final evaluation (generation can take minutes): the run records the stop and ends its SwanLab
    record as aborted with the summary values, once. SwanLab's own Ctrl-C handler would end the record first, without
    them, and the run's own finish would then fail with a warning."""
    import os
    import signal

    from ftsweep.cli import train
    from ftsweep.run import Run

    evaluate = Run.evaluate

    def ctrl_c_in_the_final_evaluation(self, final=False):
        if final:
            os.kill(os.getpid(), signal.SIGINT)
        return evaluate(self, final=final)

    monkeypatch.setattr(Run, "evaluate", ctrl_c_in_the_final_evaluation)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever ran pytest
    try:
        cell = [o for o in ARGS if not o.startswith("logger=")] + ["logger=swanlab"]
        summary = train(composed(cell), tmp_path / "run", "run", cell)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert summary["status"] == "interrupted"
    run = swanlab_runs(tmp_path / "run" / "swanlog")["run"]
    assert run["state"] == "RUN_STATE_ABORTED"
    assert run["config"]["summary.status"]["value"] == "interrupted", run["config"].get("summary.status")
    assert not [r.getMessage() for r in caplog.records if "tracker swanlab" in r.getMessage()]
