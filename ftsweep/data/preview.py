"""mode=preview: what the model will see, before anything trains.

    python -m ftsweep mode=preview data=alpaca data.path=train.json preview.k=3

prints the first k rendered training examples with the learned span between
markers, their token counts, then the first example data.max_length cut (and how), how many records were truncated (and how: turns
dropped, prompts cut, responses cut), dropped or rejected; the check users otherwise do by decoding input_ids and labels by hand.
"""

from __future__ import annotations

from ftsweep.data import skipped_note
from ftsweep.data.tokenize import IGNORE

LEARN_OPEN, LEARN_CLOSE = "[[", "]]"  # marks learned tokens in the printout


def marked_text(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """Decode an example, wrapping every run of learned tokens in [[ ]]."""
    out, run, learning = [], [], False
    for tok, lab in zip(input_ids, labels):
        learn = lab != IGNORE
        if learn != learning and run:
            text = tokenizer.decode(run)
            out.append(f"{LEARN_OPEN}{text}{LEARN_CLOSE}" if learning else text)
            run = []
        run.append(tok)
        learning = learn
    if run:
        text = tokenizer.decode(run)
        out.append(f"{LEARN_OPEN}{text}{LEARN_CLOSE}" if learning else text)
    return "".join(out)


def _what_was_cut(info: dict) -> str:
    parts = [f"{info['turns_dropped']} earlier exchange{'s' if info['turns_dropped'] != 1 else ''} dropped"
             if info.get("turns_dropped") else "", "question cut" if info.get("prompts_cut") else "",
             "answer cut from the right" if info.get("responses_cut") else ""]
    return ", ".join(p for p in parts if p) or "cut to data.max_length"


def _example(title: str, row: dict, tokenizer, classify: bool, cut: dict | None) -> list[str]:
    ids = row["input_ids"]
    # A classification example keeps its end (question and options); a chat is fitted exchange by exchange.
    what = "its start cut, the end (question and options) kept" if classify else _what_was_cut(cut) if cut else ""
    how = f"; truncated: {what}" if cut else ""
    if classify:
        return [f"--- {title}: {len(ids)} tokens, label {row['label']}{how}", tokenizer.decode(ids)]
    learned = sum(lab != IGNORE for lab in row["labels"])
    return [f"--- {title}: {len(ids)} tokens, {learned} learned (between {LEARN_OPEN} {LEARN_CLOSE}){how}",
            marked_text(tokenizer, ids, row["labels"])]


def render(bundle, tokenizer, k: int, classify: bool) -> str:
    lines = []
    shown = range(min(k, len(bundle.train)))
    for i in shown:
        lines += _example(f"example {i + 1}", bundle.train[i], tokenizer, classify, bundle.truncated.get(i))
    # The first k examples are a shuffle's; a long chat that data.max_length cut is rarely among them, and how it
    # was fitted is what a user with long records needs to read: the first such example follows them (a held-out
    # one when no training example was cut).
    if bundle.truncated and not any(i in bundle.truncated for i in shown):
        first = min(bundle.truncated)
        lines += _example(f"example {first + 1}, the first that data.max_length cut", bundle.train[first], tokenizer,
                          classify, bundle.truncated[first])
    elif not bundle.truncated and bundle.held_out_truncated:
        first = min(bundle.held_out_truncated)
        lines += _example(f"held-out example {first + 1}, the first that data.max_length cut", bundle.val[first],
                          tokenizer, classify, bundle.held_out_truncated[first])
    lengths = [len(x) for x in bundle.train["input_ids"]]
    s = bundle.stats
    lines.append("---")
    lines.append(f"records {s['records']}: {s['train_records']} train, {s['val_records']} held out; "
                 f"dropped {s['dropped_examples']} (too long for a header and one learned token: "
                 f"{s.get('dropped_too_long', 0)}), rejected as bad {s['skipped_records']}")
    if s["skipped_records"]:
        lines.append(skipped_note(s["skipped_records"], bundle.skipped))
    lines.append(f"truncated to data.max_length: {s['truncated']} example{'' if s['truncated'] == 1 else 's'}; "
                 f"turns dropped {s.get('turns_dropped', 0)}, prompts cut {s.get('prompts_cut', 0)}, "
                 f"responses cut {s.get('responses_cut', 0)}")
    lines.append(f"train tokens: {sum(lengths)} in {len(lengths)} examples, length min {min(lengths)} / "
                 f"mean {sum(lengths) / len(lengths):.1f} / max {max(lengths)}")
    if bundle.class_weights:
        lines.append(f"class weights: {bundle.class_weights}")
    return "\n".join(lines)


def main(cfg) -> None:
    from ftsweep import data, models
    from ftsweep import runtime

    runtime.quiet_libraries()  # the CLI validated cfg
    path = models.resolve_model_path(cfg.model)
    tokenizer = models.load_tokenizer(cfg.model, path)
    bundle = data.prepare(cfg.data, cfg.task, tokenizer, cfg.model)
    print(render(bundle, tokenizer, int(cfg.preview.k), cfg.task.name == "classify"), flush=True)
