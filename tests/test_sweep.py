"""Sweeps through the real CLI: a grid, a bad cell, skip-finished, a widened grid, and resume after SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import FAST, run_printed, start_cli, train_lines, train_steps

from ftsweep import artifacts

pytestmark = pytest.mark.slow


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))}


def digests(sweep: Path) -> dict[str, str]:
    return {p.parent.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(sweep.glob("*/summary.json"))}


def test_a_bad_cell_fails_alone_and_the_sweep_exits_nonzero(cli, tmp_path):
    sweep = tmp_path / "sweep"
    # A fresh matplotlib config dir: the report is this machine's first, as on a new user's machine.
    proc = cli(["-m", "lora.r=8,-1", *FAST, "optim.max_steps=2", f"hydra.sweep.dir={sweep}"],
               env={"MPLCONFIGDIR": str(tmp_path / "mpl")})
    assert proc.returncode == 1
    assert "fontManager" not in proc.stdout + proc.stderr  # matplotlib's font-cache chatter stays off the console
    runs = summaries(sweep)
    assert runs["lora.r=8"]["status"] == "ok"
    bad = runs["lora.r=-1"]
    assert bad["status"] == "failed" and bad["error"]["type"] == "ConfigError"
    assert bad["error"]["message"] == "lora.r=-1: the rank must be >= 1 (e.g. lora.r=8)"
    # The exit names the failed run; the report still exists and lists both runs.
    assert "1 run(s) failed: lora.r=-1 (lora.r=-1: the rank must be >= 1" in proc.stderr
    report = (sweep / "report.md").read_text()
    assert "| `lora.r=-1` | failed | ConfigError: lora.r=-1: the rank must be" in report
    info = json.loads((sweep / "sweep.json").read_text())
    assert info["counts"]["ok"] == 1 and info["counts"]["failed"] == 1
    assert info["failed_runs"] == [{"run": "lora.r=-1", "reason": "lora.r=-1: the rank must be >= 1 (e.g. lora.r=8)"}]


def test_rerun_skips_finished_runs_and_a_wider_grid_runs_only_new_cells(cli, tmp_path):
    sweep = tmp_path / "sweep"
    grid = ["-m", "lora.r=8,16", "optim.lr=1e-4,3e-4", *FAST, "optim.max_steps=2", f"hydra.sweep.dir={sweep}"]
    first = cli(grid)
    assert first.returncode == 0, first.stderr[-2000:]
    names = sorted(summaries(sweep))
    assert names == ["lora.r=16,optim.lr=0.0001", "lora.r=16,optim.lr=0.0003", "lora.r=8,optim.lr=0.0001", "lora.r=8,optim.lr=0.0003"]
    before = digests(sweep)
    # The 2x2 report: 4 ranked rows, the effect of each swept key, a heatmap and the loss curves.
    report = (sweep / "report.md").read_text()
    assert sum(line.startswith(("| **★ 1**", "| 2 |", "| 3 |", "| 4 |")) for line in report.splitlines()) == 4
    assert "| `lora.r` | `8` |" in report and "| `optim.lr` | `0.0003` |" in report
    assert {p.name for p in (sweep / "plots").glob("*.png")} == {"effects.png", "heatmap.png", "interactions.png", "loss_curves.png"}

    start = time.monotonic()
    again = cli(grid)
    took = time.monotonic() - start
    assert again.returncode == 0 and took < 30
    assert digests(sweep) == before  # byte for byte
    assert json.loads((sweep / "sweep.json").read_text())["counts"]["skipped"] == 4
    assert again.stdout.count("skipped") >= 4

    wider = cli(["-m", "lora.r=8,16,32", "optim.lr=1e-4,3e-4", *FAST, "optim.max_steps=2", f"hydra.sweep.dir={sweep}"])
    assert wider.returncode == 0
    after = digests(sweep)
    assert {k: after[k] for k in before} == before and len(after) == 6
    counts = json.loads((sweep / "sweep.json").read_text())["counts"]
    assert counts["skipped"] == 4 and counts["ok"] == 2


def start_run(run_dir: Path | None, cwd: Path, steps: int, extra: tuple[str, ...] = ()) -> subprocess.Popen:
    """A single run; with no ``run_dir`` it writes where Hydra's default puts it (outputs/<date>/<time> under cwd)."""
    args = [*FAST, f"optim.max_steps={steps}", "train.save_steps=5", "train.logging_steps=1", "eval.every_n_steps=10",
            "optim.micro_batch_size=2", *extra, *([f"hydra.run.dir={run_dir}"] if run_dir else [])]
    return start_cli(args, cwd)


def kill_at(proc: subprocess.Popen, metrics: Path, step: int, timeout: float = 240) -> None:
    """SIGKILL the run once metrics.jsonl shows a train step >= step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        steps = train_steps(metrics)
        if steps and steps[-1] >= step:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before step {step}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for the run")


def test_runs_killed_at_random_steps_resume_without_lost_or_repeated_steps(tiny_model_dir, tmp_path):
    """Fault injection: SIGKILL twice at random steps; every re-run resumes from the last checkpoint."""
    run_dir, steps = tmp_path / "run", 40
    metrics = run_dir / artifacts.METRICS
    rng = random.Random(int(os.environ.get("FTSWEEP_FAULT_SEED", "7")))
    kills = sorted(rng.sample(range(7, 34), 2))
    resumed = []
    for kill_step in kills:
        proc = start_run(run_dir, tmp_path, steps)
        kill_at(proc, metrics, kill_step)
        summary = json.loads((run_dir / artifacts.SUMMARY).read_text())
        assert summary["status"] == "running"  # a kill never leaves a summary that says ok
        ckpts = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
        resumed.append(max(ckpts) if ckpts else None)
    proc = start_run(run_dir, tmp_path, steps)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads((run_dir / artifacts.SUMMARY).read_text())
    assert summary["status"] == "ok" and summary["steps"] == steps
    assert summary["resumed_from"] == f"checkpoint-{resumed[-1]}"
    records = artifacts.read_metrics(metrics)
    eval_steps = [r["step"] for r in records if r["split"] == "eval"]
    assert train_steps(metrics) == list(range(1, steps + 1))  # every step exactly once, in order
    assert eval_steps == [0, 10, 20, 30, 40]
    assert summary["baseline_eval_loss"] == records[0]["eval_loss"]
    # Token counts go on from where each resumed run stopped: they never fall back at a resume, and the
    # summary counts every step's tokens, not only those after the last resume.
    seen = [r["tokens_seen"] for r in records if r["split"] == "train"]
    assert all(b > a for a, b in zip(seen, seen[1:])), seen
    assert summary["tokens_seen"] == seen[-1]
    per_step = seen[-1] / steps
    assert seen[resumed[-1]] > resumed[-1] * per_step * 0.5  # the first line after the last resume counts the steps before it


def test_sigterm_saves_a_checkpoint_marks_interrupted_and_the_printed_command_resumes(tiny_model_dir, tmp_path):
    steps = 30
    proc = start_run(None, tmp_path, steps)  # the default, time-stamped run directory: the same command would start afresh
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        found = list(tmp_path.glob(f"outputs/*/*/{artifacts.METRICS}"))
        train = train_steps(found[0]) if found else []
        if train and train[-1] >= 7:  # past the checkpoint at step 5, before the one at 10
            break
        time.sleep(0.02)
    run_dir, metrics = found[0].parent, found[0]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "stopped by SIGTERM" in err, err  # 128 + 15
    summary = json.loads((run_dir / artifacts.SUMMARY).read_text())
    assert summary["status"] == "interrupted" and summary["error"]["type"] == "Interrupted"
    saved = max(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))
    assert saved >= 7  # the interrupt saved where training stood, not only the periodic checkpoint at 5

    resume = err.split("resume with: ", 1)[1].strip()  # pasted as a user would, a second later
    assert resume.endswith(f"hydra.run.dir={run_dir.resolve()}"), resume
    time.sleep(1.1)
    again = run_printed(resume, cwd=tmp_path, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [p.parent for p in tmp_path.glob(f"outputs/*/*/{artifacts.SUMMARY}")] == [run_dir], "the resume made a new run"
    summary = json.loads((run_dir / artifacts.SUMMARY).read_text())
    assert summary["status"] == "ok" and summary["resumed_from"] == f"checkpoint-{saved}"
    assert train_steps(metrics) == list(range(1, steps + 1))


def test_a_run_resumed_mid_epoch_trains_on_the_batches_the_uninterrupted_run_does(tiny_model_dir, tmp_path):
    """Length-grouped batches (data.group_by_length=true) resume in the order they had: after the checkpoint, every
    step's batch is the one the uninterrupted run trains on (tokens_seen equal at every step), with the same loss."""
    steps, grouped = 30, ("data.group_by_length=true",)

    whole = start_run(tmp_path / "whole", tmp_path, steps, grouped)
    whole.communicate(timeout=300)
    assert whole.returncode == 0
    proc = start_run(tmp_path / "resumed", tmp_path, steps, grouped)
    deadline = time.monotonic() + 240
    while max(train_steps(tmp_path / "resumed" / artifacts.METRICS), default=0) < 8:
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    again = start_run(tmp_path / "resumed", tmp_path, steps, grouped)
    again.communicate(timeout=300)
    summary = json.loads((tmp_path / "resumed" / artifacts.SUMMARY).read_text())
    assert summary["status"] == "ok" and summary["resumed_from"], summary.get("resumed_from")
    assert json.loads((tmp_path / "whole" / artifacts.SUMMARY).read_text())["auto"]["data.group_by_length"] is True

    a, b = train_lines(tmp_path / "whole"), train_lines(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    assert [a[s]["tokens_seen"] for s in a] == [b[s]["tokens_seen"] for s in a]
    # A signal inside a step stops after it (training.StopAtStepEnd), so the random state resumes where it was too.
    assert [b[s]["loss"] for s in a] == pytest.approx([a[s]["loss"] for s in a], rel=1e-6, abs=0)


def test_a_run_directory_another_process_trains_is_left_to_it(cli, tmp_path):
    """The same command started twice wrote one directory from two processes. Now the second leaves it alone with
    one line naming the process that has it; once that process is gone the command runs."""
    run = tmp_path / "run"
    holder = artifacts.lock_run(run)  # this test's process trains it, as far as ftsweep can tell
    proc = cli([*FAST, "optim.max_steps=2", f"hydra.run.dir={run}"])
    assert proc.returncode == 1
    errors = [x for x in proc.stderr.splitlines() if x.startswith("ftsweep: error:")]
    assert errors == [f"ftsweep: error: {run} is being trained by another process (pid {os.getpid()}): wait for it "
                      f"to finish, or stop it; the same command then skips or resumes this run (run dir: {run})"]
    assert not (run / artifacts.SUMMARY).exists() and not (run / artifacts.METRICS).exists()
    holder.close()
    again = cli([*FAST, "optim.max_steps=2", f"hydra.run.dir={run}"])
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((run / artifacts.SUMMARY).read_text())["status"] == "ok"
    assert artifacts.lock_holder(run) is None  # released when the run ended


def test_a_sweep_leaves_a_cell_another_process_trains_and_says_so(cli, tmp_path):
    sweep = tmp_path / "sweep"
    holder = artifacts.lock_run(sweep / "lora.r=4")
    artifacts.write_summary(sweep / "lora.r=4", {"status": artifacts.RUNNING})  # as the other process wrote it
    proc = cli(["-m", "lora.r=4,8", *FAST, "optim.max_steps=2", f"hydra.sweep.dir={sweep}"])
    holder.close()
    assert proc.returncode == 1
    runs = summaries(sweep)
    assert runs["lora.r=8"]["status"] == "ok" and runs["lora.r=4"] == {"status": "running"}  # untouched
    assert f"run lora.r=4 not started: {sweep / 'lora.r=4'} is being trained by another process (pid {os.getpid()})" \
        in proc.stdout + proc.stderr
    info = json.loads((sweep / "sweep.json").read_text())
    assert info["failed_runs"] == [{"run": "lora.r=4", "reason": f"running in another process (pid {os.getpid()})"}]


def test_a_cell_whose_data_file_changed_trains_again_instead_of_skipping(cli, tmp_path):
    """Records fixed or added in data.path after a sweep finished: the same command skipped every cell, and the
    report kept the old data's results."""
    path = tmp_path / "train.jsonl"
    rows = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(24)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["-m", "lora.r=4,8", *FAST, "data=alpaca", f"data.path={path}", "optim.max_steps=2",
            f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    assert cli(args).returncode == 0
    first = digests(tmp_path / "sweep")
    again = cli(args)
    assert again.returncode == 0 and digests(tmp_path / "sweep") == first  # unchanged data: both skipped
    path.write_text("".join(json.dumps(dict(r, output=f"{r['output']}!")) + "\n" for r in rows))
    changed = cli(args)
    assert changed.returncode == 0
    runs = summaries(tmp_path / "sweep")
    assert all(run["status"] == "ok" for run in runs.values()) and digests(tmp_path / "sweep").keys() == first.keys()
    assert all(digests(tmp_path / "sweep")[name] != first[name] for name in first)
    assert "its data files changed since it ran" in changed.stdout + changed.stderr
    # The old data's results are not lost: each cell's went to replaced/<config hash>/, adapter included.
    cell = tmp_path / "sweep" / "lora.r=4"
    old_hash = json.loads((cell / artifacts.SUMMARY).read_text())["config_hash"]
    kept = cell / artifacts.REPLACED / old_hash
    assert hashlib.sha256((kept / artifacts.SUMMARY).read_bytes()).hexdigest() == first["lora.r=4"]
    assert (kept / artifacts.ADAPTER / artifacts.ADAPTER_CONFIG).is_file() and (kept / artifacts.SAMPLES).is_file()
    assert f"run lora.r=4: its results from the earlier data are kept in {kept}" in changed.stdout + changed.stderr
    # Another config into the same directories, one that generates no samples: the earlier config's samples
    # and per-example losses do not stay beside the new results as if they were its; they are kept with its results.
    assert (cell / artifacts.SAMPLES).is_file()
    other = cli([*args, "eval.num_samples=0"])
    assert other.returncode == 0
    assert not (cell / artifacts.SAMPLES).exists()
    assert (cell / artifacts.HELD_OUT_LOSSES).is_file()  # written again by the new run
    new_hash = json.loads((cell / artifacts.SUMMARY).read_text())["config_hash"]
    assert new_hash != old_hash and (cell / artifacts.REPLACED / f"{old_hash}-2" / artifacts.SAMPLES).is_file()
    assert (f"run lora.r=4: a finished run of another config (config hash {old_hash}, now {new_hash}) was there; its "
            f"results are kept in {cell / artifacts.REPLACED / (old_hash + '-2')}") in other.stdout + other.stderr
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir() and p.name != artifacts.PLOTS) == ["lora.r=4", "lora.r=8"]
    assert "**2 runs** in 2 configurations: 2 ok." in (tmp_path / "sweep" / "report.md").read_text()  # none kept aside
