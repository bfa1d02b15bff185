"""The task metrics of a generated answer, from known pairs: what the report's exact_match, rougeL and bleu mean."""

from __future__ import annotations

import pytest

from ftsweep import evaluation

ALL = ["exact_match", "rougeL", "bleu"]


def test_exact_match_ignores_surrounding_whitespace_but_not_case_or_inner_text():
    assert evaluation.exact_match("Paris\n", " Paris")
    assert not evaluation.exact_match("paris", "Paris")
    assert not evaluation.exact_match("New  York", "New York")
    share = evaluation.generation_metrics(["Paris\n", " 4", "blue"], ["Paris", "5", "blue "], ["exact_match"])
    assert share == {"exact_match": pytest.approx(2 / 3)}


def test_rouge_l_is_the_f1_of_the_longest_common_subsequence():
    # LCS("the cat sat", "the cat sat on the mat") = 3 words: precision 3/3, recall 3/6, F1 = 2 * 1 * 0.5 / 1.5
    got = evaluation.generation_metrics(["the cat sat"], ["the cat sat on the mat"], ["rougeL"])
    assert got == {"rougeL": pytest.approx(2 / 3)}
    # the mean over pairs, not one score of the concatenation: (1 + 0) / 2
    assert evaluation.generation_metrics(["a b", "c"], ["a b", "d"], ["rougeL"])["rougeL"] == pytest.approx(0.5)


def test_chinese_counts_characters_in_rouge_and_bleu():
    # 7 of the reference's 7 characters in order, among the prediction's 9: F1 = 2 * (7/9) * 1 / (7/9 + 1) = 0.875
    got = evaluation.generation_metrics(["我爱北京天安门广场"], ["我爱北京天安门"], ["rougeL", "bleu"])
    assert got["rougeL"] == pytest.approx(0.875)
    # sacrebleu's 13a tokenizer would see one word on each side, different ones: BLEU 0; per character it is not
    assert got["bleu"] > 50


def test_bleu_is_100_for_identical_text_and_0_for_nothing_shared():
    assert evaluation.generation_metrics(["the quick brown fox jumps"], ["the quick brown fox jumps"], ["bleu"])["bleu"] == pytest.approx(100.0)
    assert evaluation.generation_metrics(["alpha beta gamma delta"], ["one two three four"], ["bleu"]) == {"bleu": 0.0}


def test_only_the_metrics_asked_for_and_none_without_predictions():
    assert set(evaluation.generation_metrics(["x"], ["x"], ["bleu", "exact_match"])) == {"bleu", "exact_match"}
    assert evaluation.generation_metrics([], [], ALL) == {}
