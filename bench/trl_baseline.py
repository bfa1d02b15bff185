"""TRL's way, for comparison: SFTTrainer with its defaults (dynamic padding, completion-only loss).

    python bench/trl_baseline.py MODEL_DIR DATA.jsonl --steps 40 --micro 4 --max-length 512

The same records, chat template, 4-bit nf4 base and LoRA (r=8 on all linear
layers) as bench/tutorial_baseline.py, handed to trl.SFTTrainer as a
prompt/completion dataset: TRL tokenizes, masks the prompt and pads each batch
to its longest example. Prints one JSON line: train seconds, whole-process
seconds, real (non-pad) tokens.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--micro", type=int, default=4)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    args = p.parse_args()
    t0 = time.perf_counter()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
    from trl import SFTConfig, SFTTrainer

    on_gpu = torch.cuda.is_available() and not args.cpu
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    records = [json.loads(line) for line in open(args.data, encoding="utf-8")]
    rows = [{"prompt": tok.apply_chat_template([{"role": "user", "content": r["instruction"] + "\n" + r["input"]}],
                                               tokenize=False, add_generation_prompt=True),
             "completion": r["output"]} for r in records]
    compute = torch.bfloat16 if on_gpu else torch.float32  # as ftsweep's quant.compute_dtype=auto picks
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=compute)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, quantization_config=q,
                                                 device_map={"": 0 if on_gpu else "cpu"}, dtype=compute)
    for m in model.modules():  # the same bitsandbytes CPU fix ftsweep applies, for a fair comparison
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
    cfg = SFTConfig(output_dir="/tmp/trl_baseline", per_device_train_batch_size=args.micro,
                    gradient_accumulation_steps=args.accum, max_steps=args.steps, learning_rate=args.lr,
                    max_length=args.max_length, logging_steps=10, save_strategy="no", report_to="none",
                    use_cpu=not on_gpu, bf16=on_gpu, disable_tqdm=True)
    trainer = SFTTrainer(model=model, args=cfg, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                                task_type="CAUSAL_LM"))
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t1
    n_seq = args.steps * args.micro * args.accum
    # The sampler shuffles, so each step sees the dataset's mean length: real tokens = n_seq x mean length.
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    real = round(n_seq * sum(lengths) / len(lengths))
    out = {"train_seconds": round(train_seconds, 2), "wall_seconds": round(time.perf_counter() - t0, 2),
           "tokens_real": real}
    if on_gpu:
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
