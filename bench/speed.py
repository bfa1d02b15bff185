"""ftsweep's default, the tutorial way and TRL's SFTTrainer, side by side in one run; and a default sweep's overhead.

    pip install -e ".[bench]"                 # TRL, for its SFTTrainer
    python bench/speed.py                     # 3 rounds: tiny model, 400 mixed-length records, max_length 512, 40 steps x 4
    python bench/speed.py --rounds 1 --steps 20 --no-sweep
    python bench/speed.py --variants          # also ftsweep with data.group_by_length=true and with data.packing=true
    python bench/speed.py --model-dir /models/Qwen2.5-0.5B-Instruct

Every setup trains the same 4-bit nf4 base with LoRA r=8 on all linear layers,
on the same records, steps, micro batch and learning rate, each in a fresh
process: the tutorial way (bench/tutorial_baseline.py: Trainer + PEFT, every
example padded to max_length), TRL's SFTTrainer with its defaults
(bench/trl_baseline.py: dynamic padding, completion-only loss) and
`python -m ftsweep` with its defaults. A round runs each once, in that order;
each round starts with an empty ftsweep home, so no round reads another's
tokenized-data cache. Prints every round, then the medians and ftsweep's
speedup over each. Train seconds are the training loop alone; process seconds
are the whole command, start to exit (ftsweep's include its baseline and final
evaluation and sample generation, which the other two do not do).

Then runs the default 4-cell sweep (`python -m ftsweep -m lora.r=8,16
optim.lr=1e-4,3e-4`, built-in model and data, logger=none) and prints the share
of its wall time spent outside training: evaluation and generation, each run's
setup (model load, data, adapter), and what the process pays once (Python and
Hydra start, the libraries' import, the report).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ["river", "stone", "cloud", "maple", "ocean", "garden", "candle", "tiger", "piano", "lemon", "robot", "apple"]
TUTORIAL, TRL, DEFAULT = "tutorial (Trainer+PEFT, pad to max_length)", "TRL SFTTrainer (defaults)", "ftsweep default"


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
            fh.write(json.dumps({"instruction": f"How many times does '{target}' occur?", "input": " ".join(words),
                                 "output": f"It occurs {words.count(target)} times."}) + "\n")


def write_full_length(path: Path, n: int, max_length: int) -> None:
    """Records whose input is 2 x max_length characters: each is cut to exactly max_length tokens, so every batch
    is the worst case mode=plan estimates."""
    with open(path, "w", encoding="utf-8") as fh:
        for k in range(n):
            fh.write(json.dumps({"instruction": f"Repeat record {k}.", "input": "river stone " * (max_length // 6),
                                 "output": "river stone"}) + "\n")


def timed(cmd: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"bench/speed.py: {' '.join(cmd[:4])} ... failed:\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def baseline(script: str, model_dir: str, data: Path, args, env: dict, cwd: Path) -> dict:
    seconds, out = timed([sys.executable, str(ROOT / "bench" / script), model_dir, str(data), "--steps", str(args.steps),
                          "--micro", str(args.micro), "--max-length", str(args.max_length)], env, cwd)
    r = json.loads(out.strip().splitlines()[-1])
    return {"train_s": r["train_seconds"], "process_s": seconds, "tokens_per_s": r["tokens_real"] / r["train_seconds"]}


def ftsweep(overrides: list[str], env: dict, cwd: Path, run_dir: Path) -> dict:
    seconds, _ = timed([sys.executable, "-m", "ftsweep", *overrides, f"hydra.run.dir={run_dir}"], env, cwd)
    s = json.loads((run_dir / "summary.json").read_text())
    return {"train_s": s["train_seconds"], "process_s": seconds, "tokens_per_s": s["tokens_per_second"],
            "padding_efficiency": s.get("padding_efficiency"), "summary": s}


def default_sweep(work: Path, env: dict) -> None:
    """The README's first sweep with every default: how much of its wall time is not training."""
    sweep = work / "default_sweep"
    wall, _ = timed([sys.executable, "-m", "ftsweep", "-m", "lora.r=8,16", "optim.lr=1e-4,3e-4", "logger=none",
                     "train.progress=false", f"hydra.sweep.dir={sweep}"], dict(env, FTSWEEP_HOME=str(work / "home-sweep")), work)
    runs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    train = sum(r["train_seconds"] for r in runs)
    evals = sum(r["eval_seconds"] for r in runs)
    setup = sum(r["wall_seconds"] for r in runs) - train - evals
    rest = wall - sum(r["wall_seconds"] for r in runs)
    pct = lambda x: f"{x:.1f} s ({100 * x / wall:.1f}%)"  # noqa: E731
    print(f"\nDefault 4-run sweep (python -m ftsweep -m lora.r=8,16 optim.lr=1e-4,3e-4 logger=none): wall {wall:.1f} s, "
          f"{len(runs)} runs of {runs[0].get('steps')} steps")
    print(f"  training            {pct(train)}")
    print(f"  outside training    {pct(wall - train)}")
    print(f"    eval + generation {pct(evals)}  (baseline, periodic and final eval, sample generation)")
    print(f"    run setup         {pct(setup)}  (model load, data, adapter, saving)")
    print(f"    process, once     {pct(rest)}  (Python and Hydra start, the libraries' import, the report)")
    for r in runs:
        print(f"    {r['run_name']}: wall {r['wall_seconds']:.1f} s, train {r['train_seconds']:.1f} s, "
              f"eval {r['eval_seconds']:.1f} s")


def require_trl(script: str) -> None:
    """TRL's SFTTrainer is one of the setups compared; without it the bench says so in one line, before any work."""
    if importlib.util.find_spec("trl") is None:
        print(f'{script}: TRL is not installed (its SFTTrainer is one of the setups compared); pip install -e ".[bench]"',
              file=sys.stderr)
        sys.exit(2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--records", type=int, default=400)
    p.add_argument("--variants", action="store_true",
                   help="also ftsweep with length grouping and no checkpointing set by hand, and with packing")
    p.add_argument("--no-sweep", action="store_true", help="skip the default sweep's overhead measurement")
    p.add_argument("--model-dir", help="a local model directory (default: the built-in tiny model)")
    args = p.parse_args()
    require_trl("bench/speed.py")

    from ftsweep.models import ensure_tiny_model

    work = Path(tempfile.mkdtemp(prefix="ftsweep-bench-"))
    data = work / "mixed.jsonl"
    write_data(data, args.records, max_chars=int(args.max_length * 0.9))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    common = ["data=alpaca", f"data.path={data}", "data.val_size=32", f"data.max_length={args.max_length}",
              f"optim.max_steps={args.steps}", f"optim.micro_batch_size={args.micro}", "optim.grad_accum=1",
              "optim.lr=3e-4", "logger=none", "train.progress=false"]
    setups = [(DEFAULT, [])]
    if args.variants:
        setups += [("ftsweep, group_by_length, no checkpointing", ["data.packing=false", "data.group_by_length=true",
                                                                 "train.gradient_checkpointing=false"]),
                   ("ftsweep, data.packing=true", ["data.packing=true"]),
                   ("ftsweep, padded batches in sampler order", ["data.packing=false", "data.group_by_length=false"])]
    print(f"{args.records} records of mixed length, max_length {args.max_length}; {args.steps} steps x {args.micro} "
          f"sequences; {args.rounds} rounds; {os.cpu_count()} CPU cores; python {sys.version.split()[0]}")

    results: dict[str, list[dict]] = {}
    for rnd in range(1, args.rounds + 1):
        home = work / f"home-{rnd}"  # an empty ftsweep home per round: no tokenized-data cache from an earlier round
        model_dir = args.model_dir or str(ensure_tiny_model(home))
        model = [f"model.name_or_path={model_dir}"] if args.model_dir else ["model=tiny"]
        renv = dict(env, FTSWEEP_HOME=str(home))
        results.setdefault(TUTORIAL, []).append(baseline("tutorial_baseline.py", model_dir, data, args, renv, work))
        results.setdefault(TRL, []).append(baseline("trl_baseline.py", model_dir, data, args, renv, work))
        for label, extra in setups:
            run_dir = work / f"round{rnd}" / label.replace(" ", "_").replace(",", "").replace("=", "-")
            results.setdefault(label, []).append(ftsweep([*model, *common, *extra], renv, work, run_dir))
        print(f"round {rnd}: " + "; ".join(f"{k}: train {v[-1]['train_s']:.1f} s, process {v[-1]['process_s']:.1f} s"
                                           for k, v in results.items()), flush=True)

    med = {k: {m: statistics.median(r[m] for r in v) for m in ("train_s", "process_s", "tokens_per_s")}
           for k, v in results.items()}
    d = med[DEFAULT]
    print(f"\nMedian of {args.rounds} round(s):\n")
    print("| setup | train s | process s | real tokens/s (train) | ftsweep default speedup, train | ftsweep default speedup, process |")
    print("|---|---:|---:|---:|---:|---:|")
    for k, m in med.items():
        print(f"| {k} | {m['train_s']:.1f} | {m['process_s']:.1f} | {m['tokens_per_s']:.0f} | "
              f"{m['train_s'] / d['train_s']:.2f}x | {m['process_s'] / d['process_s']:.2f}x |")
    s = results[DEFAULT][-1]["summary"]
    chosen = {k: v for k, v in (s.get("auto") or {}).items() if isinstance(v, bool)}  # what the auto knobs became
    print("\nftsweep default chose: " + ", ".join(f"{k}={str(v).lower()}" for k, v in chosen.items())
          + f"; padding efficiency {s.get('padding_efficiency')}")

    if not args.no_sweep:
        default_sweep(work, env)


if __name__ == "__main__":
    main()
