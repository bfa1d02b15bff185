"""The tutorial way, for comparison: plain Trainer + PEFT, every example padded to max_length.

    python bench/tutorial_baseline.py MODEL_DIR DATA.jsonl --steps 60 --micro 8 --accum 1 --max-length 512

Written the way fine-tuning tutorials write it: tokenize inside the run with
padding="max_length", no length grouping, prompt masked with -100, a 4-bit nf4
base with LoRA r=8 on all linear layers, on the GPU when there is one. Prints
one JSON line: train seconds, tokens (non-pad and all), their ratio, and on a
GPU the peak memory.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir")
    p.add_argument("data")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--micro", type=int, default=8)
    p.add_argument("--accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--cpu", action="store_true", help="train on the CPU even where a GPU is present")
    args = p.parse_args()
    t0 = time.perf_counter()

    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, Trainer, TrainingArguments

    on_gpu = torch.cuda.is_available() and not args.cpu
    tok = AutoTokenizer.from_pretrained(args.model_dir)
    if tok.pad_token is None:
        tok.pad_token = tok.unk_token or tok.eos_token
    records = [json.loads(line) for line in open(args.data, encoding="utf-8")]

    def process(example):
        # The tutorial pattern: chat-template the prompt, append the answer, pad everything to max_length.
        prompt = tok.apply_chat_template([{"role": "user", "content": example["instruction"] + "\n" + example["input"]}],
                                         tokenize=False, add_generation_prompt=True)
        p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tok(example["output"] + tok.eos_token, add_special_tokens=False)["input_ids"]
        ids = (p_ids + a_ids)[: args.max_length]
        labels = ([-100] * len(p_ids) + a_ids)[: args.max_length]
        pad = args.max_length - len(ids)
        return {"input_ids": ids + [tok.pad_token_id] * pad, "attention_mask": [1] * len(ids) + [0] * pad,
                "labels": labels + [-100] * pad}

    ds = Dataset.from_list(records).map(process, remove_columns=["instruction", "input", "output"])
    compute = torch.bfloat16 if on_gpu else torch.float32  # as ftsweep's quant.compute_dtype=auto picks
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=compute)
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, quantization_config=q,
                                                 device_map={"": 0 if on_gpu else "cpu"}, dtype=compute)
    for m in model.modules():  # the same bitsandbytes CPU fix ftsweep applies (see ECOSYSTEM), for a fair comparison
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
    model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    targs = TrainingArguments(output_dir="/tmp/tutorial_baseline", per_device_train_batch_size=args.micro,
                              gradient_accumulation_steps=args.accum, max_steps=args.steps, learning_rate=args.lr,
                              logging_steps=10, save_strategy="no", report_to="none", use_cpu=not on_gpu, bf16=on_gpu,
                              disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=ds)
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    t1 = time.perf_counter()
    trainer.train()
    train_seconds = time.perf_counter() - t1
    n_seq = args.steps * args.micro * args.accum
    # The sampler shuffles, so each step sees the dataset's mean length: real tokens = n_seq x mean length.
    mean_len = sum(sum(m) for m in ds["attention_mask"]) / len(ds)
    real = round(n_seq * mean_len)
    out = {"train_seconds": round(train_seconds, 2), "wall_seconds": round(time.perf_counter() - t0, 2),
           "tokens_real": real, "tokens_all": n_seq * args.max_length,
           "padding_efficiency": round(real / (n_seq * args.max_length), 4)}
    if on_gpu:
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
