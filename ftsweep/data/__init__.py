"""Data: read records, normalise them to conversations, render, tokenize with masks, split.

    records (file / hub / synthetic) -> conversations -> (text, learn) segments
    -> input_ids + labels (prompt = -100) -> truncated -> train / val datasets

``prepare`` is the one entry point the run uses.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from typing import Any

from ftsweep.data import synthetic, templates
from ftsweep.data.tokenize import IGNORE, Collator, encode_segments, truncate


class DataError(ValueError):
    """Bad data: the message names the file, the record number and the field."""


@dataclass
class Bundle:
    train: Any  # datasets.Dataset with input_ids, labels
    val: Any
    collator: Collator
    eval_prompts: list[dict]  # {"prompt": text, "reference": text} for generation metrics
    fingerprint: str  # hash of the records used (train + val)
    stats: dict = field(default_factory=dict)
    class_weights: list[float] | None = None  # classify: per-class loss weights


def read_records(data_cfg) -> list[dict]:
    if data_cfg.source == "synthetic":
        return synthetic.generate(int(data_cfg.num_records), list(data_cfg.synthetic_tasks))
    path = data_cfg.path
    with open(path, encoding="utf-8") as fh:
        if str(path).endswith(".jsonl"):
            return [json.loads(line) for line in fh if line.strip()]
        return json.load(fh)


def to_messages(record: dict, system: str | None) -> list[dict]:
    """An alpaca record as a conversation: system?, user (instruction + input), assistant (output)."""
    user = record["instruction"] + ("\n" + record["input"] if record.get("input") else "")
    messages = [{"role": "system", "content": record.get("system") or system}] if (record.get("system") or system) else []
    return messages + [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}]


def split(records: list[dict], val_size: float, n: int | None, seed: int) -> tuple[list[dict], list[dict]]:
    """Seeded shuffle; the first val_size records are held out, train is the first n of the rest.

    Because the order depends only on the seed, a smaller n is a prefix of a
    larger one: data-size ablations compare nested subsets.
    """
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = int(val_size) if val_size >= 1 else max(1, round(val_size * len(records)))
    val = [records[i] for i in order[:n_val]]
    pool = [records[i] for i in order[n_val:]]
    if n is not None:
        if n > len(pool):
            raise DataError(f"data.n={n} is larger than the {len(pool)} training records left after holding out {n_val}; lower data.n")
        pool = pool[:n]
    return pool, val


def fingerprint(records: list[dict]) -> str:
    return hashlib.sha256(json.dumps(records, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def prepare(data_cfg, task_cfg, tokenizer, model_cfg=None) -> Bundle:
    from datasets import Dataset

    template = templates.resolve(data_cfg.template or (model_cfg.chat_template if model_cfg else None), tokenizer)
    records = read_records(data_cfg)
    train_records, val_records = split(records, float(data_cfg.val_size), data_cfg.n, int(data_cfg.shuffle_seed))
    stats = {"records": len(records), "train_records": len(train_records), "val_records": len(val_records), "truncated": 0, "dropped_examples": 0}

    def encode(recs: list[dict]) -> list[dict]:
        rows = []
        for rec in recs:
            segments = templates.render_segments(tokenizer, template, to_messages(rec, data_cfg.system))
            ids, labels = encode_segments(tokenizer, segments, bool(data_cfg.train_on_prompt))
            ids, labels, cut = truncate(ids, labels, int(data_cfg.max_length))
            stats["truncated"] += cut
            if all(lab == IGNORE for lab in labels):
                stats["dropped_examples"] += 1  # an all -100 row gives a NaN loss
                continue
            rows.append({"input_ids": ids, "labels": labels})
        return rows

    train_rows, val_rows = encode(train_records), encode(val_records)
    eval_prompts = [
        {"prompt": templates.render_prompt(tokenizer, template, to_messages(r, data_cfg.system)), "reference": r["output"]}
        for r in val_records
    ]
    return Bundle(
        train=Dataset.from_list(train_rows),
        val=Dataset.from_list(val_rows),
        collator=Collator(tokenizer.pad_token_id, data_cfg.pad_to_multiple_of),
        eval_prompts=eval_prompts,
        fingerprint=fingerprint(train_records + val_records),
        stats=stats,
    )
