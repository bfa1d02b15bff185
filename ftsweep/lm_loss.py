"""A causal LM's token loss without the whole batch's logits at once, in training and held out.

The model's own forward computes logits for every position of the batch, and its loss upcasts them to fp32. At
the peak that costs 14 bytes a logit in training (bf16 logits 2, the fp32 log-softmax kept for backward 4, the
loss's gradient 4, the log-softmax's input gradient 4) and 10 without gradients (bf16 logits 2, their fp32 copy 4,
the fp32 log-softmax 4). At eval.batch_size 16 x 497 tokens and Qwen2.5's 152,064-token vocabulary that was 12.1 GB,
the whole run's memory peak on an H200 for the 0.5B and 7B shapes (10.1-10.6 bytes a logit measured).

Here the decoder runs once and the output layer only on the positions that predict a label, CHUNK_TOKENS of them
at a time. In training each chunk's logits are recomputed in backward (activation checkpointing of the output
layer alone: 2 x tokens x hidden x vocab more FLOPs, the price TRL's SFTTrainer pays by default too), so at most one
chunk's logits exist at once: CHUNK_TOKENS x vocab x 14 bytes (2.2 GB for Qwen2.5, 0.46 GB for Llama-2's 32,000).
The loss is the same cross-entropy, summed in another order.
"""

from __future__ import annotations

import functools
import types

from ftsweep.data.tokenize import IGNORE

CHUNK_TOKENS = 1024


def parts(model):
    """(decoder, output layer) of a causal LM, bare or wrapped by PEFT (its adapter layers live inside the decoder's
    modules); None when the loss is more than the cross-entropy of the output layer's projection (a soft cap or scale
    on the logits, a mixture-of-experts router loss) or the model is no causal LM."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not type(base).__name__.endswith("ForCausalLM"):
        return None
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None
    if getattr(config, "output_router_logits", False):
        return None
    try:
        decoder, head = base.get_decoder(), base.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    return (decoder, head) if decoder is not None and head is not None else None


def _chunk_loss(hidden, labels, head):
    import torch.nn.functional as F

    return F.cross_entropy(head(hidden).float(), labels, reduction="sum")  # fp32, as the model's own loss upcasts


def token_loss_sum(hidden, labels, head, chunk_tokens: int | None = None):
    """(summed cross-entropy, predicted tokens) over a batch's decoder output. A label at i is predicted from
    position i - 1, as in transformers' causal-LM loss; IGNORE labels (prompt, padding, packed-sequence starts)
    predict nothing. With gradients, each chunk's logits are recomputed in backward instead of kept."""
    import torch
    from torch.utils.checkpoint import checkpoint

    chunk_tokens = chunk_tokens or CHUNK_TOKENS
    target = labels[:, 1:].to(hidden.device)
    predicts = target != IGNORE
    h, y = hidden[:, :-1][predicts], target[predicts]
    total = hidden.new_zeros((), dtype=torch.float32)
    for start in range(0, y.numel(), chunk_tokens):
        piece = (h[start:start + chunk_tokens], y[start:start + chunk_tokens], head)
        total = total + (checkpoint(_chunk_loss, *piece, use_reentrant=False) if torch.is_grad_enabled() else _chunk_loss(*piece))
    return total, int(y.numel())


def _decoded_loss_sum(found, labels, inputs: dict, chunk_tokens: int | None = None):
    """token_loss_sum over the decoder's output for `inputs` (everything but the labels), with no KV cache:
    with one, transformers ignores packed rows' restarting positions and attends across their sequences."""
    decoder, head = found
    hidden = decoder(**inputs, use_cache=False).last_hidden_state
    return token_loss_sum(hidden, labels, head, chunk_tokens)


def example_losses(model, inputs: dict, chunk_tokens: int | None = None):
    """(summed token cross-entropy, predicted tokens) of each example of one held-out batch, two lists in batch
    order, or None where `parts` finds no plain output layer (a classifier among them). An example is a row, or in
    a packed row the span from one position id 0 to the next. Call under torch.no_grad().

    The report compares runs example by example on the same held-out set (a paired interval of their difference),
    so each example's share of the loss is kept, not only the batch's sum."""
    import torch
    import torch.nn.functional as F

    found = parts(model)
    if found is None:
        return None
    decoder, head = found
    labels = inputs["labels"]
    hidden = decoder(**{k: v for k, v in inputs.items() if k != "labels"}, use_cache=False).last_hidden_state
    if inputs.get("position_ids") is not None:
        starts = inputs["position_ids"] == 0
    else:
        starts = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
        starts[:, 0] = True
    example = (starts.flatten().cumsum(0) - 1).view(starts.shape)[:, 1:].to(hidden.device)
    target = labels[:, 1:].to(hidden.device)
    predicts = target != IGNORE
    h, y, e = hidden[:, :-1][predicts], target[predicts], example[predicts]
    count = int(starts.sum())
    sums = torch.zeros(count, dtype=torch.float32, device=hidden.device)
    tokens = torch.zeros(count, dtype=torch.long, device=hidden.device)
    step = chunk_tokens or CHUNK_TOKENS
    for start in range(0, y.numel(), step):
        piece = slice(start, start + step)
        sums.index_add_(0, e[piece], F.cross_entropy(head(h[piece]).float(), y[piece], reduction="none"))
        tokens.index_add_(0, e[piece], torch.ones_like(e[piece]))
    return sums.tolist(), tokens.tolist()


def chunks_training(train_cfg) -> bool:
    """Whether a run computes its training loss here: train.chunked_loss, unless Liger's fused linear cross-entropy
    (train.liger_kernel) already keeps the logits out of memory its own way."""
    return bool(train_cfg.chunked_loss) and not train_cfg.liger_kernel


def chunk_training_loss(model) -> bool:
    """Make the causal LM under `model` compute its loss in chunks whenever it is called with labels (training);
    without labels (generation) its forward is its own. Returns whether it could.

    The loss is normalised as transformers' causal-LM loss is: over num_items_in_batch when the Trainer passes it
    (the tokens of the whole accumulated step), else the mean over this batch's predicted tokens."""
    found = parts(model)
    if found is None:
        return False
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    own = base.forward
    plain = ("output_hidden_states", "output_attentions")

    @functools.wraps(type(base).forward)
    def forward(self, *args, labels=None, num_items_in_batch=None, **kwargs):
        if labels is None or args or any(kwargs.get(k) for k in plain) or kwargs.get("return_dict") is False:
            if labels is not None:
                kwargs["labels"] = labels
            if num_items_in_batch is not None:
                kwargs["num_items_in_batch"] = num_items_in_batch
            return own(*args, **kwargs)
        from transformers.modeling_outputs import CausalLMOutputWithPast

        kwargs.pop("use_cache", None)
        # parts looked up again: PEFT or DDP may have replaced the modules since
        total, n = _decoded_loss_sum(parts(self), labels, kwargs)
        if num_items_in_batch is not None:
            loss = total / (num_items_in_batch.to(total.device) if hasattr(num_items_in_batch, "to") else num_items_in_batch)
        else:
            loss = total / n
        return CausalLMOutputWithPast(loss=loss)

    base.forward = types.MethodType(forward, base)
    return True
