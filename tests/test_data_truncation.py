"""Truncation that keeps a chat's structure: the policy (tokenize.fit) as properties, then on the tiny tokenizer."""

from __future__ import annotations

import json
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from conftest import data_cfg
from ftsweep import data
from ftsweep.data import _ChatVariants
from ftsweep.data.tokenize import IGNORE, Piece, fit

# ---- the policy on synthetic token pieces --------------------------------------------------------
# Token ids say what they are: template 1xxx, user 2xxx, header 3xxx, answer 4xxxx (unique), after 5xxx.


@st.composite
def chats(draw):
    """variants[k] as the data layer builds them: exchanges k.. with the system kept in front."""
    counter = iter(range(40_000, 50_000))

    def piece(kind, lo, hi, base):
        n = draw(st.integers(lo, hi))
        ids = tuple(next(counter) for _ in range(n)) if kind == "answer" else tuple(base + draw(st.integers(0, 99)) for _ in range(n))
        return Piece(kind, ids)

    def turn(opening):
        return [piece("template", 1, 3, 1000) if opening else piece("template", 1, 2, 1000), piece("user", 0, 12, 2000),
                piece("header", 1, 4, 3000), piece("answer", 1, 12, 0), piece("after", 0, 1, 5000)]

    exchanges = []
    for _ in range(draw(st.integers(1, 4))):
        ex = turn(True)
        if draw(st.booleans()):  # a tool call and its result inside the same exchange
            ex += turn(False)
        exchanges.append([p for p in ex if p.ids])
    system = piece("template", 0, 6, 1500)
    variants = [([[system, *exchanges[k][0:]]] if system.ids else [exchanges[k]]) + exchanges[k + 1:]
                for k in range(len(exchanges))]
    return variants


def flat(chat):
    return [p for ex in chat for p in ex]


def check_structure(variants, max_length, out):
    n = len(variants)
    if out.dropped:
        # dropped only when the last exchange's template up to its first header plus one answer token cannot fit
        last = flat(variants[n - 1])
        first_answer = next(i for i, p in enumerate(last) if p.kind == "answer")
        skeleton = sum(len(p.ids) for p in last[:first_answer] if p.kind != "user")
        assert skeleton + 1 > max_length
        return
    pieces = out.pieces
    ids = [t for p in pieces for t in p.ids]
    assert 0 < len(ids) <= max_length
    k = out.turns_dropped
    chosen = flat(variants[k])
    # Fewest turns dropped: the variant before did not fit.
    if k > 0:
        assert sum(len(p.ids) for p in flat(variants[k - 1])) > max_length
    if k == 0 and not out.cut:
        assert pieces == chosen
    # The example starts where the chosen variant starts (a turn start, or the system before it).
    assert ids[0] == chosen[0].ids[0]
    # Align the output with the chosen variant, piece by piece in order: each kept piece is the original
    # piece or (user text, the last answer) a non-empty prefix of it; template and headers are whole.
    j, where = 0, []
    for p in pieces:
        while not (chosen[j].kind == p.kind and chosen[j].ids[: len(p.ids)] == p.ids):
            j += 1
        assert p.kind not in ("template", "header") or p == chosen[j]
        where.append(j)
        j += 1
    # Every answer directly follows its full, original header.
    for i, p in enumerate(pieces):
        if p.kind == "answer":
            assert i > 0 and pieces[i - 1].kind == "header" and where[i - 1] == where[i] - 1
    # Nothing learned is fabricated: the kept answers are the chat's last answers in order, only the last cut short.
    kept = [p.ids for p in pieces if p.kind == "answer"]
    originals = [p.ids for p in flat(variants[0]) if p.kind == "answer"]
    ours = [p.ids for p in chosen if p.kind == "answer"]
    assert originals[len(originals) - len(ours):] == ours
    assert kept[:-1] == ours[: len(kept) - 1] and kept[-1] and ours[len(kept) - 1][: len(kept[-1])] == kept[-1]
    # The output is the chosen variant with tokens left out, never reordered.
    it = iter([(p.kind, t) for p in chosen for t in p.ids])
    assert all(pair in it for pair in [(p.kind, t) for p in pieces for t in p.ids])


@given(chats(), st.integers(1, 120))
@settings(max_examples=400)
def test_fit_keeps_every_answer_with_its_header_and_fabricates_nothing(variants, max_length):
    out = fit(variants, max_length)
    check_structure(variants, max_length, out)
    if not out.dropped and out.response_cut:
        assert out.turns_dropped == len(variants) - 1  # answers are cut only once all older turns are gone


@given(chats())
def test_a_chat_that_fits_is_untouched(variants):
    total = sum(len(p.ids) for p in flat(variants[0]))
    out = fit(variants, total)
    assert out.pieces == flat(variants[0]) and not out.cut and out.turns_dropped == 0


def test_question_text_goes_before_the_answer_and_keeps_a_quarter():
    # system 4 | template 2, user 40, header 3, answer 30: 79 tokens into 60.
    chat = [[Piece("template", (1, 1, 1, 1, 2, 2)), Piece("user", tuple(range(2000, 2040))), Piece("header", (3, 3, 3)),
             Piece("answer", tuple(range(4000, 4030)))]]
    out = fit([chat], 60)  # 19 tokens over: all of it from the question
    assert [len(p.ids) for p in out.pieces] == [6, 21, 3, 30] and out.prompt_cut and not out.response_cut
    out = fit([chat], 40)  # the question keeps 40 // 4 = 10 tokens, the answer gets the remaining 21
    assert [len(p.ids) for p in out.pieces] == [6, 10, 3, 21] and out.prompt_cut and out.response_cut
    out = fit([chat], 10)  # 6 template + 3 header + 1 answer token: the question goes entirely
    assert [p.kind for p in out.pieces] == ["template", "header", "answer"] and out.pieces[-1].ids == (4000,)
    assert fit([chat], 9).dropped  # no room for one learned token after the header


# ---- on the tiny tokenizer: real rendering, real templates ---------------------------------------

@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


sharegpt_cfg = partial(data_cfg, format="sharegpt")


SFT = OmegaConf.create({"name": "sft", "num_labels": None, "class_weights": None})


def two_turn(i: int, long_answer: bool = False) -> dict:
    return {"conversations": [{"from": "system", "value": "Be brief."},
                              {"from": "human", "value": f"First question number {i}?"},
                              {"from": "gpt", "value": f"First answer {i}."},
                              {"from": "human", "value": f"Second question {i}?"},
                              {"from": "gpt", "value": ("long " * 30 if long_answer else "") + f"Second answer {i}."}]}


def spans_after_header(tok, row, header: str):
    """Each learned run of tokens, with the text right before it."""
    out, i, ids, labels = [], 0, row["input_ids"], row["labels"]
    while i < len(ids):
        if labels[i] != IGNORE:
            j = i
            while j < len(ids) and labels[j] != IGNORE:
                j += 1
            out.append((tok.decode(ids[:i]), tok.decode(ids[i:j])))
            i = j
        else:
            i += 1
    return out


def write(tmp_path, records):
    path = tmp_path / "chats.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_two_turn_chats_lose_their_first_exchange_and_keep_the_system(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("FTSWEEP_TOKENIZED_CACHE", "0")
    path = write(tmp_path, [two_turn(i) for i in range(4)])
    full = data.prepare(sharegpt_cfg(path), SFT, tok).train[0]
    # 171 tokens for the whole chat; at 100 the first exchange goes, the second fits whole.
    bundle = data.prepare(sharegpt_cfg(path, max_length=100), SFT, tok)
    assert len(full["input_ids"]) > 100
    s = bundle.stats
    assert (s["truncated"], s["turns_dropped"], s["prompts_cut"], s["responses_cut"], s["dropped_examples"]) == (4, 4, 0, 0, 0)
    for row in bundle.train:
        text = tok.decode(row["input_ids"])
        assert text.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSecond question")
        [(before, learned)] = spans_after_header(tok, row, "")
        assert before.endswith("?<|im_end|>\n<|im_start|>assistant\n") and learned.startswith("Second answer")


def test_a_long_last_answer_keeps_system_question_and_header(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("FTSWEEP_TOKENIZED_CACHE", "0")
    path = write(tmp_path, [two_turn(i, long_answer=True) for i in range(3)])
    bundle = data.prepare(sharegpt_cfg(path, max_length=96), SFT, tok)
    s = bundle.stats
    assert (s["turns_dropped"], s["responses_cut"], s["dropped_too_long"]) == (3, 3, 0)
    row = bundle.train[0]
    assert len(row["input_ids"]) == 96
    [(before, learned)] = spans_after_header(tok, row, "")
    assert before.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSecond question")
    assert before.endswith("<|im_end|>\n<|im_start|>assistant\n") and learned.startswith("long long")


def test_llama2_keeps_the_system_inside_the_first_kept_inst(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("FTSWEEP_TOKENIZED_CACHE", "0")
    path = write(tmp_path, [two_turn(i) for i in range(3)])
    bundle = data.prepare(sharegpt_cfg(path, template="llama2", max_length=90), SFT, tok)
    text = tok.decode(bundle.train[0]["input_ids"])
    assert text.startswith("<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nSecond question") and "First" not in text
    assert bundle.stats["turns_dropped"] == 3


def test_an_example_without_room_for_header_and_one_token_is_dropped_and_counted(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("FTSWEEP_TOKENIZED_CACHE", "0")
    long_system = {"conversations": [{"from": "system", "value": "s" * 80}, *two_turn(0)["conversations"][1:]]}
    path = write(tmp_path, [long_system, two_turn(1), two_turn(2)])  # file order: the last is held out
    bundle = data.prepare(sharegpt_cfg(path, max_length=60, shuffle=False), SFT, tok)
    assert bundle.stats["dropped_too_long"] == 1 and bundle.stats["dropped_examples"] == 1


def test_variants_render_the_shortened_chat_again(tok):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
                {"role": "user", "content": "q2"}, {"role": "tool", "content": "t"}, {"role": "assistant", "content": "a2"}]
    variants = _ChatVariants(tok, tok.chat_template, messages)
    assert len(variants) == 2  # the tool result stays in the exchange of the question that caused it
    kinds = [(p.kind, tok.decode(p.ids)) for ex in variants[1] for p in ex]
    assert kinds[:3] == [("template", "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n"), ("user", "q2"),
                         ("template", "<|im_end|>\n<|im_start|>tool\n")]
    assert [t for k, t in kinds if k == "user"] == ["q2", "t"]


@settings(max_examples=40)
@given(st.lists(st.tuples(st.text("abc xyz?", min_size=1, max_size=30), st.text("def uvw.", min_size=1, max_size=30)),
                min_size=1, max_size=4),
       st.integers(20, 200), st.sampled_from([None, "llama2", "alpaca"]))
def test_rendered_chats_keep_structure_for_any_length(tok, turns, max_length, template):
    from ftsweep.data import templates

    messages = [{"role": "system", "content": "sys"}]
    for q, a in turns:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    tpl = templates.resolve(template, tok)
    variants = _ChatVariants(tok, tpl, messages)
    out = fit(variants, max_length)
    check_structure([variants[k] for k in range(len(variants))], max_length, out)


def test_preview_reports_each_kind_of_truncation(cli, tmp_path):
    path = write(tmp_path, [two_turn(i, long_answer=i % 2 == 1) for i in range(6)])
    proc = cli(["mode=preview", "data=sharegpt", f"data.path={path}", "data.max_length=100", "preview.k=6", "data.val_size=1"],
               env={"FTSWEEP_TOKENIZED_CACHE": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    # 6 chats, all over 100 tokens: each loses its first exchange; the 3 long answers are cut after their header.
    assert "truncated to data.max_length: 6 examples; turns dropped 6, prompts cut 0, responses cut 3" in proc.stdout
    examples = proc.stdout.split("--- example ")[1:]
    assert len(examples) == 5
    for ex in examples:
        body = ex.split("\n", 1)[1]
        assert body.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSecond question")
        assert "<|im_start|>assistant\n[[" in body and "First" not in body


def test_preview_shows_the_first_example_that_max_length_cut_after_the_first_k(tmp_path, tok, monkeypatch):
    """A long chat among short ones is rarely among the first k of a shuffle: the preview shows the first one that
    data.max_length cut too, and how, from the training examples or else from the held-out ones."""
    from ftsweep.data.preview import render

    monkeypatch.setenv("FTSWEEP_TOKENIZED_CACHE", "0")
    short = [{"conversations": [{"from": "human", "value": f"q{i}"}, {"from": "gpt", "value": f"a{i}"}]} for i in range(5)]
    # Unshuffled, the last record is held out: the long chat (record 5) trains as the 5th training example.
    path = write(tmp_path, short[:4] + [two_turn(0, long_answer=True)] + short[4:])
    bundle = data.prepare(sharegpt_cfg(path, max_length=96, shuffle=False, val_size=1), SFT, tok)
    assert list(bundle.truncated) == [4] and bundle.held_out_truncated == {}
    shown = render(bundle, tok, 1, classify=False)
    assert shown.count("--- example ") == 2 and "--- example 1: " in shown
    head, body = shown.split("--- example 5, the first that data.max_length cut: 96 tokens, ")[1].split("\n", 1)
    assert head.endswith("learned (between [[ ]]); truncated: 1 earlier exchange dropped, answer cut from the right")
    assert body.startswith("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nSecond question 0?")
    # Among the first k it is not shown twice, and says how it was cut where it stands.
    shown = render(bundle, tok, 5, classify=False)
    assert shown.count("--- example ") == 5 and "--- example 5: 96 tokens, " in shown and "the first that" not in shown
    # Held out instead (the last record, unshuffled): the held-out example is shown.
    path = write(tmp_path, short + [two_turn(0, long_answer=True)])
    bundle = data.prepare(sharegpt_cfg(path, max_length=96, shuffle=False, val_size=1), SFT, tok)
    assert bundle.truncated == {} and list(bundle.held_out_truncated) == [0]
    assert "--- held-out example 1, the first that data.max_length cut: 96 tokens, " in render(bundle, tok, 1, classify=False)
    # Nothing cut: the first k alone.
    path = write(tmp_path, short)
    assert "the first that" not in render(data.prepare(sharegpt_cfg(path, shuffle=False, val_size=1), SFT, tok), tok, 1,
                                          classify=False)
