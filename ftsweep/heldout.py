"""A causal LM's held-out loss without the whole batch's logits at once.

The model's own forward computes logits for every position of the batch and the loss upcasts them to fp32: 10 bytes a
logit at the peak (bf16 logits 2, their fp32 copy 4, the fp32 log-softmax 4). At eval.batch_size 16 x 497 tokens and
Qwen2.5's 152,064-token vocabulary that is 12.1 GB, which was the whole run's memory peak on an H200 for both the
0.5B and the 7B shape (training at micro batch 4 peaked lower). Here the decoder runs once, the output layer only on
the positions that predict a label, CHUNK_TOKENS of them at a time: the same cross-entropy, summed, in
CHUNK_TOKENS x vocab x 10 bytes (1.5 GB for Qwen2.5; 0.3 GB for Llama-2's 32,000).
"""

from __future__ import annotations

from ftsweep.data.tokenize import IGNORE

CHUNK_TOKENS = 1024


def parts(model):
    """(decoder, output layer) of a causal LM, bare or wrapped by PEFT (its adapter layers live inside the decoder's
    modules); None when the logits are more than the output layer's projection (a soft cap or scale on them)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not type(base).__name__.endswith("ForCausalLM"):
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return (decoder, head) if decoder is not None and head is not None else None


def loss_sum(model, inputs: dict, chunk_tokens: int = CHUNK_TOKENS):
    """(summed token cross-entropy, predicted tokens) of one batch, or None where `parts` finds no plain output layer.

    A label at i is predicted from position i - 1, as in transformers' causal-LM loss; IGNORE labels (prompt, padding,
    packed-sequence starts) predict nothing. Call under torch.no_grad()."""
    import torch
    import torch.nn.functional as F

    found = parts(model)
    if found is None:
        return None
    decoder, head = found
    labels = inputs["labels"]
    hidden = decoder(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).last_hidden_state
    target = labels[:, 1:]
    predicts = target != IGNORE
    h, y = hidden[:, :-1][predicts], target[predicts]
    total = torch.zeros((), dtype=torch.float32, device=hidden.device)
    for start in range(0, y.numel(), chunk_tokens):
        logits = head(h[start:start + chunk_tokens]).float()  # as the model's loss upcasts them
        total += F.cross_entropy(logits, y[start:start + chunk_tokens], reduction="sum")
    return float(total), int(y.numel())
