"""Ctrl-C and SIGTERM stop what the user stopped: the running cell checkpoints, no further cell starts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import FAST, run_printed, start_as_from_a_terminal, start_cli, train_lines, train_steps

pytestmark = pytest.mark.slow

CELLS = ["lora.r=4", "lora.r=8", "lora.r=16"]


def _sweep_args(sweep_dir: Path) -> list[str]:
    fast = [a for a in FAST if not a.startswith(("optim.max_steps", "train.save_steps", "train.logging_steps"))]
    return ["-m", *fast, "optim.max_steps=40", "train.save_steps=4", "train.logging_steps=1", "eval.every_n_steps=0",
            "lora.r=4,8,16", f"hydra.sweep.dir={sweep_dir}"]


def _signal_state(pid: int) -> str:
    """The kernel's view of a process's signals (hex masks): blocked, ignored, caught. Bit 1 (value 0x2) is SIGINT."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "no /proc"
    return " ".join(line.replace("\t", "") for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


# SIGTERM takes the same path with exit code 143: tests/test_sweep.py sends it to a single run.
@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130)])
def test_a_signal_stops_the_sweep_and_the_same_command_resumes_it(tmp_path, tiny_model_dir, sig, code):
    sweep_dir = tmp_path / "sweep"
    proc = start_cli(_sweep_args(sweep_dir), tmp_path, terminal=True)
    first = sweep_dir / CELLS[0] / "metrics.jsonl"
    deadline = time.time() + 240
    while max(train_steps(first), default=0) < 6:  # past the checkpoint at step 4
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "cell 1 never reached step 6"
        time.sleep(0.2)
    signals = _signal_state(proc.pid)
    proc.send_signal(sig)
    signalled_at = time.time()
    out, err = proc.communicate(timeout=240)

    # On a failure, everything that says where the signal went.
    seen = (f"exit {proc.returncode} {time.time() - signalled_at:.1f} s after the signal; train steps per cell: "
            f"{ {c: train_steps(sweep_dir / c / 'metrics.jsonl') for c in CELLS} }; signals before it: {signals}\n"
            f"--- stderr\n{err}\n--- stdout (end)\n{out[-3000:]}")
    assert proc.returncode == code, seen
    summary = json.loads((sweep_dir / CELLS[0] / "summary.json").read_text())
    assert summary["status"] == "interrupted", seen
    assert not (sweep_dir / CELLS[1]).exists() and not (sweep_dir / CELLS[2]).exists(), "a cell started after the stop"
    assert "not yet run: lora.r=8, lora.r=16" in err, seen
    resume_cmd = err.split("resume with: ", 1)[1].strip()
    assert resume_cmd.startswith("python -m ftsweep -m") and "lora.r=4,8,16" in resume_cmd, err
    assert f"hydra.sweep.dir={sweep_dir.resolve()}" in resume_cmd, "the printed command must resume this sweep, not start a new one"
    assert "failed" not in err.lower(), err  # interrupted is not failed
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["counts"]["interrupted"] == 1 and record["counts"]["failed"] == 0

    # The printed command, as a user would paste it, resumes the same sweep.
    again = run_printed(resume_cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    for cell in CELLS:
        assert json.loads((sweep_dir / cell / "summary.json").read_text())["status"] == "ok", cell
    resumed = json.loads((sweep_dir / CELLS[0] / "summary.json").read_text())
    assert resumed["resumed_from"] and resumed["resumed_from"].startswith("checkpoint-")
    assert train_steps(first) == list(range(1, 41)), "every step once, none lost or repeated"


def test_sigterm_between_cells_stops_the_sweep_with_its_resume_command(tmp_path, tiny_model_dir):
    """Between cells no run has its own handler: the CLI's turns SIGTERM into the same stop (before, the
    process died at once with no word of what was left)."""
    sweep_dir = tmp_path / "sweep"
    proc = start_cli(["-m", *FAST, "eval.every_n_steps=0", "lora.r=4,8,16", f"hydra.sweep.dir={sweep_dir}"], tmp_path)
    first = sweep_dir / CELLS[0] / "summary.json"
    deadline = time.time() + 240
    while not (first.exists() and json.loads(first.read_text() or "{}").get("status") == "ok"):
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "cell 1 never finished"
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # the next cell is being launched, or has only just begun
    out, err = proc.communicate(timeout=240)

    assert proc.returncode == 143, f"exit {proc.returncode}\n--- stderr\n{err}\n--- stdout\n{out[-2000:]}"
    assert err.startswith("ftsweep: stopped by SIGTERM") and "Traceback" not in err, err
    assert "lora.r=16" in err.split("not yet run: ", 1)[1].split(";")[0], err
    record = json.loads((sweep_dir / "sweep.json").read_text())
    assert record["counts"]["ok"] == 1 and record["counts"]["failed"] == 0 and record["failed_runs"] == [], record["counts"]
    resume_cmd = err.split("resume with: ", 1)[1].strip()
    again = run_printed(resume_cmd, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [json.loads((sweep_dir / c / "summary.json").read_text())["status"] for c in CELLS] == ["ok"] * 3


def test_a_stop_after_the_run_finished_leaves_it_ok_and_stops_what_comes_next(tiny_model_dir, tmp_path, monkeypatch, composed):
    """Ctrl-C while a finished run tidies up (summary.json already says ok, the checkpoints are being removed)
    is for what comes next: the run stays ok, with its adapter, and the interrupt goes on to stop the sweep."""
    import shutil

    from ftsweep.cli import train

    remove = shutil.rmtree

    def ctrl_c_while_tidying(path, *args, **kwargs):
        if Path(path).name == "checkpoints":
            raise KeyboardInterrupt
        remove(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", ctrl_c_while_tidying)
    cell = [*FAST, "eval.every_n_steps=0", "eval.num_samples=1"]
    with pytest.raises(KeyboardInterrupt):
        train(composed(cell), tmp_path / "run", "run", cell)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["steps"] == 6, summary.get("status")
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").exists()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_once_a_stop_is_recorded_another_signal_ends_the_process_at_once_with_its_code(sig, code):
    """A second Ctrl-C while the exit runs (atexit hooks, tracker shutdown) ends it with the stop's code, instead of
    a traceback from whichever hook it lands in."""
    script = ("import os, signal, sys, time\nfrom ftsweep import runtime\n"
              f"runtime.exit_at_next_signal({code})\nprint('recorded', flush=True)\n"
              f"os.kill(os.getpid(), {int(sig)})\ntime.sleep(30)\nprint('not stopped')")
    started = time.time()
    proc = start_as_from_a_terminal([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (code, "recorded\n", "")
    assert time.time() - started < 10


def _signal_inside_step(monkeypatch, at_call: int, signals: int, gap_s: float = 0.0) -> None:
    """SIGTERM ``signals`` times, ``gap_s`` apart, from inside the ``at_call``-th training step, after its forward and
    backward (its dropout draws spent) and before the optimizer steps: where a stop lands most of the time, since
    steps are most of the time."""
    from ftsweep import training

    step, calls = training.SweepTrainer.training_step, []

    def training_step(self, *args, **kwargs):
        loss = step(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == at_call:
            for n in range(signals):
                if n:
                    time.sleep(gap_s)
                os.kill(os.getpid(), signal.SIGTERM)
        return loss

    monkeypatch.setattr(training.SweepTrainer, "training_step", training_step)


def _signal_in_evaluation(monkeypatch, at_call: int) -> None:
    """SIGTERM from inside the ``at_call``-th evaluation of the run, before it runs: between training steps."""
    from ftsweep.run import Run

    evaluate, calls = Run.evaluate, []

    def evaluate_after_a_signal(self, final=False):
        calls.append(1)
        if len(calls) == at_call:
            os.kill(os.getpid(), signal.SIGTERM)
        return evaluate(self, final=final)

    monkeypatch.setattr(Run, "evaluate", evaluate_after_a_signal)


@pytest.mark.parametrize("step, evals_before", [(5, [0, 2, 4]), (4, [0, 2])])
def test_a_signal_inside_a_step_stops_after_it_and_the_resumed_run_trains_as_if_never_stopped(
        tiny_model_dir, tmp_path, monkeypatch, composed, caplog, step, evals_before):
    """The stop waits for the step to complete: the checkpoint is at that step with its random state, and the resumed
    run's losses equal the uninterrupted run's at every step (raised at once, the checkpoint was the step before,
    with this step's dropout draws already spent, and the resumed losses differed). A step due for an evaluation
    (step 4 here) stops without it, and the resumed run evaluates there first, as the uninterrupted run did: the
    curve has that point, and the evaluation's random draws come where they came. Before, the point was missing and
    every step after it trained on other dropout masks (a loss 5e-4 off)."""
    from ftsweep import artifacts
    from ftsweep.cli import train

    cell = [*FAST, "optim.max_steps=8", "train.logging_steps=1", "train.save_steps=100", "eval.every_n_steps=2",
            "eval.num_samples=0"]
    assert train(composed(cell), tmp_path / "whole", "whole", cell)["status"] == "ok"

    _signal_inside_step(monkeypatch, at_call=step, signals=1)
    stopped = train(composed(cell), tmp_path / "run", "run", cell)
    assert stopped["status"] == "interrupted", stopped.get("error")
    assert f"run: stopping when step {step} is complete (send SIGTERM again to stop at once)" in caplog.text
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == [f"checkpoint-{step}"], checkpoints
    state = json.loads((tmp_path / "run" / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").read_text())
    assert state["global_step"] == step
    assert sorted(train_lines(tmp_path / "run")) == list(range(1, step + 1)), f"step {step} ran to its end, its loss logged"

    def evals(run):
        return [r["step"] for r in artifacts.read_metrics(run / artifacts.METRICS) if r.get("split") == "eval"]

    assert evals(tmp_path / "run") == evals_before

    monkeypatch.undo()
    resumed = train(composed(cell), tmp_path / "run", "run", cell)
    assert resumed["status"] == "ok" and resumed["resumed_from"] == f"checkpoint-{step}", resumed.get("resumed_from")
    whole, again = train_lines(tmp_path / "whole"), train_lines(tmp_path / "run")
    assert sorted(again) == list(range(1, 9))
    assert [again[s]["loss"] for s in whole] == pytest.approx([whole[s]["loss"] for s in whole], rel=1e-6, abs=0)
    assert resumed["eval_loss"] == pytest.approx(json.loads((tmp_path / "whole" / "summary.json").read_text())["eval_loss"],
                                                 rel=1e-6, abs=0)
    assert evals(tmp_path / "run") == evals(tmp_path / "whole") == [0, 2, 4, 6, 8]


# 14 steps with the final ranks fixed for the last 4 (tfinal): stopped while the budget shrinks (step 5) the resumed
# run needs the importance averages; stopped once the ranks are fixed (step 12), the rank pattern they chose.
@pytest.mark.parametrize("stop_at", [5, 12])
def test_a_resumed_adalora_run_prunes_as_the_uninterrupted_run_does(tiny_model_dir, tmp_path, monkeypatch, composed,
                                                                    stop_at):
    """AdaLoRA keeps every rank of the model it trains (pruned ones are masked, and can come back), and PEFT saves
    the adapter trimmed to the ranks of the moment: resuming from a checkpoint failed with a size mismatch. It also
    chooses the masks from moving averages of each singular value's importance, which PEFT keeps in memory only:
    resumed without them, the masks, the losses and the saved adapter's ranks were another run's."""
    from ftsweep.cli import train

    cell = [*FAST, "lora=adalora", "quant=none", "optim.max_steps=14", "optim.lr=5e-3", "+lora.extra.tfinal=4",
            "train.logging_steps=1", "train.save_steps=100", "eval.every_n_steps=0", "eval.num_samples=0"]
    assert train(composed(cell), tmp_path / "whole", "whole", cell)["status"] == "ok"
    _signal_inside_step(monkeypatch, at_call=stop_at, signals=1)
    assert train(composed(cell), tmp_path / "run", "run", cell)["status"] == "interrupted"
    monkeypatch.undo()
    resumed = train(composed(cell), tmp_path / "run", "run", cell)
    assert resumed["status"] == "ok" and resumed["resumed_from"] == f"checkpoint-{stop_at}", resumed.get("error")

    def ranks(run):
        pattern = json.loads((run / "adapter" / "adapter_config.json").read_text())["rank_pattern"]
        return {name: sum(kept) for name, kept in pattern.items()}

    assert ranks(tmp_path / "run") == ranks(tmp_path / "whole")
    whole, again = train_lines(tmp_path / "whole"), train_lines(tmp_path / "run")
    assert [again[s]["loss"] for s in range(1, 15)] == pytest.approx([whole[s]["loss"] for s in range(1, 15)],
                                                                     rel=1e-6, abs=0)


def test_a_signal_during_an_evaluation_between_steps_stops_before_the_next_step_as_if_never_stopped(
        tiny_model_dir, tmp_path, monkeypatch, composed, caplog):
    """Between steps the evaluation under way completes (its data loader draws from the global random state) and
    the next step does not begin: the resumed run's losses equal the uninterrupted run's. Raised at once, the
    checkpoint had the random state from before the evaluation's draw, and the resumed losses differed."""
    from ftsweep.cli import train

    cell = [*FAST, "optim.max_steps=8", "train.logging_steps=1", "train.save_steps=100", "eval.every_n_steps=2",
            "eval.num_samples=0"]
    assert train(composed(cell), tmp_path / "whole", "whole", cell)["status"] == "ok"

    _signal_in_evaluation(monkeypatch, at_call=3)  # the baseline, step 2, step 4
    assert train(composed(cell), tmp_path / "run", "run", cell)["status"] == "interrupted"
    assert "run: stopping before step 5 (send SIGTERM again to stop at once)" in caplog.text
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["checkpoint-4"]
    from ftsweep import artifacts

    evals = [r["step"] for r in artifacts.read_metrics(tmp_path / "run" / artifacts.METRICS) if r.get("split") == "eval"]
    assert evals == [0, 2, 4], "the evaluation under way completed"

    monkeypatch.undo()
    resumed = train(composed(cell), tmp_path / "run", "run", cell)
    assert resumed["status"] == "ok" and resumed["resumed_from"] == "checkpoint-4"
    whole, again = train_lines(tmp_path / "whole"), train_lines(tmp_path / "run")
    assert [again[s]["loss"] for s in whole] == pytest.approx([whole[s]["loss"] for s in whole], rel=1e-6, abs=0)


@pytest.mark.parametrize("gap_s, stopped_after", [(1.2, 4), (0.0, 5)])
def test_a_second_signal_inside_a_step_stops_at_once_unless_it_is_the_same_stop_passed_on(
        tiny_model_dir, tmp_path, monkeypatch, composed, gap_s, stopped_after):
    """The user who asks twice does not wait for the step: the run stops where it is, checkpointed at the last
    complete step. A second signal within a second of the first is the same stop passed on (torchrun sends each
    worker its own after the terminal's): the step still completes."""
    from ftsweep.cli import train

    cell = [*FAST, "optim.max_steps=8", "train.logging_steps=1", "train.save_steps=100", "eval.every_n_steps=0",
            "eval.num_samples=0"]
    _signal_inside_step(monkeypatch, at_call=5, signals=2, gap_s=gap_s)
    stopped = train(composed(cell), tmp_path / "run", "run", cell)
    assert stopped["status"] == "interrupted" and stopped["error"]["message"] == "signal 15", stopped.get("error")
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == [f"checkpoint-{stopped_after}"]
    assert sorted(train_lines(tmp_path / "run")) == list(range(1, stopped_after + 1))


@pytest.mark.parametrize("how", ["periodic checkpoint", "stop inside a step", "stop between steps"])
def test_a_resumed_run_counts_every_step_once_whatever_the_logging_interval(
        tiny_model_dir, tmp_path, monkeypatch, composed, how):
    """Train lines every 3 steps, a checkpoint at step 4 or 5: the checkpoint's step gets a line of its own, so the
    resumed run restores the tokens seen up to it and its mean train loss covers every step. Before, the steps since
    the last line were in no line: the resumed run counted their tokens nowhere (330 fewer at a checkpoint at step
    10 with lines every 3 steps), and its train_loss was transformers' mean over the steps after the resume only
    (5.3695 against 5.4483)."""
    import shutil

    from ftsweep import artifacts
    from ftsweep.cli import train

    cell = [*FAST, "optim.max_steps=8", "train.logging_steps=3", "train.save_steps=100", "eval.every_n_steps=2",
            "eval.num_samples=0"]
    whole = train(composed(cell), tmp_path / "whole", "whole", cell)
    assert whole["status"] == "ok"
    assert sorted(train_lines(tmp_path / "whole")) == [3, 6, 8], "the last step has a line too"
    run = tmp_path / "run"
    if how == "periodic checkpoint":  # the run killed after its checkpoint at step 4
        kept = [*(a for a in cell if not a.startswith("train.save_steps")), "train.save_steps=4",
                "train.keep_checkpoints=true"]
        assert train(composed(kept), run, "run", kept)["status"] == "ok"
        shutil.rmtree(run / "checkpoints" / "checkpoint-8")
        summary = json.loads((run / artifacts.SUMMARY).read_text())
        (run / artifacts.SUMMARY).write_text(json.dumps({**summary, "status": artifacts.INTERRUPTED}))
        cell = kept
        step = 4
    elif how == "stop inside a step":
        _signal_inside_step(monkeypatch, at_call=5, signals=1)
        assert train(composed(cell), run, "run", cell)["status"] == "interrupted"
        step = 5
    else:
        _signal_in_evaluation(monkeypatch, at_call=3)  # the baseline, step 2, step 4
        assert train(composed(cell), run, "run", cell)["status"] == "interrupted"
        step = 4
    lines = {s: r for s, r in train_lines(run).items() if s <= step}
    assert sorted(lines) == [3, step]
    before = max(r["time"] for r in artifacts.read_metrics(run / artifacts.METRICS) if r["step"] <= step)
    monkeypatch.undo()

    resumed = train(composed(cell), run, "run", cell)
    assert resumed["status"] == "ok" and resumed["resumed_from"] == f"checkpoint-{step}"
    assert resumed["tokens_seen"] == whole["tokens_seen"]
    assert resumed["train_loss"] == pytest.approx(whole["train_loss"], rel=1e-6)
    a, b = train_lines(tmp_path / "whole"), train_lines(run)
    assert b[8]["tokens_seen"] == a[8]["tokens_seen"] and b[8]["loss"] == pytest.approx(a[8]["loss"], rel=1e-6)
    # The clock goes on from the checkpoint's line: times rise through the resume, and the wall time counts both
    # sessions (before, the resumed session's lines started again near 0 s).
    times = [r["time"] for r in artifacts.read_metrics(run / artifacts.METRICS)]
    assert times == sorted(times) and min(t for t in times if t > before) > before
    assert resumed["wall_seconds"] > before + resumed["train_seconds"]
    # The mean over every step, from the lines: (3 x line 3 + 3 x line 6 + 2 x line 8) / 8.
    assert whole["train_loss"] == pytest.approx((3 * a[3]["loss"] + 3 * a[6]["loss"] + 2 * a[8]["loss"]) / 8, rel=1e-9)


def test_evaluations_at_each_epochs_end_come_before_its_checkpoint_so_a_resume_from_it_trains_as_if_never_stopped(
        tiny_model_dir, tmp_path, composed):
    """eval.per_epoch: 16 examples / 4 per step = 4 steps an epoch, 3 epochs; the held-out set is evaluated after
    steps 4 and 8 (the last step is the final evaluation's), each before that step's checkpoint. A run resumed from
    the checkpoint at step 4 then trains steps 5-12 on the dropout masks the run never stopped did. Before, the
    epoch's evaluation ran after its step's checkpoint was saved, and the resumed run's steps drew other masks."""
    import shutil

    from ftsweep import artifacts
    from ftsweep.cli import train

    cell = [*(a for a in FAST if not a.startswith(("optim.max_steps", "data.num_records", "eval.every_n_steps"))),
            "optim.max_steps=-1", "optim.epochs=3", "data.num_records=24", "eval.every_n_steps=0", "eval.per_epoch=true",
            "eval.num_samples=0", "train.logging_steps=1"]
    whole = train(composed(cell), tmp_path / "whole", "whole", cell)
    assert whole["status"] == "ok"

    def evals(run):
        return [r["step"] for r in artifacts.read_metrics(run / artifacts.METRICS) if r.get("split") == "eval"]

    assert evals(tmp_path / "whole") == [0, 4, 8, 12]

    run = tmp_path / "run"  # the run killed after its checkpoint at step 4
    kept = [*(a for a in cell if not a.startswith("train.save_steps")), "train.save_steps=4", "train.save_total_limit=3",
            "train.keep_checkpoints=true"]
    assert train(composed(kept), run, "run", kept)["status"] == "ok"
    for step in (8, 12):
        shutil.rmtree(run / "checkpoints" / f"checkpoint-{step}")
    summary = json.loads((run / artifacts.SUMMARY).read_text())
    (run / artifacts.SUMMARY).write_text(json.dumps({**summary, "status": artifacts.INTERRUPTED}))

    resumed = train(composed(kept), run, "run", kept)
    assert resumed["status"] == "ok" and resumed["resumed_from"] == "checkpoint-4"
    a, b = train_lines(tmp_path / "whole"), train_lines(run)
    assert sorted(b) == sorted(a) == list(range(1, 13))
    assert [b[s]["loss"] for s in a] == pytest.approx([a[s]["loss"] for s in a], rel=1e-6, abs=0)
    assert evals(run) == [0, 4, 8, 12]
