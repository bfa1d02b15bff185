"""Multiple-choice and labelled records, field by field: the text a classifier reads, the answer an sft run learns,
and the one line each malformed label or option list gets (with the record and the fix)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ftsweep.data.formats import normalise
from ftsweep.data.sources import DataError, Record

CLASSIFY = OmegaConf.create({"name": "classify", "num_labels": 4})
SFT = OmegaConf.create({"name": "sft"})


def data_cfg(fmt="multiple_choice", **kw):
    return OmegaConf.create({"format": fmt, "columns": {}, "roles": {}, "system": None, **kw})


def record(**fields):
    base = {"context": "Rain fell.", "question": "What fell?", "answers": ["rain", "snow", "hail"], "label": 0}
    return Record({**base, **fields}, "train.jsonl: record 3")


def test_a_multiple_choice_record_is_lettered_options_for_a_classifier():
    ex = normalise(record(label=2), data_cfg(), CLASSIFY)
    assert ex.text == "Context: Rain fell.\nQuestion: What fell?\nOption A: rain\nOption B: snow\nOption C: hail"
    assert ex.label == 2 and ex.messages is None


def test_for_sft_the_answer_is_the_letter_after_the_prompt():
    ex = normalise(record(label=1), data_cfg(system="Answer with a letter."), SFT)
    assert ex.messages == [
        {"role": "system", "content": "Answer with a letter."},
        {"role": "user", "content": "Context: Rain fell.\nQuestion: What fell?\nOption A: rain\nOption B: snow\n"
                                    "Option C: hail\nAnswer:"},
        {"role": "assistant", "content": "B"},
    ]


@pytest.mark.parametrize("label, expected", [("2", 2), (" 0 ", 0), (1, 1)])
def test_a_label_written_as_digits_is_an_index(label, expected):
    assert normalise(record(label=label), data_cfg(), CLASSIFY).label == expected


@pytest.mark.parametrize("fields, line", [
    ({"label": True}, "train.jsonl: record 3: field 'label' is True, expected a class index (0, 1, ...); store labels as integers"),
    ({"label": 1.0}, "train.jsonl: record 3: field 'label' is 1.0, expected a class index (0, 1, ...); store labels as integers"),
    ({"label": "B"}, "train.jsonl: record 3: field 'label' is 'B', expected a class index (0, 1, ...); store labels as integers"),
    ({"label": 3}, "train.jsonl: record 3: field 'label' is 3, but the record has 3 answers; use an index in 0..2"),
    ({"label": "-1"}, "train.jsonl: record 3: field 'label' is -1, but the record has 3 answers; use an index in 0..2"),
    ({"label": None}, "train.jsonl: record 3: field 'label' is missing; add it, or map another column with "
                      "data.columns.label=NAME"),
    ({"answers": ["only"]}, "train.jsonl: record 3: field 'answers' is not a list of at least two strings; "
                            'write it as ["first option", "second option", ...]'),
    ({"answers": ["a", 2]}, "train.jsonl: record 3: field 'answers' is not a list of at least two strings; "
                            'write it as ["first option", "second option", ...]'),
    ({"answers": "a, b"}, "train.jsonl: record 3: field 'answers' is not a list of at least two strings; "
                          'write it as ["first option", "second option", ...]'),
    ({"answers": [str(i) for i in range(11)], "label": 10},
     "train.jsonl: record 3: field 'answers' has 11 options, more than the 10 lettered A to J; split the question or drop options"),
    ({"question": " "}, "train.jsonl: record 3: field 'question' is empty; give it text, or drop the record "
                        "(data.on_bad_record=skip skips such records)"),
])
def test_a_malformed_record_gets_one_line_naming_it_and_the_fix(fields, line):
    with pytest.raises(DataError) as caught:
        normalise(record(**fields), data_cfg(), CLASSIFY)
    assert str(caught.value) == line


def test_ten_options_are_lettered_to_j_and_an_empty_context_is_allowed():
    ex = normalise(record(answers=[f"o{i}" for i in range(10)], label=9, context=""), data_cfg(), SFT)
    assert ex.messages[0]["content"].startswith("Context: \nQuestion: What fell?\nOption A: o0\n")
    assert ex.messages[0]["content"].endswith("Option J: o9\nAnswer:") and ex.messages[1]["content"] == "J"


def test_a_label_beyond_num_labels_names_the_knob():
    with pytest.raises(DataError) as caught:
        normalise(Record({"text": "hello", "label": 4}, "t.csv: record 2"), data_cfg("text"), CLASSIFY)
    assert str(caught.value) == ("t.csv: record 2: field 'label' is 4, outside task.num_labels=4 (labels are 0..3); "
                                 "fix the record or raise task.num_labels")
    assert normalise(Record({"text": "hello", "label": "3"}, "t.csv: record 2"), data_cfg("text"), CLASSIFY).label == 3


def test_a_renamed_label_column_is_named_in_its_errors():
    cfg = data_cfg(columns={"label": "gold"})
    assert normalise(record(gold=1), cfg, CLASSIFY).label == 1
    with pytest.raises(DataError, match="field 'gold' is 'x'"):
        normalise(record(gold="x"), cfg, CLASSIFY)


def test_classify_refuses_a_conversation_format():
    with pytest.raises(DataError) as caught:
        normalise(Record({"instruction": "a", "input": "", "output": "b"}, "r"), data_cfg("alpaca"), CLASSIFY)
    assert str(caught.value) == "task=classify reads data.format=multiple_choice or text (with a label), not alpaca"
