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


@pytest.mark.parametrize("prediction, reference", [
    ("The capital is Paris.", "Paris"),  # 0.4 in rouge-score; 0.0 while "paris." was a word of its own
    ("Hello, world!", "hello world"),
    ("state-of-the-art results (2024)", "state of the art results in 2024"),
    ("the_cat sat", "the cat sat"),
])
def test_rouge_l_on_english_is_rouge_scores_own(prediction, reference):
    from rouge_score import rouge_scorer

    published = rouge_scorer.RougeScorer(["rougeL"]).score(reference, prediction)["rougeL"].fmeasure
    assert evaluation.rouge_l([prediction], [reference]) == [pytest.approx(published)]
    assert published > 0


def test_rouge_l_keeps_letters_beyond_ascii_and_drops_punctuation_of_any_width():
    words = evaluation._Words()
    assert words.tokenize("Köln, Москва!") == ["köln", "москва"]  # rouge-score itself keeps neither
    assert words.tokenize("北京现在3度。ＡＢＣ１２，好") == ["北", "京", "现", "在", "3", "度", "abc12", "好"]
    # A combining mark is part of its word (a Devanagari vowel sign, Arabic vowel marks), not a split.
    assert words.tokenize("नमस्ते दुनिया") == ["नमस्ते", "दुनिया"] and words.tokenize("مَرْحَبًا") == ["مَرْحَبًا"]
    # Kana one by one, the middle dot splits; ideographs beyond the basic block are characters too.
    assert words.tokenize("テスト・こと 𠀀𠀁") == ["テ", "ス", "ト", "こ", "と", "𠀀", "𠀁"]
    assert evaluation.rouge_l(["北京现在3度。"], ["北京现在3度"]) == [pytest.approx(1.0)]


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


def test_answer_spread_counts_stripped_answers_and_the_most_common_reference():
    spread = evaluation.answer_spread(["is is\n", " is is", "cat", "is is"], ["a", "b", "b", "c"])
    assert spread == {"n": 4, "distinct": 2, "top": "is is", "top_count": 3, "reference_top_count": 2}
    assert evaluation.answer_spread([], []) is None
    assert evaluation.answer_spread([0, 0, 2], [0, 1, 2]) == {"n": 3, "distinct": 2, "top": 0, "top_count": 2,
                                                             "reference_top_count": 1}


@pytest.mark.parametrize(("n", "top", "reference_top", "one"), [
    (32, 32, 2, True),  # one text for every prompt
    (10, 9, 5, True),  # 90 %: the threshold itself
    (10, 8, 5, False),  # 80 %
    (80, 78, 78, False),  # as often as the most frequent reference: a task whose answers are that skewed
    (80, 79, 78, True),
    (3, 3, 1, False),  # too few to tell
])
def test_one_answer_needs_90_percent_and_more_than_the_most_common_reference(n, top, reference_top, one):
    assert evaluation.gives_one_answer({"n": n, "distinct": 1, "top": "x", "top_count": top,
                                        "reference_top_count": reference_top}) is one
    assert evaluation.gives_one_answer(None) is False and evaluation.gives_one_answer({"n": 4}) is False
