"""ftsweep against the tutorial way, on the same data, steps and effective batch; and a sweep's overhead.

    python bench/speed.py                 # tiny model, 800 mixed-length records, max_length 512, 100 steps of 8
    python bench/speed.py --steps 80 --model-dir /models/Qwen2.5-0.5B-Instruct

Prints, for the tutorial-style script (bench/tutorial_baseline.py: every example
padded to max_length, tokenized in the run) and for ftsweep with dynamic
padding, length grouping and padding-free packing: train seconds, real (non-pad)
tokens per second, and padding efficiency (real / all tokens processed). Then
runs a 4-cell sweep and prints how much of its wall time went outside the runs'
train + eval time, and whether runs 2..4 loaded the tokenized data from the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["river", "stone", "cloud", "maple", "ocean", "garden", "candle", "tiger", "piano", "lemon", "robot", "apple"]


def write_data(path: Path, n: int, max_chars: int, seed: int = 0) -> None:
    """Instruction records of mixed length, shaped like real instruction sets: most inputs short, a long tail.

    Input length in characters ~ lognormal(median 120, sigma 0.8), clipped to 20..max_chars: median 120,
    about 1 in 10 over 330 (Alpaca-style data has a median of a few dozen words and a tail to several hundred).
    """
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            length = int(min(max_chars, max(20, rng.lognormvariate(4.787, 0.8))))  # e^4.787 = 120
            words = []
            while sum(len(w) + 1 for w in words) < length:
                words.append(rng.choice(WORDS))
            target = rng.choice(WORDS)
            text = " ".join(words)
            fh.write(json.dumps({"instruction": f"How many times does '{target}' occur?", "input": text,
                                 "output": f"It occurs {words.count(target)} times."}) + "\n")


def ftsweep(args: list[str], cwd: Path, env: dict) -> tuple[float, Path]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "ftsweep", *args], cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"ftsweep failed: {proc.stderr[-2000:]}")
    return wall, cwd


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--records", type=int, default=800)
    p.add_argument("--model-dir", help="a local model directory (default: the built-in tiny model)")
    args = p.parse_args()

    from ftsweep.models import ensure_tiny_model

    model_dir = args.model_dir or str(ensure_tiny_model())
    work = Path(tempfile.mkdtemp(prefix="ftsweep-bench-"))
    data = work / "mixed.jsonl"
    write_data(data, args.records, max_chars=int(args.max_length * 0.9))
    env = dict(os.environ, FTSWEEP_HOME=str(work / "home"), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    model = ["model=tiny"] if not args.model_dir else [f"model.name_or_path={model_dir}"]
    common = [*model, "data=alpaca", f"data.path={data}", "data.val_size=32", f"data.max_length={args.max_length}",
              f"optim.max_steps={args.steps}", f"optim.micro_batch_size={args.micro}", "optim.grad_accum=1",
              "logger=none", "eval.at_start=false", "eval.every_n_steps=0", "eval.num_samples=0", "train.progress=false",
              "train.save_steps=100000"]
    print(f"model {model_dir}; {args.records} records of mixed length, max_length {args.max_length}; "
          f"{args.steps} steps x {args.micro} sequences; {os.cpu_count()} CPU cores")

    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "tutorial_baseline.py"), model_dir, str(data),
                           "--steps", str(args.steps), "--micro", str(args.micro), "--max-length", str(args.max_length)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"tutorial baseline failed: {proc.stderr[-2000:]}")
    base = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [("tutorial (pad to max_length)", base["train_seconds"], base["wall_seconds"], base["tokens_real"] / base["train_seconds"],
             base["padding_efficiency"])]
    results = {}
    for label, extra in (("ftsweep, dynamic padding", []), ("ftsweep, length grouping", ["data.group_by_length=true"]),
                         ("ftsweep, padding-free packing", ["data.packing=true"])):
        out = work / label.split(", ")[1].replace(" ", "_")
        wall, _ = ftsweep([*common, *extra, f"hydra.run.dir={out}"], work, env)
        s = json.loads((out / "summary.json").read_text())
        results[label] = s
        rows.append((label, s["train_seconds"], wall, s["tokens_per_second"], s["padding_efficiency"]))

    print(f"\n| setup | train s | wall s | real tokens/s | padding efficiency | train-time speedup vs tutorial |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, train_s, wall, tps, eff in rows:
        print(f"| {label} | {train_s:.1f} | {wall:.1f} | {tps:.0f} | {eff:.3f} | {base['train_seconds'] / train_s:.2f}x |")

    # A 4-cell sweep: how much of its wall time is not training or evaluating.
    sweep = work / "sweep"
    wall, _ = ftsweep(["-m", "lora.r=4,8", "optim.lr=1e-4,3e-4", *common, "data.group_by_length=true",
                       f"hydra.sweep.dir={sweep}"], work, env)
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    inside = sum(s["train_seconds"] + s["eval_seconds"] for s in summaries)
    logs = [p.read_text() for p in sorted(sweep.glob("*/run.log"), key=lambda p: p.stat().st_mtime)]
    hits = sum("tokenized data: cache hit" in log for log in logs[1:])
    print(f"\n4-run sweep: wall {wall:.1f} s, train+eval {inside:.1f} s, outside {wall - inside:.1f} s "
          f"({100 * (wall - inside) / wall:.1f}% of wall); runs 2..4 loading tokenized data from the cache: {hits}/3")


if __name__ == "__main__":
    main()
