"""Memory and time of the loss with and without `train.chunked_loss`, on this machine, in one run.

    python bench/memory.py                      # micro batch 4 x max_length 512, 2 steps
    python bench/memory.py --micro 8 --max-length 1024

Builds a 2-layer random-init model with Qwen2.5-0.5B's widths and its 151,936-token vocabulary (no download; the
output layer and its logits are the real size, the decoder is short), then trains it with ftsweep, QLoRA nf4, on
records all cut to max_length, once with train.chunked_loss=true (the default) and once with false, each in a fresh
process. Prints peak resident memory (CPU) or peak GPU memory, train seconds and the losses, which must agree.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
GIB = 1024**3


def build(target: Path) -> None:
    import torch
    import yaml
    from transformers import AutoConfig, AutoModelForCausalLM

    from ftsweep.models import build_tiny_tokenizer

    arch = dict(yaml.safe_load((ROOT / "conf" / "model" / "qwen2.5-0.5b-instruct.yaml").read_text())["arch"])
    arch["num_hidden_layers"] = 2
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    tok = build_tiny_tokenizer()
    config.pad_token_id, config.eos_token_id, config.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(target)
    tok.save_pretrained(target)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--steps", type=int, default=2)
    args = p.parse_args()
    from speed import write_full_length

    work = Path(tempfile.mkdtemp(prefix="ftsweep-memory-bench-"))
    build(work / "model")
    data = work / "full-length.jsonl"
    write_full_length(data, args.micro * args.steps + 4, args.max_length)
    env = dict(os.environ, HF_HUB_OFFLINE="1", FTSWEEP_HOME=str(work / "home"))
    print(f"2-layer Qwen2.5-0.5B widths, vocabulary 151,936, nf4; micro batch {args.micro} x {args.max_length} tokens, "
          f"{args.steps} steps, held-out batch of 4")
    print("| train.chunked_loss | peak memory GiB | train s | train loss | held-out loss |")
    print("|---|---:|---:|---:|---:|")
    for chunked in ("true", "false"):
        run_dir = work / f"chunked-{chunked}"
        # Each setting in a child of its own: RUSAGE_CHILDREN's peak is the largest child's so far, so the
        # smaller setting runs first and is not hidden by the larger.
        proc = subprocess.run([sys.executable, "-m", "ftsweep", "model=qwen2.5-0.5b-instruct", f"model.name_or_path={work / 'model'}",
                               "quant=nf4", "data=alpaca", f"data.path={data}", "data.val_size=4", f"data.max_length={args.max_length}",
                               f"optim.max_steps={args.steps}", f"optim.micro_batch_size={args.micro}", "eval.batch_size=4",
                               "logger=none", "train.progress=false", "eval.at_start=false", "eval.every_n_steps=0",
                               "eval.num_samples=0", "train.save_steps=100000", f"train.chunked_loss={chunked}",
                               f"hydra.run.dir={run_dir}"], cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"bench/memory.py: the run with train.chunked_loss={chunked} failed:\n{proc.stderr[-2000:]}")
        s = json.loads((run_dir / "summary.json").read_text())
        if s["device"] == "cuda":
            peak = s["peak_memory_bytes"] / GIB
        else:
            peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / GIB  # Linux: kilobytes
        print(f"| {chunked} | {peak:.2f} | {s['train_seconds']:.1f} | {s['train_loss']:.5f} | {s['eval_loss']:.5f} |")


if __name__ == "__main__":
    main()
