"""The held-out loss is one mean over every predicted token of the held-out set (every example, for classification):
it does not depend on the evaluation batch size, and class weights, which shape training, do not enter it."""

from __future__ import annotations

import pytest
import torch

from ftsweep.data.tokenize import IGNORE, Collator
from ftsweep.training import SweepTrainer

# Seven examples of different lengths, prompts masked, one with nothing to learn (its answer cut away).
LENGTHS = [(5, 3), (12, 4), (3, 6), (20, 2), (7, 0), (9, 9), (4, 11)]  # (prompt tokens, answer tokens)


def _examples(vocab: int) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for prompt, answer in LENGTHS:
        ids = torch.randint(3, vocab, (prompt + answer,), generator=g).tolist()
        out.append({"input_ids": ids, "labels": [IGNORE] * prompt + ids[prompt:]})
    return out


def _trainer(model, dataset, collator, tmp_path, batch_size: int, **kwargs) -> SweepTrainer:
    from transformers import TrainingArguments

    args = TrainingArguments(output_dir=str(tmp_path / "out"), per_device_eval_batch_size=batch_size, use_cpu=True,
                             report_to="none", remove_unused_columns=False)
    return SweepTrainer(model=model, args=args, eval_dataset=dataset, data_collator=collator, **kwargs)


def test_the_held_out_loss_is_the_token_mean_whatever_the_batch_size(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    examples = _examples(model.config.vocab_size)
    # Each example alone, summed: every predicted token counts once (a label at i is predicted from position i - 1).
    nll, tokens = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            logits = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0, :-1]
            labels = torch.tensor(ex["labels"][1:])
            nll += float(torch.nn.functional.cross_entropy(logits, labels, ignore_index=IGNORE, reduction="sum"))
            tokens += int((labels != IGNORE).sum())
    expected = nll / tokens
    collator = Collator(pad_token_id=0)
    losses = {b: _trainer(model, examples, collator, tmp_path, b).evaluate()["eval_loss"] for b in (1, 3, 16)}
    # transformers' loop averaged batch means, the last (short) batch weighing like a full one: 5.61725 in batches
    # of 1, 5.63161 in batches of 3, against 5.61739.
    assert losses == {b: pytest.approx(expected, rel=1e-5) for b in losses}, (expected, losses)


def test_class_weights_leave_the_held_out_loss_the_plain_cross_entropy(tiny_model_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=4, dtype=torch.float32).eval()
    model.config.pad_token_id = 0  # the head reads each sequence's last real token, whatever the batch's padding
    with torch.no_grad():
        model.score.weight.mul_(50)  # an untrained head predicts every class alike: weighted and plain would agree
    g = torch.Generator().manual_seed(1)
    examples = [{"input_ids": torch.randint(3, 200, (n,), generator=g).tolist(), "label": n % 4} for n in range(4, 14)]
    collator = Collator(pad_token_id=0, label_key="label")
    batch = collator(examples)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = float(torch.nn.functional.cross_entropy(logits, batch["labels"]))
    weighted = float(torch.nn.functional.cross_entropy(logits, batch["labels"], weight=torch.tensor([1.0, 10, 10, 10])))
    assert abs(plain - weighted) > 0.05  # the check below can tell them apart
    loss = _trainer(model, examples, collator, tmp_path, 3, classify=True, class_weights=[1.0, 10, 10, 10]).evaluate()
    assert loss["eval_loss"] == pytest.approx(plain, rel=1e-5)
