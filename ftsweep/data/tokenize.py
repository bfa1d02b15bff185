"""Token ids and labels with the prompt masked, truncation, and batch collation."""

from __future__ import annotations

IGNORE = -100  # label value the loss skips


def encode_segments(tokenizer, segments: list[tuple[str, bool]], train_on_prompt: bool = False) -> tuple[list[int], list[int]]:
    """Concatenate segment tokens; labels copy learned tokens and mask the rest."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, learn in segments:
        ids = tokenizer.encode(text, add_special_tokens=False)
        input_ids += ids
        labels += ids if (learn or train_on_prompt) else [IGNORE] * len(ids)
    return input_ids, labels


def truncate(input_ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int], bool]:
    """Fit into max_length: keep the response, cut the prompt from the left, then the response from the right.

    Prompt tokens are the masked ones before the last learned token; they are
    removed oldest first until the sequence fits or no prompt is left.
    """
    excess = len(input_ids) - max_length
    if excess <= 0:
        return input_ids, labels, False
    keep = [True] * len(input_ids)
    for i, lab in enumerate(labels):
        if excess == 0:
            break
        if lab == IGNORE:
            keep[i] = False
            excess -= 1
    ids = [t for t, k in zip(input_ids, keep) if k][:max_length]
    labs = [t for t, k in zip(labels, keep) if k][:max_length]
    return ids, labs, True


class Collator:
    """Dynamic padding: each batch is padded to its own longest sequence (optionally a multiple of N)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, label_key: str = "labels"):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of
        self.label_key = label_key

    def __call__(self, features: list[dict]):
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple  # round up
        batch = {"input_ids": [], "attention_mask": []}
        if self.label_key == "labels":
            batch["labels"] = []
        for f in features:
            pad = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
            if self.label_key == "labels":
                batch["labels"].append(list(f["labels"]) + [IGNORE] * pad)
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
        if self.label_key == "label":
            out["labels"] = torch.tensor([int(f["label"]) for f in features], dtype=torch.long)
        return out
