"""Token ids, label masks, structure-keeping truncation (tokenize.fit) and collation, checked by hand.

Pieces are named by kind and length: T2 is 2 template tokens, U4 4 tokens of a question's own text,
H1 a 1-token header, A3 a 3-token answer, X1 a masked token after an answer.
"""

from __future__ import annotations

import pytest

import lane  # noqa: F401 - the lane's preloaded imports
from ftsweep.data.tokenize import IGNORE, Collator, Fitted, Piece, encode_pieces, encode_segments, fit
from ftsweep.models import _bytes_to_unicode, build_tiny_tokenizer

KIND = {"T": "template", "U": "user", "H": "header", "A": "answer", "X": "after"}


def chat(*specs: str, start: int = 0) -> list[Piece]:
    """chat("T2", "U4", ...) -> pieces with distinct, increasing token ids."""
    out, nxt = [], start
    for spec in specs:
        n = int(spec[1:])
        out.append(Piece(KIND[spec[0]], tuple(range(nxt, nxt + n))))
        nxt += n
    return out


def shape(pieces: list[Piece]) -> list[str]:
    letter = {kind: k for k, kind in KIND.items()}
    return [letter[p.kind] + str(len(p.ids)) for p in pieces]


# ---- fit: the truncation policy --------------------------------------------------------------------

def test_a_chat_with_no_variants_is_dropped():
    assert fit([], 10) == Fitted(None, turns_dropped=0, prompt_cut=False, response_cut=False, cut=True)


def test_a_chat_of_exactly_max_length_is_untouched():
    pieces = chat("T2", "U3", "H2", "A3")
    assert fit([[pieces]], 10) == Fitted(pieces, turns_dropped=0, prompt_cut=False, response_cut=False, cut=False)


def test_the_oldest_exchange_goes_first_and_the_rest_is_kept_whole():
    first, second = chat("T2", "U2", "H1", "A2"), chat("T1", "U2", "H1", "A2", start=100)
    out = fit([[first, second], [second]], 6)
    assert out == Fitted(second, turns_dropped=1, prompt_cut=False, response_cut=False, cut=True)


def test_a_last_exchange_without_an_answer_is_dropped():
    variants = [[chat("T4"), chat("U4", start=10)], [chat("U4", start=10)]]
    assert fit(variants, 3) == Fitted(None, turns_dropped=1, prompt_cut=False, response_cut=False, cut=True)


def test_no_room_for_the_header_and_one_learned_token_drops_the_example():
    last = chat("T2", "H2", "A3", start=100)
    # A dropped example counts as cut everywhere: its last try cut the question to nothing and the answer.
    assert fit([[chat("T2", "H2", "A3"), last], [last]], 4) == Fitted(None, turns_dropped=1, prompt_cut=True,
                                                                       response_cut=True, cut=True)


@pytest.mark.parametrize("specs, max_length, kept, prompt_cut, response_cut", [
    # One token over: the question loses exactly one token, the answer is whole.
    (["T2", "U10", "H2", "A5"], 18, ["T2", "U9", "H2", "A5"], True, False),
    # The question keeps 16 // 4 = 4 of its 5 tokens; the answer gives up the other 2.
    (["T2", "U5", "H2", "A10"], 16, ["T2", "U4", "H2", "A8"], True, True),
    # Latest question text first: the 2-token one goes whole, then 1 token of the older one.
    (["T2", "U6", "T1", "U2", "H2", "A4"], 14, ["T2", "U5", "T1", "H2", "A4"], True, False),
    # The floor binds across turns: 4 question tokens stay (16 // 4), the answer is cut to what is left.
    (["T2", "U6", "T1", "U2", "H2", "A20"], 16, ["T2", "U4", "T1", "H2", "A7"], True, True),
    # No question text: only the answer is cut, and no prompt cut is reported.
    (["T2", "H2", "A20"], 10, ["T2", "H2", "A6"], False, True),
    # A tool call and a long final answer: the cut ends inside an answer, so the call is kept and the final answer
    # (which has no room after its template and header) goes with them.
    (["T2", "U4", "H1", "A3", "X1", "T1", "U2", "H1", "A10"], 10, ["T2", "U2", "H1", "A3"], True, True),
    (["T2", "U4", "H1", "A3", "X1", "T3", "U2", "H1", "A10"], 10, ["T2", "U2", "H1", "A3"], True, True),
])
def test_the_last_exchange_is_cut_question_first_down_to_a_quarter_then_the_answer(specs, max_length, kept, prompt_cut,
                                                                                     response_cut):
    pieces = chat(*specs)
    out = fit([[pieces]], max_length)
    assert shape(out.pieces) == kept
    assert (out.turns_dropped, out.prompt_cut, out.response_cut, out.cut) == (0, prompt_cut, response_cut, True)
    # Kept tokens are prefixes of their own pieces, in order: text is cut from the right, never invented.
    originals = [p for p in pieces if p.ids[:1] in {q.ids[:1] for q in out.pieces}]
    assert [q.ids for q in out.pieces] == [p.ids[: len(q.ids)] for p, q in zip(originals, out.pieces)]


# ---- encode_segments ----------------------------------------------------------------------------------

class LlamaLikeTokenizer:
    """Bytes as ids; like Llama's tokenizer it puts a bos (id 1) in front unless add_special_tokens=False.
    It has no offsets (a "slow" tokenizer): calling it with return_offsets_mapping raises."""

    def encode(self, text, add_special_tokens=True):
        return ([1] if add_special_tokens else []) + list(text.encode("utf-8"))

    def __call__(self, text, **kw):
        raise NotImplementedError("return_offset_mapping is not available when using Python tokenizers")


def test_segments_mask_the_prompt_by_default_and_add_no_special_tokens():
    tok = LlamaLikeTokenizer()
    assert encode_segments(tok, [("ab", False), ("c", True)]) == ([97, 98, 99], [IGNORE, IGNORE, 99])
    assert encode_segments(tok, [("ab", False), ("c", True)], train_on_prompt=True) == ([97, 98, 99], [97, 98, 99])


# ---- encode_pieces: tokens cut where the pieces are -----------------------------------------------

def merging_tokenizer():
    """Bytes as ids plus two merged tokens that cross piece boundaries: "?\\n" (id 256) and "\\nW" (id 257);
    it adds a bos (258) unless add_special_tokens=False."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    c = _bytes_to_unicode()
    vocab = {c[b]: b for b in range(256)}
    vocab.update({c[ord("?")] + c[ord("\n")]: 256, c[ord("\n")] + c[ord("W")]: 257, "<s>": 258})
    core = Tokenizer(models.BPE(vocab=vocab, merges=[(c[ord("?")], c[ord("\n")]), (c[ord("\n")], c[ord("W")])]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 258)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>")


def b(text: str) -> tuple[int, ...]:
    return tuple(text.encode("utf-8"))


PIECES = [("### Q:\n", "template", 0), ("Why?", "user", 0), ("\n\nA:\n", "header", 0), ("Well.", "answer", 0),
          ("\n", "after", 0), ("Ok?", "user", 1), ("\nA:", "header", 1), (" Yes?\n", "answer", 1)]


def test_a_prompt_is_tokenized_whole_and_each_token_goes_to_the_piece_it_starts_in():
    tok = merging_tokenizer()
    out = encode_pieces(tok, PIECES)
    # "\nW" starts in the template, so it is template; "?\n" runs past the question's end, so it is header text
    # (a question can be cut without splitting the template's tokens). The answer is tokenized on its own, so
    # its "W" is not merged into the header's "\n" before it: the learned span starts where the answer starts.
    assert out == [[Piece("template", b("### Q:") + (257,)), Piece("user", b("hy")), Piece("header", (256,) + b("\nA:\n")),
                    Piece("answer", b("Well.")), Piece("after", b("\n"))],
                   [Piece("user", b("Ok")), Piece("header", (256,) + b("A:")), Piece("answer", b(" Yes") + (256,))]]
    # The row's ids are what the tokenizer gives the prompt and each answer (as encode_segments cuts them).
    ids = [t for ex in out for p in ex for t in p.ids]
    texts = ["### Q:\nWhy?\n\nA:\n", "Well.", "\n", "Ok?\nA:", " Yes?\n"]
    assert ids == [t for text in texts for t in tok.encode(text, add_special_tokens=False)]


def test_without_offsets_each_piece_is_tokenized_on_its_own():
    out = encode_pieces(LlamaLikeTokenizer(), PIECES)
    assert out == [[Piece("template", b("### Q:\n")), Piece("user", b("Why?")), Piece("header", b("\n\nA:\n")),
                    Piece("answer", b("Well.")), Piece("after", b("\n"))],
                   [Piece("user", b("Ok?")), Piece("header", b("\nA:")), Piece("answer", b(" Yes?\n"))]]


def test_a_prompt_that_ends_with_the_question_keeps_its_text_as_user_tokens():
    # data.template=custom with user "{content}": nothing between the question and the answer.
    pieces = [("S\n", "template", 0), ("Q: ", "template", 0), ("Hi", "user", 0), ("=> Yo", "answer", 0)]
    assert encode_pieces(build_tiny_tokenizer(), pieces) == [[Piece("template", b("S\n")), Piece("template", b("Q: ")),
                                                             Piece("user", b("Hi")), Piece("answer", b("=> Yo"))]]


# ---- collation -------------------------------------------------------------------------------------

def test_sft_batches_pad_ids_mask_and_labels():
    batch = Collator(0, pad_to_multiple_of=4)([{"input_ids": [5, 6, 7, 8, 9], "labels": [IGNORE, 6, 7, 8, 9]},
                                               {"input_ids": [5], "labels": [5]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 0, 0], [5, 0, 0, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 5 + [0] * 3, [1] + [0] * 7]
    assert batch["labels"].tolist() == [[IGNORE, 6, 7, 8, 9] + [IGNORE] * 3, [5] + [IGNORE] * 7]


def test_classification_batches_carry_one_class_label_per_row():
    batch = Collator(2, label_key="label")([{"input_ids": [5, 6, 7], "label": 1}, {"input_ids": [8], "label": 0}])
    assert sorted(batch) == ["attention_mask", "input_ids", "labels"]
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["labels"].tolist() == [1, 0] and str(batch["labels"].dtype) == "torch.int64"
