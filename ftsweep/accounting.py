"""Token and loss accounting: what a batch feeds the model, what share of it is real text, the run's mean loss.

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


def mean_train_loss(lines: list[dict]) -> float | None:
    """The run's mean training loss over every step, from its metrics.jsonl train lines. Each line's loss is the
    mean over the steps since the line before, so it weighs by their number: lines at steps 2 and 5 with losses
    5.0 and 4.0 give (2 x 5.0 + 3 x 4.0) / 5 = 4.4. A resumed run's lines are those of the whole run, so this is
    its mean from step 1 (transformers' own train loss covers the steps since the resume only)."""
    total, previous = 0.0, 0
    for line in sorted((r for r in lines if r.get("split") == "train"), key=lambda r: r["step"]):
        total += line["loss"] * (line["step"] - previous)
        previous = line["step"]
    return total / previous if previous else None
