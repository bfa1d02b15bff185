"""Multiple-choice and labelled records, field by field: the text a classifier reads, the answer an sft run learns,
and the one line each malformed label or option list gets (with the record and the fix)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ftsweep.data.formats import DEFAULT_ROLES, normalise
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


# ---- alpaca and conversations: the messages a template renders, and each malformed record's line ------------

def test_an_alpaca_record_with_history_and_system_is_the_conversation_it_describes():
    rec = Record({"instruction": "Add", "input": "2 3", "output": "5", "system": "Be terse.",
                  "history": [["hi", "hello"], ("1+1", 2)]}, "a.json: record 1")
    assert normalise(rec, data_cfg("alpaca", system="ignored: the record has its own"), SFT).messages == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
        {"role": "user", "content": "1+1"}, {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Add\n2 3", "instruction": "Add", "input": "2 3"},
        {"role": "assistant", "content": "5"},
    ]
    bare = Record({"instruction": "", "input": "only input", "output": "x"}, "a.json: record 2")
    assert normalise(bare, data_cfg("alpaca"), SFT).messages == [
        {"role": "user", "content": "\nonly input", "instruction": "", "input": "only input"}, {"role": "assistant", "content": "x"}]


def test_instruction_as_system_makes_the_input_the_user_turn():
    rec = Record({"instruction": "Tag the article.", "input": "Rain in Paris.", "output": "weather"}, "a.json: record 1")
    assert normalise(rec, data_cfg("alpaca", instruction_as_system=True), SFT).messages == [
        {"role": "system", "content": "Tag the article."},
        {"role": "user", "content": "Rain in Paris.", "instruction": "Rain in Paris.", "input": ""},
        {"role": "assistant", "content": "weather"}]


@pytest.mark.parametrize("fields, cfg, line", [
    ({"instruction": " ", "input": "", "output": "x"}, {},
     "field 'instruction' is empty and so is the input; give the record a prompt"),
    ({"instruction": "a", "input": "", "output": "x"}, {"instruction_as_system": True},
     "field 'input' is empty, but data.instruction_as_system=true makes it the user turn; give it text"),
    ({"instruction": "a", "output": "x", "history": [["q"]]}, {},
     "field 'history' is not a list of [query, response] pairs; write it as [[\"q1\", \"a1\"], [\"q2\", \"a2\"]]"),
    ({"instruction": "a", "output": "x", "history": "q a"}, {},
     "field 'history' is not a list of [query, response] pairs; write it as [[\"q1\", \"a1\"], [\"q2\", \"a2\"]]"),
    ({"instruction": "a", "output": ""}, {},
     "field 'output' is empty; give it text, or drop the record (data.on_bad_record=skip skips such records)"),
    ({"instruction": 3, "output": "x"}, {}, "field 'instruction' is a number, expected text; make it a string"),
])
def test_a_malformed_alpaca_record_gets_one_line(fields, cfg, line):
    with pytest.raises(DataError) as caught:
        normalise(Record(fields, "a.json: record 7"), data_cfg("alpaca", **cfg), SFT)
    assert str(caught.value) == "a.json: record 7: " + line


ROLES = {"human": "user", "gpt": "assistant", "system": "system", "function_call": "tool_call", "observation": "tool"}


def sharegpt(*turns, **fields):
    return Record({"conversations": [{"from": f, "value": v} for f, v in turns], **fields}, "c.jsonl: record 2")


def test_a_sharegpt_chat_with_a_tool_call_is_the_template_s_messages_and_tools():
    tools = [{"type": "function", "function": {"name": "weather", "parameters": {}}}]
    rec = sharegpt(("human", "Rain?"), ("function_call", '{"name": "weather", "arguments": {"city": "Oslo"}}'),
                   ("observation", "wet"), ("gpt", "Yes."), tools=json.dumps(tools))
    ex = normalise(rec, data_cfg("sharegpt", roles=ROLES, system="Help."), SFT)
    assert ex.messages == [
        {"role": "system", "content": "Help."},
        {"role": "user", "content": "Rain?"},
        {"role": "assistant", "content": "", "tool_calls": [{"type": "function",
                                                             "function": {"name": "weather", "arguments": {"city": "Oslo"}}}]},
        {"role": "tool", "content": "wet"},
        {"role": "assistant", "content": "Yes."}]
    assert ex.tools == tools
    two = sharegpt(("human", "x"), ("function_call", '[{"name": "a"}, {"name": "b", "arguments": {"k": 1}}]'), ("gpt", "ok"))
    assert [c["function"] for c in normalise(two, data_cfg("sharegpt", roles=ROLES), SFT).messages[1]["tool_calls"]] == [
        {"name": "a", "arguments": {}}, {"name": "b", "arguments": {"k": 1}}]


def test_a_record_system_turn_wins_over_data_system_and_messages_read_role_and_content():
    rec = Record({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
                  "system": "From the record."}, "m.jsonl: record 1")
    assert normalise(rec, data_cfg("messages", roles=ROLES | {"user": "user", "assistant": "assistant"}, system="Default."),
                     SFT).messages == [{"role": "system", "content": "From the record."},
                                       {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert normalise(sharegpt(("human", "q"), ("gpt", "a"), tools=""), data_cfg("sharegpt", roles=ROLES), SFT).tools is None


@pytest.mark.parametrize("rec, line", [
    (Record({"conversations": []}, "r"), "field 'conversations' is not a non-empty list of turns; write it as "
                                         "[{'from': ..., 'value': ...}, ...]"),
    (Record({"conversations": [{"from": "human"}]}, "r"), "field 'conversations' turn 1 lacks 'from' or 'value'; give every "
                                                         "turn both keys (or map them in data.columns)"),
    (sharegpt(("human", "q"), ("narrator", "a")), "field 'conversations' turn 2 has role 'narrator'; map it in data.roles "
                                                  f"(known: {', '.join(sorted(DEFAULT_ROLES))})"),
    (Record({"conversations": [{"from": "human", "value": ["q"]}]}, "r"),
     "field 'conversations' turn 1 content is a list, expected text; make it a string"),
    (sharegpt(("human", "q"), ("gpt", " ")), "field 'conversations' turn 2 is an empty assistant turn; give it text or drop "
                                             "the record (data.on_bad_record=skip)"),
    (sharegpt(("human", "q"), ("system", "s")), "field 'conversations' has no assistant turn, so nothing would be learned; "
                                                "add the response turn"),
    (sharegpt(("human", "q"), ("function_call", "weather(Oslo)"), ("gpt", "a")),
     "field 'conversations' turn 2 is a function call but not JSON; write it as {\"name\": ..., \"arguments\": {...}}"),
    (sharegpt(("human", "q"), ("function_call", '{"arguments": {}}'), ("gpt", "a")),
     "field 'conversations' turn 2 is a function call without a name; write it as {\"name\": ..., \"arguments\": {...}}"),
    (sharegpt(("human", "q"), ("gpt", "a"), tools="[not json"), "field 'tools' is text but not JSON; store it as a list of "
                                                                 "function schemas"),
    (sharegpt(("human", "q"), ("gpt", "a"), tools={"name": "f"}),
     "field 'tools' is an object, not a list of function schemas; write it as [{\"type\": \"function\", \"function\": "
     "{\"name\": ..., \"parameters\": ...}}, ...]"),
])
def test_a_malformed_conversation_gets_one_line(rec, line):
    with pytest.raises(DataError) as caught:
        normalise(rec, data_cfg("sharegpt", roles=ROLES), SFT)
    assert str(caught.value) == f"{rec.origin}: {line}"


def test_a_role_mapped_to_nothing_known_is_refused():
    with pytest.raises(DataError) as caught:
        normalise(sharegpt(("human", "q"), ("gpt", "a")), data_cfg("sharegpt", roles=ROLES | {"gpt": "bot"}), SFT)
    assert str(caught.value) == ("c.jsonl: record 2: field 'conversations' turn 2 maps to role 'bot'; map roles to user, "
                                 "assistant, system, tool or tool_call in data.roles")


@pytest.mark.parametrize("value, name", [(3, "a number"), (2.5, "a number"), (True, "a boolean"), (None, "null"),
                                         ("x", "a string"), ([1], "a list"), ({"a": 1}, "an object")])
def test_a_values_type_is_named_as_json_names_it(value, name):
    from ftsweep.data.sources import json_type

    assert json_type(value) == name
