"""One run through the real CLI: QLoRA on the tiny model, the run directory, adapter reload, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST, REPO

from ftsweep import artifacts

SUMMARY_KEYS = {"status", "eval_loss", "baseline_eval_loss", "train_loss", "perplexity", "trainable_params",
                "total_params", "tokens_per_second", "wall_seconds", "peak_memory_bytes", "config_hash"}


def only_run_dir(root: Path) -> Path:
    dirs = [p.parent for p in root.glob("outputs/*/*/summary.json")]
    assert len(dirs) == 1, dirs
    return dirs[0]


@pytest.fixture(scope="module")
def qlora_run(tmp_path_factory, tiny_model_dir):
    """One QLoRA nf4 run with few steps, shared by the tests that read its files."""
    from conftest import run_cli

    cwd = tmp_path_factory.mktemp("qlora")
    # lr 2e-3 so that 12 steps move the loss clearly; the default (3e-4, 150 steps) is what the README times.
    proc = run_cli([*FAST, "optim.max_steps=12", "optim.lr=2e-3", "train.progress=true"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return proc, only_run_dir(cwd)


def test_qlora_run_writes_an_ok_run_directory(qlora_run):
    proc, run_dir = qlora_run
    summary = json.loads((run_dir / artifacts.SUMMARY).read_text())
    assert SUMMARY_KEYS <= summary.keys()
    assert summary["status"] == "ok" and summary["error"] is None
    assert summary["eval_loss"] < summary["baseline_eval_loss"]  # it learned something in 12 steps
    assert summary["trainable_params"] == 32_768  # r=8 on all 7 linear layers x 2 blocks of the tiny model
    assert summary["total_params"] > summary["trainable_params"]
    assert summary["steps"] == 12 and summary["tokens_per_second"] > 0
    # a run that was not resumed: its rate is all its tokens over its training seconds (2 decimals)
    # train_seconds is rounded to 0.01 s, and 12 tiny steps take about 0.1 s: the rate lies within that rounding.
    seconds = summary["train_seconds"]
    assert summary["tokens_seen"] / (seconds + 0.005) <= summary["tokens_per_second"] <= summary["tokens_seen"] / (seconds - 0.005)

    # metrics.jsonl: baseline at step 0, evaluation every 3 steps, train records every 2 steps and at each
    # checkpoint (every 3 steps).
    records = artifacts.read_metrics(run_dir / artifacts.METRICS)
    eval_steps = [r["step"] for r in records if r["split"] == "eval"]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert eval_steps[0] == 0 and eval_steps[-1] == 12 and 3 in eval_steps
    assert train_steps == sorted(set(train_steps)) and train_steps[:4] == [2, 3, 4, 6]
    assert all(r["loss"] > 0 for r in records if r["split"] == "train")

    # The manifest carries the resolved config and the same hash as the summary.
    man = json.loads((run_dir / artifacts.MANIFEST).read_text())
    assert man["config_hash"] == summary["config_hash"]
    assert man["config"]["quant"]["name"] == "nf4" and man["config"]["lora"]["r"] == 8

    # samples.jsonl: one greedy generation per held-out prompt asked for.
    samples = [json.loads(x) for x in (run_dir / artifacts.SAMPLES).read_text().splitlines()]
    assert len(samples) == 4 and {"prompt", "reference", "prediction", "exact_match"} <= samples[0].keys()
    assert "exact_match" in summary["task_metrics"]
    # Each sample carries its own rougeL (the report pairs runs over them); the summary's is their mean.
    assert summary["task_metrics"]["rougeL"] == pytest.approx(sum(x["rougeL"] for x in samples) / 4)
    assert summary["answer_spread"]["n"] == 4 and summary["answer_spread"]["top_count"] == max(
        sum(s["prediction"].strip() == x["prediction"].strip() for s in samples) for x in samples)

    # held_out_losses.json: the final evaluation example by example; eval_loss is their token-weighted mean.
    held_out = json.loads((run_dir / artifacts.HELD_OUT_LOSSES).read_text())
    assert held_out["step"] == 12 and len(held_out["loss_sums"]) == len(held_out["tokens"]) > 4
    assert sum(held_out["loss_sums"]) / sum(held_out["tokens"]) == pytest.approx(summary["eval_loss"], rel=1e-6)

    # Adapter in safetensors only; checkpoints pruned at the end.
    assert (run_dir / "adapter" / "adapter_model.safetensors").exists()
    assert not list((run_dir / "adapter").glob("*.bin"))
    assert not (run_dir / artifacts.CHECKPOINTS).exists()

    # Console: a progress bar while training, then one line with the numbers and the run directory.
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("ok | eval_loss") and str(run_dir.name) in last


def test_adapter_reloads_with_plain_peft_in_a_fresh_process(qlora_run, tiny_model_dir):
    _, run_dir = qlora_run
    summary = json.loads((run_dir / artifacts.SUMMARY).read_text())
    script = f"""
import torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
from peft import PeftModel
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.float32)
base = AutoModelForCausalLM.from_pretrained({str(tiny_model_dir)!r}, quantization_config=q)
model = PeftModel.from_pretrained(base, {str(run_dir / 'adapter')!r}, is_trainable=True)
print(type(base.model.layers[0].self_attn.q_proj.base_layer).__name__)
print(sum(p.numel() for p in model.parameters() if p.requires_grad))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    linear_type, trainable = out.stdout.split()[-2:]
    assert linear_type == "Linear4bit"
    assert int(trainable) == summary["trainable_params"]


def test_quant_none_run_is_ok(cli, tmp_path):
    # lr 2e-3 (as the QLoRA run above): 6 steps lower the held-out loss, so "it learned" is a strict check.
    proc = cli([*FAST, "quant=none", "optim.max_steps=6", "optim.lr=2e-3", "eval.every_n_steps=6"])
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((only_run_dir(tmp_path) / artifacts.SUMMARY).read_text())
    assert summary["status"] == "ok" and summary["eval_loss"] < summary["baseline_eval_loss"]
    man = json.loads((only_run_dir(tmp_path) / artifacts.MANIFEST).read_text())
    assert man["config"]["quant"]["name"] == "none"


def test_learned_tokens_are_exactly_the_response_and_end_token(tiny_model_dir):
    """Label masking on the tiny model's chat template: decode the learned span and compare it to the response."""
    from hydra import compose, initialize_config_dir
    from transformers import AutoTokenizer

    from ftsweep import data
    from ftsweep.cli import config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        cfg = compose("config", overrides=["data.num_records=20", "data.val_size=4"])
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    bundle = data.prepare(cfg.data, cfg.task, tok, cfg.model)
    records = data.read_records(cfg.data)
    responses = {r["output"] for r in records}
    for row in bundle.train:
        ids, labels = row["input_ids"], row["labels"]
        learned = [i for i, lab in zip(ids, labels) if lab != -100]
        first = next(k for k, lab in enumerate(labels) if lab != -100)
        end = first + len(learned)
        # One contiguous learned span, whose labels are its own input ids; after it only the template's newline.
        assert labels[first:end] == ids[first:end]
        assert tok.decode(ids[end:]) == "\n"
        text = tok.decode(learned)
        assert text.endswith("<|im_end|>") and text[: -len("<|im_end|>")] in responses
        # The prompt (everything before) ends with the assistant header, which is not learned.
        assert tok.decode(ids[:first]).endswith("<|im_start|>assistant\n")


def test_cfg_job_of_a_7b_model_prints_config_offline(cli):
    proc = cli(["model=qwen2.5-7b-instruct", "--cfg", "job"], timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "name_or_path: Qwen/Qwen2.5-7B-Instruct" in proc.stdout
    assert "quant_type: nf4" in proc.stdout


COMPOSE_ERRORS = ("lora.rr=", "optim.lr=abc", "model=foo", "lora=nope")


@pytest.mark.parametrize(
    "args, words",
    [
        (["lora.rr=8"], "lora.rr"),
        (["optim.lr=abc"], "optim.lr=abc"),
        (["model=foo"], "model=foo"),
        (["lora=nope"], "lora=nope"),
        (["lora.r=-1"], "lora.r"),
        (["data=alpaca"], "data.path"),
        (["data=alpaca", "data.path=missing.json"], "missing.json"),
        (["model.name_or_path=/nonexistent/model"], "/nonexistent/model"),
    ],
)
def test_bad_input_is_one_line_and_nothing_claims_ok(cli, tmp_path, args, words):
    proc = cli([*FAST, *args], timeout=120)
    assert proc.returncode != 0
    err = proc.stderr.strip()
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    lines = [x for x in err.splitlines() if x.startswith("ftsweep: error:")]
    assert len(lines) == 1 and words in lines[0], proc.stderr
    summaries = list(tmp_path.glob("outputs/**/summary.json"))
    # A mistake Hydra catches while composing stops before any run directory; any later one is recorded
    # as failed in the run's own directory, which the error line names.
    assert len(summaries) == (0 if args[0].startswith(COMPOSE_ERRORS) else 1), summaries
    for summary in summaries:
        assert json.loads(summary.read_text())["status"] == "failed"
        assert f"(run dir: {summary.parent}" in lines[0], lines[0]


def test_configs_are_found_from_any_working_directory(tmp_path):
    """The console script and `python -m` find conf/ wherever they start."""
    elsewhere = tmp_path / "deep" / "dir"
    elsewhere.mkdir(parents=True)
    exe = Path(sys.executable).with_name("ftsweep")
    for cmd in ([sys.executable, "-m", "ftsweep"], [str(exe)]):
        proc = subprocess.run([*cmd, "--cfg", "job", "lora.r=16"], cwd=elsewhere, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert "r: 16" in proc.stdout and "name: tiny" in proc.stdout
    assert REPO.exists()


@pytest.mark.slow
def test_a_wheel_install_finds_its_configs(tmp_path):
    """A non-editable install carries conf/ inside the package."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), str(REPO)], check=True,
                   capture_output=True, timeout=300)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    *map(str, wheel_dir.glob("*.whl"))], check=True, capture_output=True, timeout=300)
    env = {"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"}
    code = "import ftsweep.cli as c; print(c.__file__); print(c.config_dir())"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    module_file, conf = out.stdout.split()
    assert module_file.startswith(str(target)) and conf == str(target / "ftsweep" / "conf")
    proc = subprocess.run([sys.executable, "-m", "ftsweep", "--cfg", "job", "lora=lora"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "r: 8" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_a_cell_run_in_the_same_process_frees_the_previous_cells_model(tiny_model_dir, tmp_path, monkeypatch, composed):
    """The basic launcher runs a sweep's cells one after another in one process: on a GPU, a model still held
    from the last cell would take the memory the next one needs. A finished run sits in reference cycles (its
    trainer's callbacks hold the run), which only the cycle collector frees; the run's setup collects them
    before the next model loads and before the CUDA cache is emptied. Checked where the next cell starts loading."""
    import weakref

    from ftsweep import run as run_mod
    from ftsweep.cli import train

    models, alive_at_start = [], []
    setup_adapter, setup_data = run_mod.Run.setup_adapter, run_mod.Run.setup_data

    def remember_model(self):
        setup_adapter(self)
        models.append(weakref.ref(self.model))

    def count_alive(self):  # after setup_model, which collected the previous cell's garbage (in reference cycles)
        alive_at_start.append(sum(ref() is not None for ref in models))
        setup_data(self)

    monkeypatch.setattr(run_mod.Run, "setup_adapter", remember_model)
    monkeypatch.setattr(run_mod.Run, "setup_data", count_alive)
    overrides = [*FAST, "optim.max_steps=1", "eval.every_n_steps=0", "eval.num_samples=1", "train.save_steps=100"]
    for r in (4, 8, 16):
        cell = [*overrides, f"lora.r={r}"]
        assert train(composed(cell), tmp_path / f"r{r}", f"lora.r={r}", cell)["status"] == "ok"
    assert len(models) == 3 and alive_at_start == [0, 0, 0]


def test_a_runs_wall_time_starts_once_the_libraries_are_loaded(tiny_model_dir, tmp_path, monkeypatch, composed):
    """Importing torch, transformers, PEFT and bitsandbytes is the process's cost, paid once: by the first cell of a
    sweep the basic launcher runs in one process. Counted in that cell's wall time, the report of the default sweep
    showed its first configuration twice as slow as the others (12.3 s against 6.0 s). Here loading the libraries
    (runtime.settle_heap imports them) takes 3 s more, and neither the run's wall time nor its lines' times count it."""
    import time

    from ftsweep import runtime
    from ftsweep.cli import train

    settle = runtime.settle_heap

    def slow_to_load():
        time.sleep(3)
        settle()

    monkeypatch.setattr(runtime, "settle_heap", slow_to_load)
    cell = [*FAST, "eval.num_samples=0"]
    started = time.perf_counter()
    summary = train(composed(cell), tmp_path / "run", "run", cell)
    took = time.perf_counter() - started
    assert summary["status"] == "ok"
    assert summary["wall_seconds"] <= took - 3, (summary["wall_seconds"], took)
    baseline = next(r for r in artifacts.read_metrics(tmp_path / "run" / artifacts.METRICS) if r["step"] == 0)
    assert baseline["time"] < took - 3


def test_each_run_measures_its_own_cpu_memory_peak():
    """A sweep's cells share the basic launcher's process, whose peak resident set only grows: each cell after the
    largest reported that one's peak as its own. Each run starts the peak afresh (Linux: /proc/self/clear_refs)."""
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() or not Path("/proc/self/clear_refs").exists():
        pytest.skip("the CPU peak of a Linux process")
    from ftsweep import runtime

    block = bytearray(512 * 2**20)
    block[:: 4096] = b"\1" * len(range(0, len(block), 4096))  # every page touched: resident
    larger = runtime.peak_memory_bytes()
    del block
    runtime.reset_globals(0)  # what each run does first
    assert runtime.peak_memory_bytes() < larger - 400 * 2**20


def test_a_finished_run_that_cannot_be_moved_aside_stays_whole_and_nothing_starts(tmp_path, monkeypatch, composed):
    """Another config into the directory of a finished run moves its results to replaced/<hash>/. When one of them
    cannot move (a file another program holds open, on a system that refuses the rename), those already moved go
    back, summary.json is not overwritten by a `failed` one, and the new config does not train. Entries that are not
    a run's results (a user's notes, a data folder) never move."""
    from ftsweep.cli import train

    run_dir = tmp_path / "run"
    first = [*FAST, "optim.max_steps=2", "eval.every_n_steps=0", "eval.num_samples=2"]
    assert train(composed(first), run_dir, "run", first)["status"] == "ok"
    (run_dir / "notes.txt").write_text("mine")
    before = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != artifacts.LOCK}
    rename = Path.rename

    def refuse_samples(self, target):
        if self.name == artifacts.SAMPLES and artifacts.REPLACED in Path(target).parts:
            raise PermissionError(13, "Permission denied", str(self))
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", refuse_samples)
    other = [*first, "optim.lr=1e-4"]
    result = train(composed(other), run_dir, "run", other)
    assert result["status"] == "failed" and result["error"]["type"] == "ResultsInTheWay"
    assert result["error"]["message"] == (
        f"{run_dir} holds a finished run of another config that could not be moved aside to replaced/ (Permission "
        f"denied: {run_dir / artifacts.SAMPLES}); it is left as it was: free the file, or choose another hydra.run.dir")
    after = {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != artifacts.LOCK}
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed <= {Path(artifacts.RUN_LOG)}, changed  # the old run whole, no replaced/ left behind
    monkeypatch.setattr(Path, "rename", rename)
    result = train(composed(other), run_dir, "run", other)
    assert result["status"] == "ok"
    kept = run_dir / artifacts.REPLACED / json.loads(before[Path(artifacts.SUMMARY)])["config_hash"]
    assert sorted(p.name for p in kept.iterdir()) == sorted(
        [artifacts.ADAPTER, artifacts.HELD_OUT_LOSSES, artifacts.MANIFEST, artifacts.METRICS, artifacts.SAMPLES, artifacts.SUMMARY])
    assert (kept / artifacts.SUMMARY).read_bytes() == before[Path(artifacts.SUMMARY)]
    assert (run_dir / "notes.txt").read_text() == "mine"
