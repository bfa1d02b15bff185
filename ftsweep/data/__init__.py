"""Data: read records, normalise them, render with a template, tokenize with masks, split.

    source (synthetic / file / hub) -> records -> examples (conversation or text+label)
    -> held-out split + nested training subset -> (text, learn) segments
    -> input_ids + labels (prompt = -100) -> truncated -> train / val datasets

``prepare`` is the one entry point the run uses; ``preview`` shows its work.
"""

from __future__ import annotations

import hashlib
import json
import random
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from ftsweep.data import formats, sources, templates
from ftsweep.data.formats import Example
from ftsweep.data.sources import DataError, Record
from ftsweep.data.tokenize import IGNORE, Collator, encode_pieces, encode_segments, fit, truncate

__all__ = ["Bundle", "DataError", "prepare", "read_records", "split", "fingerprint"]


@dataclass
class Bundle:
    train: Any  # datasets.Dataset with input_ids, labels (sft) or input_ids, label (classify)
    val: Any
    collator: Collator
    eval_prompts: list[dict]  # {"prompt": text, "reference": text} for generation metrics
    fingerprint: str  # hash of the records used (train + val)
    stats: dict = field(default_factory=dict)
    class_weights: list[float] | None = None  # classify: per-class loss weights
    template: Any = None
    test: Any = None  # data.test_path's examples, evaluated once at the end (None: no test file)
    test_prompts: list[dict] = field(default_factory=list)
    test_fingerprint: str | None = None  # hash of data.test_path's records, apart: nothing trains or chooses by them
    held_out_fingerprint: str | None = None  # hash of the held-out examples as scored: their token ids and labels
    skipped: list[str] = field(default_factory=list)  # the first bad records' reasons (data.on_bad_record=skip)
    # Training examples that data.max_length cut: their index in train and what was cut (TRUNCATION_KEYS), so that
    # mode=preview can show how a long chat was fitted.
    truncated: dict[int, dict] = field(default_factory=dict)
    held_out_truncated: dict[int, dict] = field(default_factory=dict)  # the same for the held-out examples (val)


def read_records(data_cfg) -> list[dict]:
    """The source's records as plain dicts (in file order)."""
    return [r.fields for r in sources.read(data_cfg)]


def split(records: list, val_size: float, n: int | None, seed: int | None) -> tuple[list, list]:
    """Seeded shuffle; the first val_size records are held out, train is the first n of the rest.

    Because the order depends only on the seed, a smaller n is a prefix of a
    larger one: data-size ablations compare nested subsets. seed None keeps the
    file order: train is the first n records, the held-out set the last val_size.
    """
    n_val = 0 if val_size == 0 else int(val_size) if val_size >= 1 else max(1, round(val_size * len(records)))
    if n_val >= len(records):
        raise DataError(f"data.val_size={val_size:g} holds out {n_val} of {len(records)} records, leaving none to train on; lower data.val_size")
    if seed is None:
        order = list(range(len(records) - n_val, len(records))) + list(range(len(records) - n_val))
    else:
        order = list(range(len(records)))
        random.Random(seed).shuffle(order)
    val = [records[i] for i in order[:n_val]]
    pool = [records[i] for i in order[n_val:]]
    if n is not None:
        if n > len(pool):
            raise DataError(f"data.n={n} is larger than the {len(pool)} training records left after holding out {n_val}; lower data.n")
        pool = pool[:n]
    return pool, val


def fingerprint(records: list[dict]) -> str:
    return hashlib.sha256(json.dumps(records, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


SKIPPED_SHOWN = 3  # reasons kept for the console and mode=preview; summary.json counts them all


def _normalise_all(records: list[Record], data_cfg, task_cfg, stats: dict, skipped: list[str]) -> list[tuple[Record, Example]]:
    """Check and normalise every record; with data.on_bad_record=skip, bad ones are counted and left out, and the
    first SKIPPED_SHOWN reasons (file, record, field) kept in ``skipped``: a count alone leaves the user to find them."""
    out = []
    for rec in records:
        try:
            out.append((rec, formats.normalise(rec, data_cfg, task_cfg)))
        except DataError as exc:
            if data_cfg.on_bad_record != "skip":
                raise
            stats["skipped_records"] += 1
            if len(skipped) < SKIPPED_SHOWN:
                skipped.append(str(exc).rsplit("; ", 1)[0])  # the problem; its fix ("... or skip it") is what skip does
    if not out:
        raise DataError("every record was skipped as bad; check data.format and data.columns against the file (the "
                        f"first: {skipped[0]})")
    return out


def skipped_note(count: int, reasons: list[str]) -> str:
    """What data.on_bad_record=skip left out, with the first reasons: the console's warning and mode=preview's."""
    more = f", the first {len(reasons)}" if count > len(reasons) else ""
    return (f"{count} bad record{'s' if count != 1 else ''} skipped (data.on_bad_record=skip){more}:"
            + "".join(f"\n  {reason}" for reason in reasons))


# Per-example truncation counts, summed into bundle.stats (and so into summary.json and mode=preview).
TRUNCATION_KEYS = ("truncated", "turns_dropped", "prompts_cut", "responses_cut", "dropped_too_long")


class _ChatVariants:
    """variants[k]: the conversation tokenized with its first k exchanges dropped, system kept (rendered on demand)."""

    def __init__(self, tokenizer, template, messages: list[dict], tools: list | None = None):
        self.tokenizer, self.template, self.messages, self.tools = tokenizer, template, messages, tools
        exchange = templates.exchange_of(messages)
        self.n = max(exchange) + 1
        lead = next((i for i, m in enumerate(messages) if m["role"] != "system"), len(messages))
        self.system = messages[:lead]  # kept in every variant
        self.exchange = exchange
        self._cache: dict[int, list] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, k: int) -> list:
        if k not in self._cache:
            kept = self.messages if k == 0 else self.system + [m for m, ex in zip(self.messages, self.exchange) if ex >= k]
            if not any(m["role"] == "assistant" for m in kept):
                self._cache[k] = []
            else:
                self._cache[k] = encode_pieces(self.tokenizer, templates.render_pieces(self.tokenizer, self.template, kept, self.tools))
        return self._cache[k]


def encode_example(ex: Example, tokenizer, template, data_cfg, task_cfg, train_on_prompt: bool = False) -> tuple[dict | None, dict]:
    """One example -> a row of token ids and labels (None when dropped), and its truncation counts.

    ``train_on_prompt`` (data.train_on_prompt, training rows only): the prompt's tokens are learned too. Held-out and
    test rows always score the answers alone, so that a sweep over data.train_on_prompt compares one quantity: with
    the prompts in it, the held-out loss of the `true` cells was measured on other tokens (their baseline 5.5709
    against 5.5633 on the built-in data) and ranked against the `false` cells' as if it were the same."""
    max_length = int(data_cfg.max_length)
    info = dict.fromkeys(TRUNCATION_KEYS, 0)
    if task_cfg.name == "classify":
        ids = tokenizer.encode(ex.text, add_special_tokens=True)
        info["truncated"] = int(len(ids) > max_length)
        return {"input_ids": ids[-max_length:], "label": ex.label}, info  # keep the end: question and options
    if ex.messages is None:  # text format: plain continuation, every token learned
        ids, labels = encode_segments(tokenizer, [(ex.text + (tokenizer.eos_token or ""), True)])
        ids, labels, cut = truncate(ids, labels, max_length)
        info["truncated"] = int(cut)
    else:
        fitted = fit(_ChatVariants(tokenizer, template, ex.messages, ex.tools), max_length)
        info.update(truncated=int(fitted.cut), turns_dropped=fitted.turns_dropped, prompts_cut=int(fitted.prompt_cut),
                    responses_cut=int(fitted.response_cut), dropped_too_long=int(fitted.dropped))
        if fitted.dropped:
            return None, info
        ids = [t for p in fitted.pieces for t in p.ids]
        labels = [t if (train_on_prompt or p.kind == "answer") else IGNORE for p in fitted.pieces for t in p.ids]
    if all(lab == IGNORE for lab in labels):
        return None, info  # an all -100 row gives a NaN loss: dropped and counted
    return {"input_ids": ids, "labels": labels}, info


@contextmanager
def _naming(record: Record):
    """A template's refusal (roles it will not take, tools it cannot render) names the record it refused: in a file
    of 10,000 chats, "the chat template refuses a conversation with roles user/user" alone sent the user looking."""
    try:
        yield
    except ValueError as exc:
        raise DataError(f"{record.origin}: {exc}") from exc


def encode_record(record: Record, ex: Example, tokenizer, template, data_cfg, task_cfg,
                  train_on_prompt: bool = False) -> tuple[dict | None, dict]:
    """encode_example, naming the record when its template refuses it."""
    with _naming(record):
        return encode_example(ex, tokenizer, template, data_cfg, task_cfg, train_on_prompt)


def encode_all(pairs: list[tuple[Record, Example]], tokenizer, template, data_cfg, task_cfg, stats: dict,
               cut: list | None = None) -> list[dict]:
    """Tokenize held-out or test examples (their answers scored alone), adding their truncation counts to stats and,
    to ``cut``, [row index, counts] of each kept example that data.max_length cut."""
    rows = []
    for record, ex in pairs:
        row, info = encode_record(record, ex, tokenizer, template, data_cfg, task_cfg)
        for key in TRUNCATION_KEYS:
            stats[key] = stats.get(key, 0) + info[key]
        if row is None:
            stats["dropped_examples"] = stats.get("dropped_examples", 0) + 1
            continue
        if cut is not None and info["truncated"]:
            cut.append([len(rows), info])
        rows.append(row)
    return rows


def class_weights(labels: list[int], num_labels: int, given) -> list[float] | None:
    """task.class_weights: null, a list, or auto = inverse label frequency, normalised to mean 1.

    auto with counts (30, 10): weights ~ (1/30, 1/10) -> scaled so their mean is 1 -> (0.5, 1.5).
    """
    if given is None:
        return None
    if given != "auto":
        weights = [float(w) for w in given]
        if len(weights) != num_labels:
            raise DataError(f"task.class_weights has {len(weights)} values for {num_labels} labels; give one per label or auto")
        return weights
    counts = [labels.count(k) for k in range(num_labels)]
    inverse = [1.0 / c if c else 0.0 for c in counts]
    scale = num_labels / sum(inverse)
    return [round(w * scale, 6) for w in inverse]


def tokenize_source(data_cfg, task_cfg, tokenizer, template) -> dict:
    """Read, check, split and tokenize the whole source: the parent every data.n subset is cut from.

    Train rows are in the seeded-shuffle order and carry "pos", their place in that order, so the
    subset for data.n is the rows with pos < n: data-size sweeps share one tokenization.
    """
    stats = {"records": 0, "truncated": 0, "dropped_examples": 0, "skipped_records": 0}
    records = sources.read(data_cfg)
    stats["records"] = len(records)
    skipped: list[str] = []
    pairs = _normalise_all(records, data_cfg, task_cfg, stats, skipped)
    seed = int(data_cfg.shuffle_seed) if data_cfg.get("shuffle", True) else None
    if data_cfg.val_path:
        val_pairs = _normalise_all(sources.read(data_cfg, path=data_cfg.val_path, split="validation"), data_cfg, task_cfg, stats,
                                   skipped)
        train_pairs, _ = split(pairs, 0, None, seed)  # the held-out set is the other file
    else:
        train_pairs, val_pairs = split(pairs, float(data_cfg.val_size), None, seed)
    train_rows = []
    for pos, (record, ex) in enumerate(train_pairs):
        row, info = encode_record(record, ex, tokenizer, template, data_cfg, task_cfg, bool(data_cfg.train_on_prompt))
        # A dropped row keeps the columns (Dataset.from_list takes them from the first row).
        train_rows.append(dict(row or {"input_ids": [], "labels": []}, pos=pos, dropped=int(row is None), **info))
    val_stats = dict.fromkeys(("dropped_examples", *TRUNCATION_KEYS), 0)
    val_cut: list = []
    val_rows = encode_all(val_pairs, tokenizer, template, data_cfg, task_cfg, val_stats, val_cut)
    # data.test_path: read, checked and cut like the held-out file, but never seen before the end of the run. Its bad
    # records count with the run's skipped ones (data.on_bad_record); its truncation counts stay out of the run's,
    # which describe the examples it trained and chose by.
    test_pairs = []
    if data_cfg.get("test_path"):
        test_pairs = _normalise_all(sources.read(data_cfg, path=data_cfg.test_path, split="test"), data_cfg, task_cfg, stats,
                                    skipped)
    test_rows = encode_all(test_pairs, tokenizer, template, data_cfg, task_cfg, {})
    return {"train": train_rows, "val": val_rows, "test": test_rows, "val_in_train": _also_trained(val_rows, train_rows),
            "tested_in_train": _also_trained(test_rows, train_rows),
            "eval_prompts": _prompts(val_pairs, tokenizer, template), "test_prompts": _prompts(test_pairs, tokenizer, template),
            "stats": stats, "val_stats": val_stats, "val_cut": val_cut, "skipped": skipped,
            "pool": len(train_pairs), "val_records": len(val_pairs), "test_records": len(test_pairs),
            "test_fingerprint": fingerprint([r.fields for r, _ in test_pairs]) if test_pairs else None,
            "held_out_fingerprint": scored_fingerprint(val_rows),
            "fingerprint": fingerprint([r.fields for r, _ in train_pairs] + [r.fields for r, _ in val_pairs])}


def scored_fingerprint(rows: list[dict]) -> str:
    """The examples as the loss sees them: token ids and what is scored. The same records give another one under
    another data.max_length, template, system prompt or tokenizer: a held-out loss is then over other tokens."""
    return fingerprint([[r["input_ids"], r.get("labels", r.get("label"))] for r in rows])


def _also_trained(val_rows: list[dict], train_rows: list[dict]) -> list[int]:
    """Held-out examples that are training examples too, token for token (and label for label): for each, the first
    training position that holds it, so that a data.n subset counts those it trains on. A file with duplicate
    records puts copies on both sides of the split, and the held-out loss then measures memory, not learning."""
    first: dict = {}
    for row in train_rows:
        if not row["dropped"]:
            first.setdefault((tuple(row["input_ids"]), row.get("label")), row["pos"])
    return [first[key] for key in ((tuple(r["input_ids"]), r.get("label")) for r in val_rows) if key in first]


def _prompts(pairs, tokenizer, template) -> list[dict]:
    """Generation prompts and references of chat examples: everything before the last answer, and that answer."""
    out = []
    for record, ex in pairs:
        if ex.messages is None or template is None:
            continue
        with _naming(record):
            prompt = templates.render_prompt(tokenizer, template, ex.messages, ex.tools)
        out.append({"prompt": prompt, "reference": [m for m in ex.messages if m["role"] == "assistant"][-1]["content"]})
    return out


def prepare(data_cfg, task_cfg, tokenizer, model_cfg=None) -> Bundle:
    from ftsweep import auto
    from ftsweep.data import cache

    template = None
    if task_cfg.name != "classify" and data_cfg.format != "text":
        name = data_cfg.template or (model_cfg.chat_template if model_cfg is not None else None)
        template = templates.resolve(name, tokenizer, data_cfg.get("custom_template"))

    parent = cache.tokenized(data_cfg, task_cfg, tokenizer, template, lambda: tokenize_source(data_cfg, task_cfg, tokenizer, template))
    n = data_cfg.n
    if n is not None and n > parent["pool"]:
        raise DataError(f"data.n={n} is larger than the {parent['pool']} training records left after holding out "
                        f"{parent['val_records']}; lower data.n")
    chosen = parent["train"] if n is None else parent["train"].select(range(int(n)))  # rows are in pos order
    stats = dict(parent["stats"], train_records=len(chosen), val_records=parent["val_records"])
    # Train and held-out examples together: how many lost what to data.max_length, and how many were dropped.
    for key in ("dropped_examples", *TRUNCATION_KEYS):
        column = "dropped" if key == "dropped_examples" else key
        stats[key] = int(sum(chosen[column])) + int(parent["val_stats"].get(key, 0))
    keep = [i for i, d in enumerate(chosen["dropped"]) if not d]
    cut = {key: list(chosen[key]) for key in TRUNCATION_KEYS}
    truncated = {j: {key: cut[key][i] for key in TRUNCATION_KEYS} for j, i in enumerate(keep) if cut["truncated"][i]}
    train = chosen.select(keep).remove_columns(["pos", "dropped", *TRUNCATION_KEYS])
    val = parent["val"]
    if not len(train):
        raise DataError(f"no training example has a learnable token after rendering and truncation to data.max_length="
                        f"{data_cfg.max_length}; raise data.max_length or check data.template")
    if not len(val):
        raise DataError("no held-out example has a learnable token; raise data.val_size or data.max_length")
    test = parent.get("test")  # only a parent built with data.test_path has one (its key names the test file)
    if data_cfg.get("test_path") and (test is None or not len(test)):  # no learnable example: no test split
        raise DataError(f"data.test_path={data_cfg.test_path}: no test example has a learnable token after truncation "
                        f"to data.max_length={data_cfg.max_length}; raise data.max_length")
    stats["test_records"] = parent.get("test_records", 0)
    stats["held_out_in_train"] = sum(1 for pos in parent["val_in_train"] if n is None or pos < int(n))
    stats["tested_in_train"] = sum(1 for pos in parent.get("tested_in_train") or [] if n is None or pos < int(n))
    # The data actually used: the source's records, which of them train (n) and which are held out.
    data_fingerprint = fingerprint({"source": parent["fingerprint"], "n": n})

    weights = None
    if task_cfg.name == "classify":
        weights = class_weights(list(train["label"]), int(task_cfg.num_labels), task_cfg.class_weights)
        collator = Collator(tokenizer.pad_token_id, data_cfg.pad_to_multiple_of, label_key="label")
    elif auto.packing(data_cfg, task_cfg, model_cfg):
        from ftsweep.data.packing import PackingCollator

        collator = PackingCollator()
    else:
        collator = Collator(tokenizer.pad_token_id, data_cfg.pad_to_multiple_of)
    return Bundle(
        train=train,
        val=val,
        collator=collator,
        eval_prompts=list(parent["eval_prompts"]),
        fingerprint=data_fingerprint,
        stats=stats,
        class_weights=weights,
        template=template,
        test=test,
        test_prompts=list(parent.get("test_prompts") or []),
        test_fingerprint=parent.get("test_fingerprint"),
        held_out_fingerprint=parent.get("held_out_fingerprint"),
        skipped=list(parent.get("skipped") or []),
        truncated=truncated,
        held_out_truncated={int(i): info for i, info in parent.get("val_cut") or []},
    )
