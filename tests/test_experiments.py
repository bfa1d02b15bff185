"""Every reference workflow in conf/experiment runs end to end on the tiny model with a small file in its format."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FAST

from ftsweep import artifacts

EXPERIMENTS = sorted(p.stem for p in (Path(__file__).parent.parent / "conf" / "experiment").glob("*.yaml"))


def alpaca_file(path: Path, n: int = 40) -> Path:
    rng = random.Random(0)
    words = ["spring", "moon", "river", "pine", "crane", "frost", "willow", "mountain"]
    recs = [{"instruction": "Write a line about the word.", "input": w, "output": f"The {w} rests under the {rng.choice(words)}."}
            for w in (rng.choice(words) for _ in range(n))]
    path.write_text(json.dumps(recs, ensure_ascii=False), encoding="utf-8")
    return path


def reclor_file(path: Path, n: int = 40) -> Path:
    recs = [{"context": f"Passage {i} says the answer is option {'ABCD'[i % 4]}.", "question": "Which option is right?",
             "answers": ["first", "second", "third", "fourth"], "label": i % 4, "id_string": f"train_{i}"} for i in range(n)]
    path.write_text(json.dumps(recs), encoding="utf-8")
    return path


FEW = [*FAST, "model=tiny", "optim.max_steps=3", "optim.micro_batch_size=2", "optim.grad_accum=1", "optim.warmup_steps=1",
       "eval.every_n_steps=0", "eval.generation.max_new_tokens=8"]

CASES = {
    "tang_poem": (alpaca_file, ["data.n=30", "data.val_size=4"]),
    "reclor": (reclor_file, ["data.val_size=8"]),
    "qwen_extraction": (alpaca_file, ["data.val_size=4"]),
    "qwen25_tagging": (alpaca_file, ["data.n=20", "data.val_size=4", "logger=none"]),
    "yi_huanhuan": (alpaca_file, ["data.val_size=4"]),
}


def test_every_experiment_file_is_covered_and_names_itself():
    from conftest import compose

    assert set(EXPERIMENTS) == set(CASES) | {"qwen25_tagging_sweep"}
    for name in EXPERIMENTS:  # the name the manifest and the trackers' config record
        assert compose([f"experiment={name}", "data.path=x.json"]).experiment == name


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_experiment_runs_on_the_tiny_model(cli, tmp_path, name):
    make, extra = CASES[name]
    data = make(tmp_path / f"{name}.json")
    proc = cli([f"experiment={name}", f"data.path={data}", *FEW, *extra])
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = next(tmp_path.glob("outputs/*/*/summary.json")).parent
    summary = json.loads((run_dir / artifacts.SUMMARY).read_text())
    config = json.loads((run_dir / artifacts.MANIFEST).read_text())["config"]
    assert summary["status"] == "ok" and summary["steps"] == 3
    assert config["model"]["name"] == "tiny" and config["experiment"] == name
    if name == "reclor":
        assert set(summary["task_metrics"]) == {"accuracy", "precision", "recall", "f1"}
        assert config["task"]["num_labels"] == 4 and config["optim"]["scheduler"] == "constant_with_warmup"
        evals = [r for r in artifacts.read_metrics(run_dir / artifacts.METRICS) if r["split"] == "eval"]
        assert all("accuracy" in r for r in evals)  # every evaluation reports the classification metrics
    else:
        samples = [json.loads(x) for x in (run_dir / artifacts.SAMPLES).read_text().splitlines()]
        assert samples and all("prediction" in s for s in samples)
        prompt = samples[0]["prompt"]
        if name == "tang_poem":
            assert prompt.startswith("<s>[INST] <<SYS>>\nYou are a poet") and prompt.endswith(" [/INST]")
            assert config["eval"]["generation"] == {"do_sample": True, "temperature": 0.1, "top_p": 0.3,
                                                    "no_repeat_ngram_size": 3, "max_new_tokens": 8}
        if name == "qwen_extraction":
            assert "<|instruction|>\nWrite a line about the word.\n<|input|>\n" in prompt and prompt.endswith("<|output|>\n")
        if name == "qwen25_tagging":
            assert prompt.startswith("<|im_start|>system\nWrite a line about the word.<|im_end|>")
            assert summary["dropped_examples"] == 0 and config["quant"]["name"] == "none"
        if name == "yi_huanhuan":
            assert "甄嬛" in prompt


def test_the_tagging_sweep_grids_rank_lr_and_data_size(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "ftsweep", "experiment=qwen25_tagging_sweep", "data.path=x.json", "--cfg", "hydra"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "lora.r: 4,8,16" in proc.stdout and "optim.lr: 5e-5,1e-4" in proc.stdout and "data.n: 25,50" in proc.stdout
