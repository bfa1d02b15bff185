"""Padding-free batches: the examples of a batch laid end to end in one row, positions restarting per example.

    [a1 a2 a3] [b1 b2]  ->  input_ids    [a1 a2 a3 b1 b2]
                            position_ids [ 0  1  2  0  1]
                            labels       [-100 a2 a3 -100 b2]   (an example's first token is never predicted)

transformers builds a block-diagonal causal mask from position ids that restart
(sdpa, eager and flash attention alike) when the forward pass has no attention
mask and no KV cache, so no token attends across examples and no compute goes
to padding. The run turns the model's cache off for training.
"""

from __future__ import annotations

from transformers import DataCollatorWithFlattening


class PackingCollator(DataCollatorWithFlattening):
    """transformers' flattening collator, keeping only what our rows carry."""

    def __init__(self):
        super().__init__(return_position_ids=True, separator_id=-100)

    def __call__(self, features, return_tensors=None):
        rows = [{"input_ids": list(f["input_ids"]), "labels": list(f["labels"])} for f in features]
        return super().__call__(rows, return_tensors)
