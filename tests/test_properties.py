"""Property-based tests of the invariants every batch relies on: masking, truncation, collation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ftsweep.data.tokenize import IGNORE, Collator, encode_segments, truncate


class ByteTokenizer:
    """A byte-level encoder like the tiny model's: one id per UTF-8 byte (ids 0..255)."""

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(text.encode("utf-8"))


segments_st = st.lists(st.tuples(st.text(max_size=12), st.booleans()), min_size=1, max_size=8)
# (input_ids, labels) pairs as encode_segments makes them: labels are the id or IGNORE.
example_st = st.lists(st.tuples(st.integers(0, 263), st.booleans()), min_size=1, max_size=80).map(
    lambda pairs: ([t for t, _ in pairs], [t if learn else IGNORE for t, learn in pairs]))


@given(segments_st, st.booleans())
def test_labels_are_the_ids_of_learned_segments_and_ignore_elsewhere(segments, train_on_prompt):
    ids, labels = encode_segments(ByteTokenizer(), segments, train_on_prompt)
    expected_ids, expected_labels = [], []
    for text, learn in segments:
        seg = list(text.encode("utf-8"))
        expected_ids += seg
        expected_labels += seg if (learn or train_on_prompt) else [IGNORE] * len(seg)
    assert ids == expected_ids and labels == expected_labels


@given(example_st, st.integers(1, 100))
@settings(max_examples=300)
def test_truncation_fits_keeps_alignment_and_prefers_the_response(example, max_length):
    ids, labels = example
    out_ids, out_labels, cut = truncate(ids, labels, max_length)
    assert len(out_ids) == len(out_labels) <= max_length
    assert cut == (len(ids) > max_length)
    # Every label still belongs to its own token: the id itself, or masked.
    assert all(lab in (IGNORE, tok) for tok, lab in zip(out_ids, out_labels))
    # The result is a subsequence of the input (tokens are dropped, never reordered or invented).
    it = iter(zip(ids, labels))
    assert all(pair in it for pair in zip(out_ids, out_labels))
    learned = [lab for lab in labels if lab != IGNORE]
    kept = [lab for lab in out_labels if lab != IGNORE]
    if len(learned) <= max_length:
        assert kept == learned  # the whole response survives whenever it fits on its own
    else:
        assert kept == learned[:max_length]  # else it is cut from the right, and nothing else is left


@given(st.lists(example_st, min_size=1, max_size=6), st.sampled_from([None, 8]))
def test_collation_pads_to_the_batch_longest_with_masked_labels(examples, multiple):
    pad = 257
    batch = Collator(pad, multiple)([{"input_ids": i, "labels": lab} for i, lab in examples])
    longest = max(len(i) for i, _ in examples)
    width = -(-longest // multiple) * multiple if multiple else longest  # round up to the multiple
    assert tuple(batch["input_ids"].shape) == (len(examples), width)
    for row, (ids, labels) in enumerate(examples):
        n = len(ids)
        assert batch["input_ids"][row, :n].tolist() == ids
        assert batch["labels"][row, :n].tolist() == labels
        assert batch["attention_mask"][row].tolist() == [1] * n + [0] * (width - n)
        assert set(batch["input_ids"][row, n:].tolist()) <= {pad}
        assert set(batch["labels"][row, n:].tolist()) <= {IGNORE}


@pytest.mark.parametrize("max_length", [8, 12])
def test_truncation_example_by_hand(max_length):
    # prompt 10 tokens (masked), response 5 tokens: the prompt loses its oldest tokens first.
    ids = list(range(15))
    labels = [IGNORE] * 10 + list(range(10, 15))
    out_ids, out_labels, cut = truncate(ids, labels, max_length)
    assert cut and out_ids == list(range(15 - max_length, 15))
    assert out_labels[-5:] == [10, 11, 12, 13, 14]
