"""The GPU lane (`pytest -m gpu`): what only a CUDA device can show. Every test here is skipped without one.

4-bit and 8-bit training steps, fp16/bf16/fp32 LoRA under the autocast of its dtype, padding-free packing giving
the padded path's loss under flash attention and sdpa, the paged 8-bit optimizer, a LoftQ adapter reloaded as
trained, Liger kernels, a real out-of-memory error handled by the retry, two cells on one GPU.
"""

from __future__ import annotations

import importlib.util
import json
import math
import random

import pytest
from conftest import FAST, regenerate_samples

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (pytest -m gpu on a GPU machine)")]

SHORT = [*FAST, "optim.max_steps=4", "eval.every_n_steps=0", "eval.num_samples=2"]


def summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def trained_ok(s):
    assert s["status"] == "ok", s.get("error")
    assert s["device"] == "cuda" and s["peak_memory_bytes"] > 0
    assert math.isfinite(s["train_loss"]) and math.isfinite(s["eval_loss"])


@pytest.mark.parametrize("quant", ["nf4", "int8"])
def test_quantized_training_steps_on_cuda(cli, tmp_path, quant):
    run = tmp_path / "run"
    proc = cli([f"quant={quant}", *SHORT, f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained_ok(summary(run))
    # The adapter loads back onto the quantized base (what a user does next).
    assert (run / "adapter" / "adapter_config.json").exists()


@pytest.mark.parametrize("dtype, precision", [("float16", "fp16"), ("bfloat16", "bf16"), ("float32", None)])
def test_an_unquantized_base_trains_under_the_autocast_of_its_dtype(tiny_model_dir, tmp_path, dtype, precision):
    from conftest import compose

    from ftsweep import training

    cfg = compose(["quant=none", f"model.dtype={dtype}"])
    args = training.training_arguments(cfg, tmp_path, micro_batch=2, grad_accum=1)
    expected = "fp16" if precision == "bf16" and not torch.cuda.is_bf16_supported() else precision
    assert (args.bf16, args.fp16) == (expected == "bf16", expected == "fp16")  # fp16: the Trainer's loss scaling
    from ftsweep.cli import train

    overrides = ["quant=none", f"model.dtype={dtype}", *SHORT]
    trained_ok(train(compose(overrides), tmp_path / "run", f"dtype-{dtype}", overrides))


def _rows(tok, texts):
    from ftsweep.data.tokenize import IGNORE

    out = []
    for t in texts:
        ids = tok.encode(t, add_special_tokens=False)
        out.append({"input_ids": ids, "labels": [IGNORE] * 4 + ids[4:]})
    return out


@pytest.mark.parametrize("attn", ["sdpa", "flash_attention_2"])
def test_padding_free_packing_gives_the_padded_loss_on_cuda(tiny_model_dir, attn):
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed (pip install flash-attn)")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftsweep.data.packing import PackingCollator
    from ftsweep.data.tokenize import Collator

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    # flash attention runs in half precision only; sdpa is checked in fp32 as on CPU.
    dtype = torch.bfloat16 if attn == "flash_attention_2" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attn, dtype=dtype).cuda().eval()
    model.config.use_cache = False
    feats = _rows(tok, ["The city is Oslo.", "Reversed, cloud is duolc.", "The sum is 12.", "x" * 40 + " end"])
    padded = {k: v.cuda() for k, v in Collator(tok.pad_token_id)(feats).items()}
    packed = {k: v.cuda() for k, v in PackingCollator()(feats).items()}
    with torch.no_grad():
        a, b = model(**padded).loss.float(), model(**packed).loss.float()
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-5
    assert torch.allclose(a, b, rtol=tol, atol=tol), (attn, a.item(), b.item())


def test_paged_8bit_optimizer_trains(cli, tmp_path):
    run = tmp_path / "run"
    proc = cli(["optim=paged_adamw_8bit", *SHORT, "optim.max_steps=8", "optim.lr=1e-3", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary(run)
    trained_ok(s)
    assert s["eval_loss"] < s["baseline_eval_loss"]  # the 8-bit states still move the adapter the right way


def test_a_loftq_adapter_reloads_onto_the_base_it_trained_on(cli, tmp_path):
    # LoftQ replaces each base weight with its 4-bit round trip and only the adapter is saved; loading it with PEFT
    # runs the same deterministic LoftQ init on the original base before the trained weights go in, so generate must
    # answer exactly as the run's own greedy samples did.
    run = tmp_path / "run"
    proc = cli(["lora=loftq", "quant=none", *SHORT, "optim.max_steps=20", "optim.lr=2e-3", "eval.num_samples=4",
                "eval.generation.max_new_tokens=12", f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained_ok(summary(run))
    gen, again, samples = regenerate_samples(run, tmp_path / "gen.jsonl")
    assert gen.returncode == 0, gen.stderr[-2000:]
    assert again == samples and len(samples) == 4


def test_liger_kernels_train(cli, tmp_path):
    if importlib.util.find_spec("liger_kernel") is None:
        pytest.skip("liger-kernel is not installed (pip install liger-kernel)")
    run = tmp_path / "run"
    proc = cli(["train.liger_kernel=true", *SHORT, f"hydra.run.dir={run}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    trained_ok(summary(run))


def _long_records(path, n=96, chars=900, seed=0):
    rng = random.Random(seed)
    words = ["river", "stone", "cloud", "maple", "ocean", "garden"]
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            text = " ".join(rng.choice(words) for _ in range(chars // 6))
            fh.write(json.dumps({"instruction": "Repeat the first word.", "input": text, "output": text.split()[0]}) + "\n")


def test_a_real_out_of_memory_error_is_retried_with_the_same_effective_batch(cli, tmp_path):
    """Fill the GPU from this process until a micro batch of 32 cannot fit but 16 can; the run must retry once."""
    data = tmp_path / "long.jsonl"
    _long_records(data)
    cell = ["data=alpaca", f"data.path={data}", "data.val_size=8", "data.max_length=1024", "train.gradient_checkpointing=false",
            *SHORT, "optim.max_steps=2", "eval.num_samples=0", "eval.at_start=false"]
    env = {"PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}
    half = tmp_path / "half"
    proc = cli([*cell, "optim.micro_batch_size=16", "optim.grad_accum=2", f"hydra.run.dir={half}"], env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    need_half = summary(half)["peak_memory_bytes"]
    # Leave room for the child's CUDA context (~0.5 GiB) and 1.5x the half batch's peak: the full batch needs ~2x.
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(free - int(0.6 * 2**30) - int(1.5 * need_half), dtype=torch.uint8, device="cuda")
    try:
        run = tmp_path / "full"
        proc = cli([*cell, "optim.micro_batch_size=32", "optim.grad_accum=1", f"hydra.run.dir={run}"], env=env)
    finally:
        del hog
        torch.cuda.empty_cache()
    assert proc.returncode == 0, proc.stderr[-3000:]
    s = summary(run)
    assert s["status"] == "ok" and s["oom_retries"] == 1
    assert (s["micro_batch_size"], s["grad_accum"], s["effective_batch"]) == (16, 2, 32)  # 32 x 1 = 16 x 2


def test_two_cells_share_one_gpu(cli, tmp_path):
    pytest.importorskip("ray")
    sweep = tmp_path / "sweep"
    proc = cli(["-m", "seed=1,2", "hydra/launcher=ray", "hydra.launcher.gpus_per_cell=0.5",
                "hydra.launcher.ray.init.num_gpus=1", *SHORT, "eval.num_samples=0",
                f"hydra.sweep.dir={sweep}"], timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(x) for x in (sweep / "gpu_pool.jsonl").read_text().splitlines()]
    assert len(lines) == 2 and lines[0]["start"] < lines[1]["end"] and lines[1]["start"] < lines[0]["end"]  # at once
    devices = {summary(sweep / f"seed={k}")["cuda_visible_devices"] for k in (1, 2)}
    assert len(devices) == 1  # the same GPU
    for k in (1, 2):
        trained_ok(summary(sweep / f"seed={k}"))
