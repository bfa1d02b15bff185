"""Using a trained run: generate reproduces its samples, chat over stdin, merge and export, the web demo."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import FAST, regenerate_samples

from ftsweep import artifacts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir) -> Path:
    """One QLoRA run that learned enough to answer (lr 2e-3, 40 steps)."""
    from conftest import run_cli

    cwd = tmp_path_factory.mktemp("trained")
    proc = run_cli([*FAST, "optim.max_steps=40", "optim.lr=2e-3", "eval.num_samples=6", "eval.generation.max_new_tokens=12",
                    "eval.batch_size=16", "hydra.run.dir=run"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return cwd / "run"


def py(*args, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], input=stdin, capture_output=True, text=True, timeout=timeout)


def test_generate_reproduces_the_runs_greedy_samples(trained_run, tmp_path):
    out = tmp_path / "gen.jsonl"
    proc, again, samples = regenerate_samples(trained_run, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert again == samples and len(samples) == 6
    assert "metrics on 6 reference(s)" in proc.stdout
    metrics = json.loads(out.with_suffix(".metrics.json").read_text())["metrics"]
    summary = json.loads((trained_run / artifacts.SUMMARY).read_text())
    assert metrics["exact_match"] == pytest.approx(summary["task_metrics"]["exact_match"])
    rows = [json.loads(x) for x in out.read_text().splitlines()]  # samples.jsonl's per-example fields
    assert metrics["rougeL"] == pytest.approx(sum(r["rougeL"] for r in rows) / 6)


def test_generate_from_alpaca_records_renders_the_training_template(trained_run, tmp_path):
    test = tmp_path / "test.jsonl"
    test.write_text(json.dumps({"instruction": "Reverse the word.", "input": "stone", "output": "Reversed, stone is enots."}) + "\n")
    out = tmp_path / "gen.jsonl"
    proc = py("-m", "ftsweep.generate", str(trained_run), "--file", str(test), "--out", str(out), "--max-new-tokens", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(out.read_text())
    assert row["prompt"] == "<|im_start|>user\nReverse the word.\nstone<|im_end|>\n<|im_start|>assistant\n"
    assert row["reference"] == "Reversed, stone is enots." and isinstance(row["prediction"], str)


def test_generate_bad_input_is_one_line_exit_2(trained_run, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x"}\n{not json\n')
    for args, words in (([str(tmp_path), "--prompt", "hi"], "not a run directory"),
                        ([str(trained_run / "adapter"), "--prompt", "hi"], "pass the run directory itself"),
                        ([str(trained_run), "--file", str(tmp_path / "missing.jsonl")], "no such file"),
                        ([str(trained_run), "--file", str(tmp_path)], "not a regular file"),
                        ([str(trained_run), "--file", str(bad)], "line 2: not valid JSON")):
        proc = py("-m", "ftsweep.generate", *args, timeout=120)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr


def test_chat_answers_two_turns_from_stdin(trained_run):
    proc = py("-m", "ftsweep.chat", str(trained_run), "--max-new-tokens", "8",
              stdin="Reverse the word: stone\nAnd now: river\n/exit\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2  # one answer line per user turn; the second prompt carries the first exchange
    first = py("-m", "ftsweep.generate", str(trained_run), "--prompt", "Reverse the word: stone", "--max-new-tokens", "8",
               "--out", str(trained_run.parent / "first.jsonl"))
    assert first.stdout.splitlines()[0] == lines[0]  # turn 1 is the same greedy answer as a one-shot generation


def test_merged_export_matches_the_adapter_model(trained_run, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from ftsweep import infer, models

    out = tmp_path / "merged"
    proc = py("-m", "ftsweep.export", str(trained_run), str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    # The console is the tool's own line: no library load report, progress bar or deprecation warning
    # (a classifier's load report called its trained head "MISSING ... newly initialized").
    assert proc.stdout == f"merged model written to {out}\n" and proc.stderr == ""
    again = py("-m", "ftsweep.export", str(trained_run), str(out), timeout=120)
    assert again.returncode == 2 and "not empty" in again.stderr  # nothing already written is overwritten

    merged = AutoModelForCausalLM.from_pretrained(out)  # plain transformers
    cfg = infer.run_config(json.loads((trained_run / artifacts.MANIFEST).read_text()))
    tok = infer.load_tokenizer(cfg)
    ids = tok(["<|im_start|>user\nReverse the word.\nstone<|im_end|>\n<|im_start|>assistant\n"], return_tensors="pt")
    path = models.resolve_model_path(cfg.model)
    full = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    adapter_fp32 = PeftModel.from_pretrained(full, str(trained_run / "adapter")).eval()
    four_bit = infer.load_run(trained_run).model
    with torch.no_grad():
        a = merged(**ids).logits
        b = adapter_fp32(**ids).logits
        c = four_bit(**ids).logits
    # Merging is exact up to float32 rounding against the adapter on the same (full-precision) base.
    assert (a - b).abs().max().item() < 1e-4
    # Against the adapter on the 4-bit base the difference is the quantization error: bounded, not zero.
    diff = (a - c).abs().max().item()
    assert 0 < diff < 0.5 * a.abs().max().item()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gradio_demo_answers_one_request(trained_run):
    pytest.importorskip("gradio_client")
    from gradio_client import Client

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "ftsweep.demo", str(trained_run), "--port", str(port),
                               "--max-new-tokens", "8"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        client = None
        for _ in range(300):
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False)
                break
            except Exception:  # noqa: BLE001 - not up yet
                if server.poll() is not None:
                    raise AssertionError(server.stdout.read()[-2000:])
                time.sleep(0.3)
        assert client is not None, "the demo did not start"
        answer = client.predict("Reverse the word.\nstone", api_name="/chat")
        # Same template, same greedy decoding as the command-line generator.
        py("-m", "ftsweep.generate", str(trained_run), "--prompt", "Reverse the word.\nstone", "--max-new-tokens", "8",
           "--out", str(trained_run.parent / "direct.jsonl"))
        assert answer == json.loads((trained_run.parent / "direct.jsonl").read_text())["prediction"]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_prompts_greedy_answer_does_not_depend_on_the_prompts_batched_with_it(tiny_model_dir):
    """Samples, task metrics and `ftsweep.generate` batch prompts of different lengths: each answer must be the one
    the prompt gets alone (left padding, so every answer follows its prompt directly)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsweep import evaluation

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    side = tokenizer.padding_side
    prompts = ["Reverse the word: stone\n", "Hi\n", "Name three colours of the rainbow, one per line, then stop.\n", "2+2=\n"]
    generation = {"max_new_tokens": 8, "do_sample": False}
    alone = [evaluation.generate(model, tokenizer, [p], generation, batch_size=1)[0] for p in prompts]
    batched = evaluation.generate(model, tokenizer, prompts, generation, batch_size=4)
    assert len(set(alone)) > 1  # answers that differ by prompt, or the comparison shows nothing
    assert batched == alone
    assert tokenizer.padding_side == side  # the tokenizer is the run's: its training collator pads as before


def test_an_export_stopped_while_writing_leaves_no_model_directory(trained_run, tmp_path, monkeypatch):
    """Ctrl-C while the merged shards are written: OUT_DIR does not exist afterwards (no half a model that loads
    as one or blocks the next export), and nothing partial is left beside it."""
    from ftsweep import export

    def stopped_in_save(run_dir, dtype):
        class Merged:
            def save_pretrained(self, path, safe_serialization=True):
                (Path(path) / "model.safetensors").write_bytes(b"half a shard")
                raise KeyboardInterrupt
        return Merged(), None, None

    monkeypatch.setattr(export, "merge", stopped_in_save)
    out = tmp_path / "merged"
    assert export.main([str(trained_run), str(out)]) == 130
    assert not out.exists() and list(tmp_path.iterdir()) == []
