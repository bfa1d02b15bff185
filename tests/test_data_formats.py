"""Formats, sources, templates and masks, checked token by token on the tiny tokenizer."""

from __future__ import annotations

import json
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import data_cfg
from ftsweep import data
from ftsweep.data import templates
from ftsweep.data.preview import marked_text
from ftsweep.data.sources import DataError
from ftsweep.data.tokenize import IGNORE
from ftsweep.evaluation import classification_metrics


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


SFT = OmegaConf.create({"name": "sft", "num_labels": None, "class_weights": None})


def learned_spans(tok, row) -> list[str]:
    """Decode each contiguous run of learned tokens."""
    spans, cur = [], []
    for t, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE:
            assert lab == t  # a learned label is its own token
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    if cur:
        spans.append(tok.decode(cur))
    return spans


# ---- sources: the same records from every file type --------------------------------------

RECORDS = [{"instruction": f"Say {i}.", "input": "", "output": f"{i} 你好"} for i in range(6)]


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv", "parquet"])
def test_every_file_type_gives_the_same_records(tmp_path, suffix):
    import pandas as pd

    path = tmp_path / f"d.{suffix}"
    if suffix == "json":
        path.write_text(json.dumps(RECORDS, ensure_ascii=False), encoding="utf-8")
    elif suffix == "jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in RECORDS), encoding="utf-8")
    elif suffix == "csv":
        pd.DataFrame(RECORDS).to_csv(path, index=False)
    else:
        pd.DataFrame(RECORDS).to_parquet(path)
    assert data.read_records(data_cfg(path)) == RECORDS


def test_hub_id_offline_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="someone/some-dataset: not in the local datasets cache and HF_HUB_OFFLINE=1; "
                                        "download it first or point data.path at a local file"):
        data.read_records(data_cfg("someone/some-dataset"))


def test_parquet_lists_and_nested_records_come_back_as_plain_python(tmp_path):
    import pandas as pd

    from ftsweep.data import sources

    rows = [{"conversations": [{"from": "human", "value": "你好"}, {"from": "gpt", "value": "hi"}],
             "answers": ["a", "b"], "label": 1}]
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    [got] = sources.read(data_cfg(tmp_path / "d.parquet"))
    assert got.fields == rows[0] and got.origin == "d.parquet: record 1"
    assert type(got.fields["answers"]) is list and type(got.fields["conversations"][0]) is dict


def test_a_dataset_folder_read_as_a_hub_id_gives_each_split_with_its_name(tmp_path):
    from ftsweep.data import sources

    folder = tmp_path / "ds"
    folder.mkdir()
    for split, n in (("train", 3), ("validation", 2), ("test", 1)):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"text": f"{split} {i}"}) + "\n" for i in range(n)))
    cfg = data_cfg(folder, source="hub")
    train = sources.read(cfg)
    assert [r.fields["text"] for r in train] == ["train 0", "train 1", "train 2"]
    assert train[0].origin == f"{folder}[train]: record 1"
    assert [r.fields["text"] for r in sources.read(cfg, path=str(folder), split="validation")] == ["validation 0", "validation 1"]
    with pytest.raises(DataError) as caught:
        sources.read(data_cfg(folder, source="hub", split="dev"))
    assert str(caught.value) == (f"data.path={folder}: could not load the hub dataset (ValueError); check the id and split, "
                                 "or download it and point data.path at a local file")


@pytest.mark.parametrize("text, line", [
    ("", "d.json: no records; the file is empty"),
    ('{"train": [{"a": 1}], "test": [{"a": 2}]}', "d.json: expected a JSON list of records (or an object holding one list)"),
    ('"text"', "d.json: expected a JSON list of records, found a string"),
    ('[{"a": 1}, [1, 2]]', "d.json: record 2 is a list, not a JSON object"),
    ('[{"a": 1},\n {"a": 2,}]', "d.json: not valid JSON at line 2 (Expecting property name enclosed in double quotes); a "
                                ".json file holds one list of records (use .jsonl for one record per line)"),
])
def test_a_json_file_that_is_not_a_list_of_records_gets_one_line(tmp_path, text, line):
    (tmp_path / "d.json").write_text(text)
    with pytest.raises(DataError) as caught:
        data.read_records(data_cfg(tmp_path / "d.json"))
    assert str(caught.value) == line


def test_the_built_in_set_and_csv_files_number_their_records_from_one(tmp_path):
    from ftsweep.data import sources

    made = sources.read(data_cfg(source="synthetic", num_records=5, synthetic_tasks=["reverse", "add"]))
    again = sources.read(data_cfg(source="synthetic", num_records=5, synthetic_tasks=["reverse", "add"]))
    assert [r.origin for r in made] == [f"synthetic: record {i}" for i in range(1, 6)]
    assert [r.fields for r in made] == [r.fields for r in again] and all(r.fields["output"] for r in made)
    # A CSV is read as text: "007" and "1" stay what the file says, and an empty cell is "" (not NaN).
    (tmp_path / "d.csv").write_text("instruction,input,output\nSay 007.,,007\nSay 1.,x,1\n")
    rows = sources.read(data_cfg(tmp_path / "d.csv"))
    assert [r.fields for r in rows] == [{"instruction": "Say 007.", "input": "", "output": "007"},
                                        {"instruction": "Say 1.", "input": "x", "output": "1"}]
    assert [r.origin for r in rows] == ["d.csv: record 1", "d.csv: record 2"]
    with pytest.raises(DataError) as caught:
        sources.read(data_cfg(tmp_path / "d.csv", source="xml"))
    assert str(caught.value) == "data.source=xml: unknown source; choose auto, synthetic, json, jsonl, csv, parquet or hub"


def test_a_json_object_holding_one_list_is_that_list(tmp_path):
    (tmp_path / "d.json").write_text('{"meta": "v1", "data": [{"a": 1}, {"a": 2}]}')
    assert data.read_records(data_cfg(tmp_path / "d.json")) == [{"a": 1}, {"a": 2}]


# ---- formats and templates: the learned spans are exactly the assistant turns ------------------

def write(tmp_path, records, name="d.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


MULTI_TURN = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"},
                                {"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}]}


@pytest.mark.parametrize("template, before, ends", [(None, "", "<|im_end|>"), ("chatml", "", "<|im_end|>"),
                                                    ("llama2", " ", " <|im_end|>"), ("alpaca", "", "<|im_end|>")])
def test_multi_turn_learns_every_assistant_turn_and_nothing_else(tmp_path, tok, template, before, ends):
    path = write(tmp_path, [MULTI_TURN, MULTI_TURN])
    bundle = data.prepare(data_cfg(path, format="sharegpt", template=template), SFT, tok)
    row = bundle.train[0]
    # llama2 puts a space before the answer ("[/INST] Hello! </s>", with the tokenizer's eos): it belongs to the answer's first token.
    assert learned_spans(tok, row) == [before + "Hello!" + ends, before + "4" + ends]
    # The prompt of the held-out example is everything before the last assistant turn.
    assert bundle.eval_prompts[0]["reference"] == "4"
    assert "Hello!" in bundle.eval_prompts[0]["prompt"] and not bundle.eval_prompts[0]["prompt"].endswith("4")


def test_alpaca_with_system_and_history(tmp_path, tok):
    rec = {"instruction": "Name the city.", "input": "name=Ann; city=Oslo", "output": "Oslo", "system": "Be brief.",
           "history": [["Who are you?", "A helper."]]}
    bundle = data.prepare(data_cfg(write(tmp_path, [rec, rec])), SFT, tok)
    row = bundle.train[0]
    text = tok.decode(row["input_ids"])
    assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWho are you?")
    assert "<|im_start|>user\nName the city.\nname=Ann; city=Oslo<|im_end|>" in text
    assert learned_spans(tok, row) == ["A helper.<|im_end|>", "Oslo<|im_end|>"]


def test_messages_format_with_role_map_and_column_map(tmp_path, tok):
    rec = {"chat": [{"speaker": "customer", "text": "Price?"}, {"speaker": "agent", "text": "Ten."}]}
    cfg = data_cfg(write(tmp_path, [rec, rec]), format="messages", columns={"messages": "chat", "role": "speaker", "content": "text"},
                   roles={"customer": "user", "agent": "assistant"})
    bundle = data.prepare(cfg, SFT, tok)
    assert learned_spans(tok, bundle.train[0]) == ["Ten.<|im_end|>"]


def test_custom_template_renders_markers_and_learns_the_output(tmp_path, tok):
    rec = {"instruction": "Extract the date.", "input": "Met on 3 May.", "output": "3 May"}
    cfg = data_cfg(write(tmp_path, [rec, rec]), template="custom", system="You extract.",
                   custom_template={"system": "{content}\n", "user": "<|instruction|>\n{instruction}\n<|input|>\n{input}\n<|output|>\n",
                                    "assistant": "{content}{eos}"})
    bundle = data.prepare(cfg, SFT, tok)
    row = bundle.train[0]
    assert tok.decode(row["input_ids"]) == "You extract.\n<|instruction|>\nExtract the date.\n<|input|>\nMet on 3 May.\n<|output|>\n3 May<|im_end|>"
    assert learned_spans(tok, row) == ["3 May<|im_end|>"]
    assert bundle.eval_prompts[0]["prompt"].endswith("<|output|>\n")


def test_train_on_prompt_learns_everything_and_the_held_out_answers_are_scored_alone(tmp_path, tok):
    """Training rows learn the prompt too; held-out and test rows score the answers only, as without the flag, so a
    sweep over data.train_on_prompt measures every cell's held-out loss on the same tokens."""
    path = write(tmp_path, RECORDS)
    test = write(tmp_path, RECORDS[:2], name="test.jsonl")
    on = data.prepare(data_cfg(path, train_on_prompt=True, val_size=2, test_path=str(test)), SFT, tok)
    off = data.prepare(data_cfg(path, train_on_prompt=False, val_size=2, test_path=str(test)), SFT, tok)
    assert all(lab != IGNORE for lab in on.train[0]["labels"])
    assert on.train[0]["input_ids"] == off.train[0]["input_ids"] and on.train[0]["labels"] != off.train[0]["labels"]
    for split in ("val", "test"):
        assert list(getattr(on, split)["labels"]) == list(getattr(off, split)["labels"])
        answers = {f"{r['output']}<|im_end|>" for r in RECORDS}
        assert all(len(spans := learned_spans(tok, row)) == 1 and spans[0] in answers for row in getattr(on, split))
    # The held-out examples as scored: the same under either flag, others when data.max_length cuts them.
    assert on.held_out_fingerprint == off.held_out_fingerprint
    short = data.prepare(data_cfg(path, max_length=24, val_size=2, test_path=str(test)), SFT, tok)
    assert short.stats["truncated"] > 0 and short.held_out_fingerprint != off.held_out_fingerprint


def test_text_format_learns_the_whole_text(tmp_path, tok):
    bundle = data.prepare(data_cfg(write(tmp_path, [{"text": "床前明月光"}, {"text": "疑是地上霜"}]), format="text"), SFT, tok)
    assert learned_spans(tok, bundle.train[0])[0] in ("床前明月光<|im_end|>", "疑是地上霜<|im_end|>")


def test_truncation_keeps_the_response_and_cuts_the_question_text_not_the_template(tmp_path, tok):
    rec = {"instruction": "x" * 200, "input": "", "output": "short answer"}
    bundle = data.prepare(data_cfg(write(tmp_path, [rec, rec]), max_length=64), SFT, tok)
    row = bundle.train[0]
    assert len(row["input_ids"]) == 64 and bundle.stats["truncated"] == 2 and bundle.stats["prompts_cut"] == 2
    assert learned_spans(tok, row) == ["short answer<|im_end|>"]
    # 64 = <|im_start|>user\n (6) + 32 x + <|im_end|>\n<|im_start|>assistant\n (13) + answer (13): the question
    # keeps its start, the template keeps every token.
    assert tok.decode(row["input_ids"]) == "<|im_start|>user\n" + "x" * 32 + "<|im_end|>\n<|im_start|>assistant\nshort answer<|im_end|>"


def test_a_response_longer_than_max_length_is_cut_from_the_right_after_its_header(tmp_path, tok):
    recs = [{"instruction": "q", "input": "", "output": "abcdefghijklmnopqrstuvwxyz"}] * 2
    bundle = data.prepare(data_cfg(write(tmp_path, recs), max_length=30), SFT, tok)
    row = bundle.train[0]
    # the prompt is 20 tokens (<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n): 10 are left for the answer
    assert tok.decode(row["input_ids"]) == "<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\nabcdefghij"
    assert learned_spans(tok, row) == ["abcdefghij"]
    assert bundle.stats["truncated"] == 2 and bundle.stats["responses_cut"] == 2 and bundle.stats["dropped_examples"] == 0


def test_a_template_that_drops_the_answer_is_an_error(tmp_path, tok):
    silent = "{%- for m in messages -%}{%- if m['role'] == 'user' -%}{{ m['content'] }}{%- endif -%}{%- endfor -%}"
    templates.NAMED["silent"] = silent
    try:
        with pytest.raises(ValueError, match="nothing would be learned"):
            data.prepare(data_cfg(write(tmp_path, [RECORDS[0], RECORDS[1]]), template="silent"), SFT, tok)
    finally:
        del templates.NAMED["silent"]


def test_preview_marks_the_learned_span(tok):
    ids = tok.encode("Q: hi A: yo", add_special_tokens=False)
    labels = [IGNORE] * 9 + ids[9:]
    assert marked_text(tok, ids, labels) == "Q: hi A: [[yo]]"


# ---- subsets are nested, for any seed and sizes -------------------------------------------------

@given(st.integers(0, 10_000), st.integers(1, 60), st.integers(1, 60), st.integers(1, 20))
def test_smaller_subsets_are_prefixes_of_larger_ones(seed, a, b, n_val):
    records = list(range(100))
    small, large = sorted((a, b))
    train_s, val_s = data.split(records, n_val, small, seed)
    train_l, val_l = data.split(records, n_val, large, seed)
    assert val_s == val_l  # the held-out set does not depend on n
    assert train_l[:small] == train_s and not set(train_l) & set(val_l)



def test_a_runs_data_n_trains_on_exactly_n_records_nested_in_larger_ns_with_its_own_fingerprint(tmp_path, tok):
    """What a data-size sweep compares: data.n=K trains on K records, the first K of every larger n's, against
    one held-out set; the data fingerprint (manifest, report) tells the sizes apart. prepare() cuts the subsets
    from the cached tokenization of the whole source, a path of its own beside split()."""
    records = [{"instruction": f"Repeat {i}.", "input": "", "output": f"{i} {i}"} for i in range(30)]
    path = write(tmp_path, records)
    bundles = {n: data.prepare(data_cfg(path, val_size=5, n=n), SFT, tok) for n in (4, 10, None)}
    answers = {n: [tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE])
                   for row in b.train] for n, b in bundles.items()}
    assert {n: len(a) for n, a in answers.items()} == {4: 4, 10: 10, None: 25}
    assert {n: b.stats["train_records"] for n, b in bundles.items()} == {4: 4, 10: 10, None: 25}
    assert answers[10][:4] == answers[4] and answers[None][:10] == answers[10]
    held_out = [b.eval_prompts for b in bundles.values()]
    assert held_out[0] == held_out[1] == held_out[2] and len(held_out[0]) == 5
    assert not {p["reference"] for p in held_out[0]} & {a.removesuffix(tok.eos_token or "") for a in answers[None]}
    assert len({b.fingerprint for b in bundles.values()}) == 3
    assert data.prepare(data_cfg(path, val_size=5, n=4), SFT, tok).fingerprint == bundles[4].fingerprint

def test_file_order_keeps_the_first_n(tmp_path):
    train, val = data.split(list(range(10)), 2, 3, None)
    assert train == [0, 1, 2] and val == [8, 9]


@pytest.mark.parametrize("val_size, says", [(64.0, "data.val_size=64 holds out 64 of 40"),
                                             (0.99, "data.val_size=0.99 holds out 40 of 40")])
def test_a_held_out_set_that_leaves_nothing_to_train_on_is_named_as_the_user_wrote_it(val_size, says):
    with pytest.raises(data.DataError, match=f"^{says} records, leaving none to train on; lower data.val_size$"):
        data.split(list(range(40)), val_size, None, 0)


# ---- classification ----------------------------------------------------------------------------

def test_classification_metrics_match_a_hand_computed_confusion_matrix():
    labels = [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    preds = [0, 1, 0, 1, 2, 2, 2, 0, 2, 1]
    # confusion (rows true, cols predicted):  0: [2,1,0]  1: [0,1,1]  2: [1,1,3]
    # precision per class: 0: 2/3, 1: 1/3, 2: 3/4   recall: 0: 2/3, 1: 1/2, 2: 3/5
    p = [2 / 3, 1 / 3, 3 / 4]
    r = [2 / 3, 1 / 2, 3 / 5]
    f = [2 * a * b / (a + b) for a, b in zip(p, r)]
    m = classification_metrics(preds, labels, 3, ["accuracy", "precision", "recall", "f1"])
    assert m["accuracy"] == pytest.approx(6 / 10)
    assert m["precision"] == pytest.approx(sum(p) / 3)
    assert m["recall"] == pytest.approx(sum(r) / 3)
    assert m["f1"] == pytest.approx(sum(f) / 3)
    assert classification_metrics(preds, labels, 3, ["f1"]) == {"f1": m["f1"]}  # task.metrics picks
    # The average is over the held-out labels' classes: one of 4 labels that none has is no part of it (all right is
    # F1 1, not 0.75), and neither is a class predicted but never true, whose wrong answer costs the true class's
    # recall instead: 0, 1, 2 -> F1 1, 1, 0 -> 2/3 (over all 5 labels it was 2/5, over those predicted or true 1/2).
    assert classification_metrics([0, 1, 2, 0], [0, 1, 2, 0], 4, ["precision", "recall", "f1"]) == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert classification_metrics([0, 1, 3, 0], [0, 1, 2, 0], 5, ["f1"])["f1"] == pytest.approx(2 / 3)


def test_multiple_choice_for_classification_with_auto_class_weights(tmp_path, tok):
    recs = [{"context": "c", "question": f"q{i}", "answers": ["a", "b", "c", "d"], "label": 0 if i < 6 else 1} for i in range(8)]
    task = OmegaConf.create({"name": "classify", "num_labels": 4, "class_weights": [1, 2, 3, 4]})
    bundle = data.prepare(data_cfg(write(tmp_path, recs), format="multiple_choice", val_size=0.25), task, tok)
    row = bundle.train[0]
    assert tok.decode(row["input_ids"]).endswith("Option A: a\nOption B: b\nOption C: c\nOption D: d")
    assert bundle.class_weights == [1.0, 2.0, 3.0, 4.0]
    # auto: counts (30, 10) -> inverse (1/30, 1/10) -> scaled to mean 1 -> (0.5, 1.5)
    assert data.class_weights([0] * 30 + [1] * 10, 2, "auto") == [0.5, 1.5]
    # Longer than data.max_length, a classification example keeps its end: mode=preview says which end went.
    from ftsweep.data.preview import render

    recs[2] = dict(recs[2], context="c" * 300)
    bundle = data.prepare(data_cfg(write(tmp_path, recs), format="multiple_choice", val_size=0.25, max_length=128,
                                   shuffle=False), task, tok)
    assert len(bundle.truncated) == 1
    assert "label 0; truncated: its start cut, the end (question and options) kept\nc" in render(bundle, tok, 1, True)


@pytest.mark.parametrize("n, expected", [(None, 2), (5, 1), (2, 0)])
def test_held_out_examples_that_are_training_examples_too_are_counted_within_the_trained_subset(tmp_path, tok, n,
                                                                                                expected):
    """A file with duplicate records puts copies on both sides of the split, and the held-out loss then partly
    measures recall. Held out (file order, the last 3): copies of training records 2 and 7, and one record of its
    own; data.n=5 trains on records 0-4, so only the copy of record 2 counts."""
    distinct = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(10)]
    path = write(tmp_path, [*distinct, distinct[2], distinct[7], {"instruction": "Say 99.", "input": "", "output": "99"}])
    bundle = data.prepare(data_cfg(path, val_size=3, shuffle=False, n=n), SFT, tok)
    assert len(bundle.val) == 3 and bundle.stats["held_out_in_train"] == expected


def test_the_built_in_records_are_distinct_so_none_is_held_out_and_trained(tok):
    # Reversal drew from twelve words: 19 of the 64 held-out records were training records too.
    cfg = data_cfg(source="synthetic", format="alpaca", num_records=1064, val_size=64, max_length=128,
                   synthetic_tasks=["extract", "reverse", "add"])
    records = data.read_records(cfg)
    assert len({tuple(r.values()) for r in records}) == len(records) == 1064
    assert data.prepare(cfg, SFT, tok).stats["held_out_in_train"] == 0


def test_skipped_bad_records_are_named_not_only_counted(tmp_path, tok, caplog):
    """data.on_bad_record=skip: summary.json counts every skipped record; the console and mode=preview name the
    first three with their file, record and field, from a cache hit as from a fresh tokenization (before, the
    count was all a user got: "rejected as bad 4", with no record named)."""
    from ftsweep.data.preview import render

    bad = [{"instruction": "x", "input": ""}, {"instruction": "y", "output": ""}, {"instruction": None, "output": "z"},
           {"instruction": "w", "output": 5}]
    path = write(tmp_path, [RECORDS[0], bad[0], RECORDS[1], *bad[1:], *RECORDS[2:]])  # bad at records 2, 4, 5, 6
    cfg = data_cfg(path, on_bad_record="skip", val_size=2)
    for attempt in ("cache miss", "cache hit"):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="ftsweep"):
            bundle = data.prepare(cfg, SFT, tok)
        assert f"tokenized data: {attempt}" in caplog.text
        assert bundle.stats["skipped_records"] == 4 and bundle.stats["records"] == 10, attempt
        assert [r.split(": field")[0] for r in bundle.skipped] == ["d.jsonl: record 2", "d.jsonl: record 4",
                                                                    "d.jsonl: record 5"], attempt
        assert "'output' is missing" in bundle.skipped[0] and "'output' is empty" in bundle.skipped[1]
    shown = render(bundle, tok, 1, classify=False)
    assert "4 bad records skipped (data.on_bad_record=skip), the first 3:\n  d.jsonl: record 2: field 'output' is missing" in shown
    assert data.skipped_note(1, ["a.jsonl: record 1: field 'x' is empty"]) == (
        "1 bad record skipped (data.on_bad_record=skip):\n  a.jsonl: record 1: field 'x' is empty")
    assert not any("on_bad_record" in reason for reason in bundle.skipped)  # the fix part ("...=skip") is what ran
    # Every record bad: the error says why the first was, where a wrong data.format or data.columns shows.
    with pytest.raises(DataError, match=r"every record was skipped as bad; check data.format and data.columns against "
                                        r"the file \(the first: d2.jsonl: record 1: field 'output' is missing\)"):
        data.prepare(data_cfg(write(tmp_path, bad, name="d2.jsonl"), on_bad_record="skip", val_size=2), SFT, tok)
