"""Held-out loss and perplexity, generation metrics for sft, classification metrics."""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter

_CJK = re.compile(r"([\u3000-\u9fff\uac00-\ud7af\uff00-\uffef])")  # BLEU's choice of sacrebleu's "zh" tokenizer
# rougeL's words: one token per CJK character (kana, ideographs, hangul), and runs of other letters, marks and digits,
# as rouge-score's own tokenizer makes them for English (lower case, anything but a letter or digit splits), so that
# "Paris." matches "Paris" as it does in published ROUGE. Unlike it, letters beyond a-z stay (café, Köln, Москва), with
# their combining marks (नमस्ते, مَرْحَبًا: a vowel sign is part of its word). A script written without spaces other
# than CJK (Thai) is one word per run, as rouge-score would have it.
_CJK_CHAR = re.compile("[\u3041-\u30fa\u30fc-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
                       "\U00020000-\U0003134f]")


def perplexity(loss: float) -> float:
    return math.exp(loss) if loss < 50 else float("inf")


class _Words:
    """rouge_score's default tokenizer drops non-ASCII text; this keeps words and CJK characters, and splits on
    punctuation as it does (NFKC first: a full-width letter or digit is the ASCII one, full-width punctuation
    splits)."""

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        word: list[str] = []
        for ch in unicodedata.normalize("NFKC", text).lower():
            cjk = bool(_CJK_CHAR.match(ch))
            if not cjk and unicodedata.category(ch)[0] in "LMN":  # a letter, mark or digit of a word
                word.append(ch)
                continue
            if word:
                tokens.append("".join(word))
                word = []
            if cjk:
                tokens.append(ch)
        if word:
            tokens.append("".join(word))
        return tokens


def exact_match(prediction: str, reference: str) -> bool:
    """Equal once leading and trailing whitespace is gone (a generation often ends in a newline); case counts."""
    return prediction.strip() == reference.strip()


def generation_metrics(predictions: list[str], references: list[str], names) -> dict[str, float]:
    """exact_match (the share of `exact_match` pairs), rougeL F1 (rouge-score), corpus BLEU (sacrebleu)."""
    out: dict[str, float] = {}
    if not predictions:
        return out
    if "exact_match" in names:
        out["exact_match"] = sum(exact_match(p, r) for p, r in zip(predictions, references)) / len(predictions)
    if "rougeL" in names:
        out["rougeL"] = sum(rouge_l(predictions, references)) / len(predictions)
    if "bleu" in names:
        import sacrebleu

        tokenize = "zh" if any(_CJK.search(r) for r in references) else "13a"
        out["bleu"] = sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score
    return out


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    """rougeL F1 of each prediction against its reference (rouge-score, words and CJK characters)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Words())
    return [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]


def sample_lines(prompts: list[str], references: list[str], predictions: list[str], names) -> list[dict]:
    """samples.jsonl lines: each prompt with its reference and prediction, and the per-example metrics (exact_match;
    rougeL where the run computes it), so that the report can compare runs example by example."""
    rows = [{"prompt": p, "reference": r, "prediction": y, "exact_match": exact_match(y, r)}
            for p, r, y in zip(prompts, references, predictions)]
    if "rougeL" in names:
        for row, score in zip(rows, rouge_l(predictions, references)):
            row["rougeL"] = score
    return rows


def classification_metrics(predictions: list[int], labels: list[int], num_labels: int, names) -> dict[str, float]:
    """Of accuracy and macro precision / recall / F1 (scikit-learn), those in names. The macro average is over the
    classes the held-out labels have: the same for every run that scored the same examples, so that F1 compares
    across a sweep (over the classes each run happened to predict, the average changed with them); a class of
    num_labels that no held-out example has would count as 0 and cap a perfect classifier's F1 (0.75 with 4 labels,
    3 of them held out). A prediction of another class still costs the recall of the true one."""
    from sklearn.metrics import accuracy_score, precision_recall_fscore_support

    classes = sorted(set(labels))
    p, r, f, _ = precision_recall_fscore_support(labels, predictions, labels=classes, average="macro", zero_division=0)
    every = {"accuracy": float(accuracy_score(labels, predictions)), "precision": float(p), "recall": float(r), "f1": float(f)}
    return {name: value for name, value in every.items() if name in names}


def answer_spread(predictions: list, references: list) -> dict | None:
    """How varied a run's answers are (summary.json's ``answer_spread``): how many, how many distinct, the most
    common one and how often it came, and how often the most common reference comes. Texts compare stripped, as
    exact_match does; classes as they are."""
    if not predictions:
        return None

    def key(x):
        return x.strip() if isinstance(x, str) else x

    answers = Counter(map(key, predictions))
    (top, top_count), = answers.most_common(1)
    return {"n": len(predictions), "distinct": len(answers), "top": top, "top_count": top_count,
            "reference_top_count": Counter(map(key, references)).most_common(1)[0][1]}


# A run that gives one answer to 90 % or more of the prompts, more often than any one reference is right, has
# learned at best which answer is most frequent: its task metrics then score that answer against every
# reference (a tiny model early in training repeats one word; a classifier collapses to the majority class).
ONE_ANSWER_SHARE = 0.9


def gives_one_answer(spread: dict | None) -> bool:
    if not isinstance(spread, dict):
        return False
    try:
        n, top, ref = int(spread["n"]), int(spread["top_count"]), int(spread["reference_top_count"])
    except (KeyError, TypeError, ValueError):
        return False
    return n >= 4 and top >= ONE_ANSWER_SHARE * n and top > ref


def generate(model, tokenizer, prompts: list[str], generation: dict, batch_size: int) -> list[str]:
    """Batched generation, left-padded; returns only the new text of each prompt."""
    import torch

    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # new tokens must follow every prompt directly
    outputs: list[str] = []
    was_training = model.training
    model.eval()
    try:
        for i in range(0, len(prompts), batch_size):
            batch = tokenizer(prompts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
            batch = {k: v.to(model.device) for k, v in batch.items()}
            with torch.no_grad():
                out = model.generate(
                    **batch, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **generation
                )
            new = out[:, batch["input_ids"].shape[1] :]
            outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
        model.train(was_training)
    return outputs


def predict_classes(trainer, dataset) -> tuple[list[int], list[int]]:
    pred = trainer.predict(dataset)
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    return [int(x) for x in logits.argmax(-1)], [int(x) for x in pred.label_ids]
