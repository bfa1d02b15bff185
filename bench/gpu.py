"""QLoRA on a CUDA GPU at the shipped models' real shapes: ftsweep, TRL's SFTTrainer and the tutorial way.

    pip install -e ".[bench]"                             # TRL, for its SFTTrainer
    python bench/gpu.py                                   # qwen2.5-0.5b-instruct, qwen2.5-7b-instruct, llama2-7b
    python bench/gpu.py --models qwen2.5-0.5b-instruct --steps 20 --micro 4 --max-length 1024
    python bench/gpu.py --peak-tflops 989                 # a GPU the table below does not know

For each model, a random-init model is built from the `arch:` facts of
conf/model/<name>.yaml (the real layer count, widths, heads and vocabulary; no
download) in bf16 and saved with the built-in byte-level tokenizer. Then the
same mixed-length records, steps and micro batch train a 4-bit nf4 base with
LoRA r=8 on all linear layers three ways, each in a fresh process:
`python -m ftsweep` (its defaults), bench/trl_baseline.py (SFTTrainer) and
bench/tutorial_baseline.py (pad to max_length); then ftsweep once more on records
all cut to max_length, the worst case `mode=plan` estimates, so that row's
peak / plan checks the planner. Prints, per model and setup:
train seconds, tokens/s on real (non-pad) tokens, MFU = 6 x parameters x real
tokens / train seconds / the GPU's peak dense bf16 FLOP/s, peak GPU memory,
and beside ftsweep's peak the estimate of `mode=plan` for the same cell.
Needs a CUDA GPU; elsewhere it says so in one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
GIB = 1024**3
MODELS = ["qwen2.5-0.5b-instruct", "qwen2.5-7b-instruct", "llama2-7b"]
# Dense bf16 tensor-core peaks from the vendors' data sheets, TFLOP/s (no sparsity).
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 80GB HBM3": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0,
                    "H100": 756.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10G": 70.0, "A10": 125.0,
                    "RTX 4090": 165.0, "RTX 3090": 71.0}


def peak_tflops(gpu_name: str) -> float | None:
    """The first table entry whose name appears in the GPU's name (longer names first: "H100 PCIe" before "H100")."""
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):
        if key.lower() in gpu_name.lower():
            return PEAK_BF16_TFLOPS[key]
    return None


def arch_facts(name: str) -> dict:
    import yaml

    path = ROOT / "conf" / "model" / f"{name}.yaml"
    if not path.exists():
        sys.exit(f"bench/gpu.py: no model option {name!r} (conf/model/{name}.yaml); choose from {', '.join(MODELS)}")
    arch = (yaml.safe_load(path.read_text()) or {}).get("arch") or {}
    if not arch:
        sys.exit(f"bench/gpu.py: conf/model/{name}.yaml has no arch: facts to build the model from")
    return dict(arch)


def build_model(name: str, target: Path) -> int:
    """A random-init bf16 model of the option's real shape, saved with the byte-level tokenizer; returns its parameters."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from ftsweep.models import build_tiny_tokenizer

    if (target / "config.json").exists():  # built by an earlier run with the same --work
        cfg = AutoConfig.from_pretrained(target)
        with torch.device("meta"):
            return sum(p.numel() for p in AutoModelForCausalLM.from_config(cfg).parameters())
    arch = arch_facts(name)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    # Token ids come from a byte-level tokenizer (ids < 264): the embedding and output layers keep the real
    # vocabulary's size, so their memory and FLOPs are the real ones.
    tok = build_tiny_tokenizer()
    config.pad_token_id, config.eos_token_id, config.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    torch.manual_seed(0)
    with torch.device("cuda"):  # initialising 7B parameters on the GPU takes seconds, on the CPU minutes
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(target, safe_serialization=True)
    tok.save_pretrained(target)
    del model
    torch.cuda.empty_cache()
    return params


def run(cmd: list[str], env: dict, cwd: Path) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  failed: {' '.join(cmd[:4])} ...\n{proc.stderr[-2000:]}", file=sys.stderr)
        return time.perf_counter() - start, ""
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--records", type=int, default=400)
    p.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, for MFU")
    p.add_argument("--work", help="where the built models go (default: a temporary directory; 7B models take 14 GB each)")
    args = p.parse_args()
    from speed import require_trl

    require_trl("bench/gpu.py")
    import torch

    if not torch.cuda.is_available():
        print("bench/gpu.py: needs a CUDA GPU (torch.cuda.is_available() is False here); run it on a GPU machine",
              file=sys.stderr)
        sys.exit(2)
    from speed import write_data, write_full_length

    gpu = torch.cuda.get_device_name(0)
    peak = args.peak_tflops or peak_tflops(gpu)
    work = Path(args.work or tempfile.mkdtemp(prefix="ftsweep-gpu-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "mixed.jsonl"
    # Byte-level tokens: characters ~ tokens, so inputs up to 0.6 x max_length characters leave room for the template.
    write_data(data, args.records, max_chars=int(args.max_length * 0.6))
    full = work / "full-length.jsonl"
    write_full_length(full, args.micro * args.steps + 16, args.max_length)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", FTSWEEP_HOME=str(work / "home"))
    print(f"{gpu}, peak bf16 {peak or '?'} TFLOP/s; {args.records} mixed-length records, max_length {args.max_length}, "
          f"{args.steps} steps x {args.micro} sequences; torch {torch.__version__}")

    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        model_dir = work / name
        t = time.perf_counter()
        params = build_model(name, model_dir)
        print(f"\n## {name}: {params / 1e9:.2f} B parameters (random init, built in {time.perf_counter() - t:.0f} s)")
        rows = []
        # The default on the mixed data; then every record cut to max_length, so every batch (micro batch x
        # max_length, and eval.batch_size x max_length held out) is the worst case mode=plan estimates: its
        # peak / plan is the planner's check.
        for label, records, run_dir in (("ftsweep (defaults)", data, work / "runs" / name),
                                        ("ftsweep, full-length records (plan check)", full, work / "runs" / f"{name}-full")):
            run([sys.executable, "-m", "ftsweep", f"model={name}", f"model.name_or_path={model_dir}", "quant=nf4",
                 "data=alpaca", f"data.path={records}", "data.val_size=16", f"data.max_length={args.max_length}",
                 f"optim.max_steps={args.steps}", f"optim.micro_batch_size={args.micro}", "optim.grad_accum=1",
                 "logger=none", "train.progress=false", "eval.at_start=false", "eval.every_n_steps=0",
                 "eval.num_samples=0", "train.save_steps=100000", f"hydra.run.dir={run_dir}"], env, ROOT)
            if (run_dir / "summary.json").exists():
                s = json.loads((run_dir / "summary.json").read_text())
                if s.get("status") == "ok":
                    rows.append((label, s["train_seconds"], s["tokens_seen"], s["peak_memory_bytes"],
                                 s.get("estimated_memory_bytes")))
        for label, script in (("TRL SFTTrainer", "trl_baseline.py"), ("tutorial (pad to max_length)", "tutorial_baseline.py")):
            _, out = run([sys.executable, str(ROOT / "bench" / script), str(model_dir), str(data), "--steps", str(args.steps),
                          "--micro", str(args.micro), "--max-length", str(args.max_length)], env, ROOT)
            if out:
                r = json.loads(out.strip().splitlines()[-1])
                rows.append((label, r["train_seconds"], r["tokens_real"], r.get("peak_memory_bytes"), None))
        print("| setup | train s | real tokens/s | MFU | peak GiB | plan GiB | peak / plan |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for label, secs, tokens, peak_mem, plan in rows:
            tps = tokens / secs
            mfu = f"{100 * 6 * params * tps / (peak * 1e12):.1f}%" if peak else "?"
            pk = f"{peak_mem / GIB:.2f}" if peak_mem else "?"
            pl = f"{plan / GIB:.2f}" if plan else ""
            ratio = f"{peak_mem / plan:.2f}" if plan and peak_mem else ""
            print(f"| {label} | {secs:.1f} | {tps:.0f} | {mfu} | {pk} | {pl} | {ratio} |")


if __name__ == "__main__":
    main()
