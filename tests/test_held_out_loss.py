"""The losses a run reports are means over what they say. The held-out loss: over every predicted token of the
held-out set (every example, for classification), whatever the evaluation batch size; class weights, which shape
training, do not enter it. A classifier's training loss: over the step's examples, however they are accumulated."""

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


def _classifier(tiny_model_dir):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)  # the new head's initial weights: the same classifier at every call
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=4, dtype=torch.float32).eval()
    model.config.pad_token_id = 0  # the head reads each sequence's last real token, whatever the batch's padding
    with torch.no_grad():
        model.score.weight.mul_(50)  # an untrained head predicts every class alike: weighted and plain would agree
    g = torch.Generator().manual_seed(1)
    examples = [{"input_ids": torch.randint(3, 200, (n,), generator=g).tolist(), "label": n % 4} for n in range(4, 12)]
    return model, examples, Collator(pad_token_id=0, label_key="label")


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
    model, examples, collator = _classifier(tiny_model_dir)
    batch = collator(examples)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    plain = float(torch.nn.functional.cross_entropy(logits, batch["labels"]))
    weighted = float(torch.nn.functional.cross_entropy(logits, batch["labels"], weight=torch.tensor([1.0, 10, 10, 10])))
    assert abs(plain - weighted) > 0.05  # the check below can tell them apart
    loss = _trainer(model, examples, collator, tmp_path, 3, classify=True, class_weights=[1.0, 10, 10, 10]).evaluate()
    assert loss["eval_loss"] == pytest.approx(plain, rel=1e-5)


def test_a_classifier_step_is_the_same_however_its_batch_is_accumulated(tiny_model_dir, tmp_path):
    """8 examples a step as 8 x 1 or 2 x 4. transformers took a classification head's loss (each micro batch's
    mean) for a sum over the accumulated batch, so it never divided by the accumulation steps: at 2 x 4 the logged
    loss and the gradient were 4 times too large (here 48.77 against 12.19)."""
    from transformers import TrainingArguments

    steps = {}
    for micro, accum in ((8, 1), (2, 4)):
        model, examples, collator = _classifier(tiny_model_dir)
        args = TrainingArguments(output_dir=str(tmp_path / f"{micro}x{accum}"), per_device_train_batch_size=micro,
                                 gradient_accumulation_steps=accum, max_steps=1, learning_rate=1e-3, logging_steps=1,
                                 use_cpu=True, report_to="none", remove_unused_columns=False, save_strategy="no",
                                 train_sampling_strategy="sequential")
        trainer = SweepTrainer(model=model, args=args, train_dataset=examples, data_collator=collator, classify=True)
        trainer.train()
        (line,) = [x for x in trainer.state.log_history if "loss" in x]
        steps[micro] = (line["loss"], line["grad_norm"])
    with torch.no_grad():
        batch = collator(examples)
        mean = float(torch.nn.functional.cross_entropy(_classifier(tiny_model_dir)[0](
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]))
    assert steps[8][0] == pytest.approx(mean, rel=1e-5)  # the mean over the step's 8 examples
    assert steps[2] == pytest.approx(steps[8], rel=1e-5)


@pytest.mark.parametrize("packed", [False, True])
def test_the_held_out_loss_in_chunks_is_the_models_own_loss(tiny_model_dir, packed):
    """ftsweep.lm_loss runs the decoder once and the output layer on a few positions at a time (the whole batch's
    logits were a run's memory peak on a GPU): through a LoRA adapter, padded or packed, the sum is the model's own."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ftsweep import lm_loss
    from ftsweep.data.packing import PackingCollator

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    base.config.use_cache = False  # with a cache transformers ignores the packed rows' restarting positions
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False)).eval()
    examples = _examples(base.config.vocab_size)
    batch = (PackingCollator() if packed else Collator(pad_token_id=0))(examples)
    n = int((batch["labels"][..., 1:] != IGNORE).sum())
    with torch.no_grad():
        own = float(model(**batch).loss) * n
        sums, counts = lm_loss.example_losses(model, batch, chunk_tokens=4)  # 9 chunks of 4 or fewer
    summed, tokens = sum(sums), sum(counts)
    assert tokens == n == 35
    assert summed == pytest.approx(own, rel=1e-5)
    # Example by example (a packed row split where its position ids restart): each one's loss alone, as the
    # model scores it in a batch of one; the one with nothing to learn has 0 tokens.
    with torch.no_grad():
        alone = [lm_loss.example_losses(model, Collator(pad_token_id=0)([ex])) for ex in examples]
    assert counts == [answer for _, answer in LENGTHS] and [t for _, (t,) in alone] == counts
    assert sums == pytest.approx([x for (x,), _ in alone], rel=1e-5, abs=1e-6)
    base.config.final_logit_softcapping = 30.0  # logits that are not the plain projection: the model's own forward
    assert lm_loss.example_losses(model, batch) is None


@pytest.mark.parametrize("packed", [False, True])
def test_the_chunked_training_loss_and_gradients_are_the_models_own(tiny_model_dir, packed, monkeypatch):
    """train.chunked_loss: the forward with labels computes the loss a chunk of positions at a time and recomputes
    each chunk's logits in backward. Loss and every adapter gradient equal the model's own, normalised the same way
    with or without the Trainer's num_items_in_batch; without labels (generation) the forward is the model's own."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from ftsweep import lm_loss
    from ftsweep.data.packing import PackingCollator

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False, lora_dropout=0.0))
    batch = (PackingCollator() if packed else Collator(pad_token_id=0))(_examples(base.config.vocab_size))

    def loss_and_grads(**extra):
        model.zero_grad()
        loss = model(**batch, **extra).loss
        loss.backward()
        return float(loss.detach()), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"]).logits
    ways = {"mean": {}, "over the step": {"num_items_in_batch": torch.tensor(70)}}  # as the Trainer passes it
    own = {way: loss_and_grads(**extra) for way, extra in ways.items()}
    assert lm_loss.chunk_training_loss(model)
    monkeypatch.setattr(lm_loss, "CHUNK_TOKENS", 4)  # 35 predicted tokens: 9 chunks, each recomputed in backward
    for way, (loss, grads) in own.items():
        loss_c, grads_c = loss_and_grads(**ways[way])
        assert loss_c == pytest.approx(loss, rel=1e-5)
        assert grads_c.keys() == grads.keys() and len(grads) > 10
        for name in grads:
            assert torch.allclose(grads_c[name], grads[name], rtol=1e-4, atol=1e-7), name
    assert own["over the step"][0] == pytest.approx(own["mean"][0] / 2, rel=1e-5)  # 35 predicted tokens over 70
    with torch.no_grad():
        assert torch.equal(model(input_ids=batch["input_ids"]).logits, logits)


@pytest.mark.slow
def test_a_run_with_the_chunked_loss_reports_what_the_models_own_loss_reports(cli, tmp_path):
    """The whole run, with train.chunked_loss on (the default) and off: every train and held-out loss line agrees."""
    import json

    from conftest import FAST

    lines = {}
    for chunked in ("true", "false"):
        run = tmp_path / chunked
        proc = cli([*FAST, "eval.num_samples=0", f"train.chunked_loss={chunked}", f"hydra.run.dir={run}"])
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines[chunked] = [(r["split"], r["step"], r.get("loss", r.get("eval_loss")))
                          for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert len(lines["true"]) >= 6 and all(loss is not None for *_, loss in lines["true"])
    assert [x[:2] for x in lines["true"]] == [x[:2] for x in lines["false"]]
    for (_, _, a), (_, _, b) in zip(lines["true"], lines["false"]):
        assert a == pytest.approx(b, rel=1e-4)
