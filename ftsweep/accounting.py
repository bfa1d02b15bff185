"""Token accounting: what a batch feeds the model, and what share of it is real text.

tokens_seen counts real (non-pad) tokens, the ones a user's data holds; tokens fed
counts every position the forward pass computes, padding included. Their ratio is
the padding efficiency summary.json and the console report. Pure functions over
plain numbers and a batch's tensors, so they are pinned down without training.
"""

from __future__ import annotations


def batch_tokens(batch: dict) -> tuple[int, int]:
    """(real tokens, all positions) of one collated batch.

    Padded batches: real tokens are the attention mask's ones, positions its size.
    Packed batches carry no attention mask and no padding: every position is real.
    """
    mask = batch.get("attention_mask")
    if mask is None:
        n = int(batch["input_ids"].numel())
        return n, n
    return int(mask.sum()), int(mask.numel())


def padding_efficiency(seen: int, total: int) -> float | None:
    """Real tokens / all positions fed; None before anything was fed."""
    return seen / total if total else None


def restored_total(seen: int, efficiency: float | None) -> int:
    """All positions fed, recovered from a metrics line's tokens_seen and padding_efficiency
    (a resumed run goes on counting from there). No efficiency recorded: nothing was padding."""
    return int(round(seen / efficiency)) if efficiency else seen
