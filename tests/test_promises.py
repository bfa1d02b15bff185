"""What the README promises, each checked through the real CLI as a user meets it: out-of-memory retry,
the NaN stop, 4-bit fp4 and 8-bit training, class weights in the loss, HYDRA_FULL_ERROR=1."""

from __future__ import annotations

import collections
import json
import math
from pathlib import Path

import pytest
from conftest import FAST, classify_data

from ftsweep import artifacts

QUICK = [*FAST, "optim.max_steps=4", "eval.every_n_steps=0", "eval.num_samples=2", "train.save_steps=100"]


def the_run(root: Path) -> Path:
    (summary,) = root.glob("outputs/*/*/summary.json")
    return summary.parent


def summary_of(root: Path) -> dict:
    return json.loads((the_run(root) / artifacts.SUMMARY).read_text())


def error_lines(proc) -> list[str]:
    return [x for x in proc.stderr.splitlines() if x.startswith("ftsweep: error:")]


@pytest.mark.slow
def test_out_of_memory_retries_with_half_the_micro_batch_and_the_same_effective_batch(cli, tmp_path):
    # FTSWEEP_INJECT_OOM=1 raises a CUDA out-of-memory error at the first training step (a GPU-free stand-in).
    proc = cli([*QUICK, "optim.micro_batch_size=4", "optim.grad_accum=1"], env={"FTSWEEP_INJECT_OOM": "1"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = summary_of(tmp_path)
    assert summary["status"] == "ok" and summary["oom_retries"] == 1
    assert (summary["micro_batch_size"], summary["grad_accum"], summary["effective_batch"]) == (2, 2, 4)  # 4 x 1 = 2 x 2
    assert summary["steps"] == 4
    assert "retrying from the start with micro batch 2 x accumulation 2" in proc.stdout + proc.stderr
    train_steps = [r["step"] for r in artifacts.read_metrics(the_run(tmp_path) / artifacts.METRICS) if r["split"] == "train"]
    assert train_steps == sorted(set(train_steps))  # the failed attempt left no lines behind


@pytest.mark.slow
def test_an_out_of_memory_error_mid_run_retries_from_the_initial_adapter_as_a_run_at_half_the_micro_batch(
        tiny_model_dir, tmp_path, monkeypatch, composed, capfd):
    """The retry trains from step 0: from the adapter as it was before training and the random state training began
    with. Before, it went on from the adapter the failed attempt had trained (3 steps here), so the run trained
    3 + 8 steps and its losses were another run's (step 1: 5.5008 against 5.5935)."""
    from ftsweep.cli import train

    cell = [*FAST, "optim.max_steps=8", "train.logging_steps=1", "train.save_steps=100", "eval.every_n_steps=4",
            "eval.num_samples=0", "optim.lr=2e-3"]
    half = train(composed([*cell, "optim.micro_batch_size=2", "optim.grad_accum=2"]), tmp_path / "half", "half", cell)
    assert half["status"] == "ok"
    monkeypatch.setenv("FTSWEEP_INJECT_OOM", "4")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_SILENT", raising=False)  # its warnings are what the user would see
    tracked = [o for o in cell if o != "logger=none"] + ["logger=wandb"]
    capfd.readouterr()
    retried = train(composed([*tracked, "optim.micro_batch_size=4", "optim.grad_accum=1"]), tmp_path / "run", "run", tracked)
    assert retried["status"] == "ok" and retried["oom_retries"] == 1, retried.get("error")
    assert (retried["micro_batch_size"], retried["grad_accum"], retried["steps"]) == (2, 2, 8)

    def curve(run):
        lines = artifacts.read_metrics(run / artifacts.METRICS)
        return ([(r["step"], r["loss"]) for r in lines if r["split"] == "train"],
                [(r["step"], r["eval_loss"]) for r in lines if r["split"] == "eval"])

    (train_a, eval_a), (train_b, eval_b) = curve(tmp_path / "run"), curve(tmp_path / "half")
    assert [s for s, _ in train_a] == [s for s, _ in train_b] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [s for s, _ in eval_a] == [s for s, _ in eval_b] == [0, 4, 8]
    assert [x for _, x in train_a] == pytest.approx([x for _, x in train_b], rel=1e-5, abs=0)
    assert [x for _, x in eval_a] == pytest.approx([x for _, x in eval_b], rel=1e-5, abs=0)
    assert retried["eval_loss"] == pytest.approx(half["eval_loss"], rel=1e-5, abs=0)
    # The tracker's steps only grow: it keeps the failed attempt's steps 1-3 (equal to the retry's) and is not sent
    # them again, which W&B refused with a warning each.
    from test_tracking import wandb_sessions

    (session,) = wandb_sessions(tmp_path / "run" / "wandb_runs")
    charted = [(h["_step"], h["train/loss"]) for h in session["history"] if "train/loss" in h]
    assert [s for s, _ in charted] == [s for s, _ in train_a]
    assert [x for _, x in charted] == pytest.approx([x for _, x in train_a], rel=1e-5, abs=0)
    assert "less than the current step" not in "".join(capfd.readouterr())


@pytest.mark.slow
def test_out_of_memory_without_retry_fails_with_one_line_naming_the_run_dir(cli, tmp_path):
    proc = cli([*QUICK, "train.oom_retry=false"], env={"FTSWEEP_INJECT_OOM": "1"})
    assert proc.returncode == 1
    summary = summary_of(tmp_path)
    assert summary["status"] == "failed" and summary["error"]["type"] == "OutOfMemoryError"
    (line,) = error_lines(proc)
    assert "out of memory" in line and f"(run dir: {the_run(tmp_path)})" in line, line
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_nan_check_stops_a_diverging_run(cli, tmp_path):
    # lr 1e30: the first update throws the adapter's weights to ~1e30 and the loss becomes NaN right after.
    proc = cli([*QUICK, "optim.lr=1e30", "optim.max_grad_norm=0", "train.logging_steps=1"])
    assert proc.returncode == 1
    summary = summary_of(tmp_path)
    assert summary["status"] == "failed" and summary["error"]["type"] == "NonFiniteLoss", summary["error"]
    assert "lower optim.lr or check the data" in summary["error"]["message"]
    (line,) = error_lines(proc)
    assert "training loss is" in line and "(run dir: " in line
    assert not (the_run(tmp_path) / artifacts.ADAPTER).exists()  # nothing trained on garbage is saved as a result


@pytest.mark.slow
def test_without_nan_check_the_same_run_trains_on(cli, tmp_path):
    proc = cli([*QUICK, "optim.lr=1e30", "optim.max_grad_norm=0", "train.logging_steps=1", "train.nan_check=false"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = summary_of(tmp_path)
    assert summary["status"] == "ok" and summary["steps"] == 4
    losses = [r["loss"] for r in artifacts.read_metrics(the_run(tmp_path) / artifacts.METRICS) if r["split"] == "train"]
    # The diverged steps are logged as they are, not as a reassuring 0.0 (transformers' logging_nan_inf_filter).
    assert len(losses) == 4 and losses[0] > 1 and not math.isfinite(losses[-1]), losses


@pytest.mark.slow
@pytest.mark.parametrize("quant, layer", [("fp4", "Linear4bit"), ("int8", "Linear8bitLt")])
def test_fp4_and_int8_bases_train(cli, tmp_path, tiny_model_dir, quant, layer):
    proc = cli([*QUICK, f"quant={quant}", "optim.lr=2e-3", "optim.max_steps=6", "eval.every_n_steps=6"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = summary_of(tmp_path)
    assert summary["status"] == "ok" and summary["eval_loss"] < summary["baseline_eval_loss"]
    manifest = json.loads((the_run(tmp_path) / artifacts.MANIFEST).read_text())
    assert manifest["config"]["quant"]["name"] == quant
    # The base really was loaded in that format: the adapter wraps bitsandbytes layers of that kind.
    from hydra import compose, initialize_config_dir

    from ftsweep import models
    from ftsweep.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=[f"quant={quant}"])
    tok = models.load_tokenizer(cfg.model, str(tiny_model_dir))
    base = models.load_model(cfg.model, cfg.quant, cfg.task, tok, str(tiny_model_dir))
    assert type(base.model.layers[0].self_attn.q_proj).__name__ == layer
    if quant == "fp4":
        assert base.model.layers[0].self_attn.q_proj.weight.quant_state.quant_type == "fp4"


@pytest.mark.slow
def test_class_weights_enter_the_loss(cli, tmp_path):
    """The same first batch, the same initial weights: the step-1 train loss moves with task.class_weights,
    and equal weights give the plain mean."""
    path = classify_data(tmp_path)
    sweep = tmp_path / "sweep"
    weights = {"none": "null", "equal": "[1,1,1,1]", "skewed": "[1,10,10,10]"}
    # One sweep, three cells: the same seed, data and first batch in each; only the weights differ.
    proc = cli(["-m", *QUICK, "task=classify", "task.num_labels=4", "data=alpaca", "data.format=multiple_choice",
                f"data.path={path}", "data.val_size=8", "optim.max_steps=1", "train.logging_steps=1",
                f"task.class_weights={','.join(weights.values())}", f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    first = {}
    for name, value in weights.items():
        (metrics_file,) = [p for p in sweep.glob(f"*/{artifacts.METRICS}")
                           if json.loads((p.parent / artifacts.MANIFEST).read_text())["config"]["task"]["class_weights"]
                           == json.loads(value)]
        lines = artifacts.read_metrics(metrics_file)
        first[name] = (next(r["loss"] for r in lines if r["split"] == "train"),
                       next(r["eval_loss"] for r in lines if r["split"] == "eval" and r["step"] == 0))
        # Every held-out example is in samples.jsonl with its text, class and predicted class, and summary.json's
        # task metrics and answer_spread are those predictions'.
        rows = [json.loads(line) for line in (metrics_file.parent / artifacts.SAMPLES).read_text().splitlines()]
        summary = json.loads((metrics_file.parent / artifacts.SUMMARY).read_text())
        assert len(rows) == 8 and all(r["prompt"].startswith("Context: c") and "Option D: d" in r["prompt"] for r in rows)
        assert all(r["exact_match"] == (r["prediction"] == r["reference"]) for r in rows)
        assert summary["task_metrics"]["accuracy"] == pytest.approx(sum(r["exact_match"] for r in rows) / 8)
        held_out = json.loads((metrics_file.parent / artifacts.HELD_OUT_LOSSES).read_text())  # one cross-entropy each
        assert held_out["tokens"] == [1] * 8 and sum(held_out["loss_sums"]) / 8 == pytest.approx(summary["eval_loss"], rel=1e-5)
        predicted = collections.Counter(r["prediction"] for r in rows)
        assert summary["answer_spread"] == {"n": 8, "distinct": len(predicted), "top": predicted.most_common(1)[0][0],
                                            "top_count": predicted.most_common(1)[0][1],
                                            "reference_top_count": collections.Counter(r["reference"] for r in rows)
                                            .most_common(1)[0][1]}
    assert first["equal"][0] == pytest.approx(first["none"][0], rel=1e-5)
    assert abs(first["skewed"][0] - first["none"][0]) > 1e-3, first
    # The held-out loss before training is the plain cross-entropy, whatever the training weights.
    assert first["skewed"][1] == pytest.approx(first["none"][1], abs=1e-4)


@pytest.mark.parametrize("bad", [
    "lora.rr=8",  # refused while Hydra composes
    "data.path=nowhere.json",  # a failure inside a run: caught and recorded, and its traceback printed
])
def test_hydra_full_error_keeps_the_traceback(cli, tmp_path, bad):
    args = [*FAST, "data=alpaca", "data.path=x.json", bad]
    proc = cli(args, env={"HYDRA_FULL_ERROR": "1"}, timeout=300)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr, proc.stderr[-1500:]
    assert bad.split("=")[0 if bad.startswith("lora") else 1] in proc.stderr
    proc = cli(args, timeout=300)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert len(error_lines(proc)) == 1
