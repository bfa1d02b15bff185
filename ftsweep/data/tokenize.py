"""Token ids and labels with the prompt masked, truncation, and batch collation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

IGNORE = -100  # label value the loss skips


def encode_segments(tokenizer, segments: list[tuple[str, bool]], train_on_prompt: bool = False) -> tuple[list[int], list[int]]:
    """Concatenate segment tokens; labels copy learned tokens and mask the rest."""
    input_ids: list[int] = []
    labels: list[int] = []
    for text, learn in segments:
        ids = tokenizer.encode(text, add_special_tokens=False)
        input_ids += ids
        labels += ids if (learn or train_on_prompt) else [IGNORE] * len(ids)
    return input_ids, labels


def truncate(input_ids: list[int], labels: list[int], max_length: int) -> tuple[list[int], list[int], bool]:
    """Plain text (no turns): masked tokens go first, oldest first, then learned tokens from the right.

    Conversations are fitted by ``fit``, which keeps their structure.
    """
    excess = len(input_ids) - max_length
    if excess <= 0:
        return input_ids, labels, False
    keep = [True] * len(input_ids)
    for i, lab in enumerate(labels):
        if excess == 0:
            break
        if lab == IGNORE:
            keep[i] = False
            excess -= 1
    ids = [t for t, k in zip(input_ids, keep) if k][:max_length]
    labs = [t for t, k in zip(labels, keep) if k][:max_length]
    return ids, labs, True


# ---- conversations: truncation that keeps every answer with its question and header ----------------

KINDS = ("template", "user", "header", "answer", "after")


@dataclass(frozen=True)
class Piece:
    """Tokens of one part of a rendered conversation (kinds: see templates.render_pieces)."""

    kind: str
    ids: tuple[int, ...]


Exchange = list  # list[Piece]: a question (with the system message when it opens the chat) and its answers


@dataclass
class Fitted:
    pieces: list[Piece] | None  # None: the example cannot keep a header and one learned token; dropped
    turns_dropped: int = 0  # whole exchanges left out, oldest first
    prompt_cut: bool = False  # the last question's own text was shortened
    response_cut: bool = False  # the answer was cut from the right
    cut: bool = False  # anything at all was left out

    @property
    def dropped(self) -> bool:
        return self.pieces is None


def fit(variants: Sequence[list[Exchange]], max_length: int) -> Fitted:
    """Fit a conversation into max_length tokens without breaking its structure.

    ``variants[k]`` is the conversation rendered with its first k exchanges dropped and the
    system message kept (rendered again, so a template that puts the system inside the first
    [INST] still does), for k = 0 .. number of exchanges - 1. The policy, in order:

    1. the fewest oldest exchanges are dropped until the rest fits;
    2. if the last exchange alone is too long: masked tokens after its last answer go, then the
       prompt turns' own text ("user" pieces, latest first) is cut from the right - never the
       template's tokens - down to its first max_length // 4 tokens, so a question is not erased
       to make room for a long answer;
    3. then the answer is cut from the right, at a point inside an answer, so its header stays;
    4. if not even the header and one learned token fit, the example is dropped.

    Every kept answer therefore directly follows its own header, the example starts where the
    template starts a turn, and every learned token is a token of an original answer, in order.
    """
    n = len(variants)
    if n == 0:
        return Fitted(None, cut=True)
    for k in range(n):
        chat = variants[k]
        if sum(len(p.ids) for ex in chat for p in ex) <= max_length:
            return Fitted([p for ex in chat for p in ex], turns_dropped=k, cut=k > 0)
    pieces = [p for ex in variants[n - 1] for p in ex]
    last_answer = max((i for i, p in enumerate(pieces) if p.kind == "answer"), default=None)
    if last_answer is None:
        return Fitted(None, turns_dropped=n - 1, cut=True)
    pieces = pieces[: last_answer + 1]
    # The question keeps its first max_length // 4 tokens when a long answer is what does not fit
    # (a floor of 0 is tried last, for a max_length too small for both).
    for floor in (max_length // 4, 0):
        shortened, prompt_cut = _cut_prompt_text(pieces, max_length, floor)
        kept = _cut_answer(shortened, max_length)
        if kept is not None:
            response_cut = sum(len(p.ids) for p in shortened) > max_length
            return Fitted(kept, turns_dropped=n - 1, prompt_cut=prompt_cut, response_cut=response_cut, cut=True)
    return Fitted(None, turns_dropped=n - 1, prompt_cut=True, response_cut=True, cut=True)


def _cut_prompt_text(pieces: list[Piece], max_length: int, floor: int) -> tuple[list[Piece], bool]:
    """Shorten the prompt turns' own text from the right, latest turn first, keeping `floor` tokens of it."""
    excess = sum(len(p.ids) for p in pieces) - max_length
    spare = max(0, sum(len(p.ids) for p in pieces if p.kind == "user") - floor)
    out, cut = list(pieces), False
    for i in reversed(range(len(out))):
        if excess <= 0 or spare <= 0:
            break
        if out[i].kind == "user":
            take = min(excess, spare, len(out[i].ids))
            out[i] = Piece("user", out[i].ids[: len(out[i].ids) - take])
            excess, spare, cut = excess - take, spare - take, cut or take > 0
    return [p for p in out if p.ids], cut


def _cut_answer(pieces: list[Piece], max_length: int) -> list[Piece] | None:
    """The longest prefix of at most max_length tokens that ends inside an answer (None: not even one token)."""
    out, used = [], 0
    for p in pieces:
        room = max_length - used
        if room <= 0:
            break
        if len(p.ids) <= room:
            out.append(p)
            used += len(p.ids)
        elif p.kind == "answer":
            out.append(Piece("answer", p.ids[:room]))
            break
        else:
            break
    while out and out[-1].kind != "answer":
        out.pop()
    return out or None


def encode_pieces(tokenizer, pieces: list[tuple[str, str, int]]) -> list[Exchange]:
    """Tokenize rendered pieces into exchanges of Pieces.

    Tokens are cut where encode_segments cuts them (at answer boundaries); inside a prompt
    segment the whole text is encoded at once and each token is given to the piece it lies in,
    by character offsets (a token that runs past a prompt turn's text goes to the template after it).
    """
    exchanges: dict[int, list[Piece]] = {}
    i = 0
    while i < len(pieces):
        j = i
        while j < len(pieces) and pieces[j][1] in ("template", "user", "header"):
            j += 1
        group = pieces[i:j] if j > i else pieces[i:i + 1]
        for kind, ids, ex in _encode_group(tokenizer, group):
            exchanges.setdefault(ex, []).append(Piece(kind, tuple(ids)))
        i = max(j, i + 1)
    return [exchanges[k] for k in sorted(exchanges)]


def _encode_group(tokenizer, group: list[tuple[str, str, int]]) -> list[tuple[str, list[int], int]]:
    if len(group) == 1:
        text, kind, ex = group[0]
        return [(kind, tokenizer.encode(text, add_special_tokens=False), ex)]
    text = "".join(t for t, _, _ in group)
    try:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offsets = enc["offset_mapping"]
        ids = enc["input_ids"]
    except (NotImplementedError, ValueError, TypeError, KeyError):  # slow tokenizers have no offsets
        return [(kind, tokenizer.encode(t, add_special_tokens=False), ex) for t, kind, ex in group]
    bounds, pos = [], 0
    for t, kind, ex in group:
        bounds.append((pos, pos + len(t), kind, ex))
        pos += len(t)
    out: list[tuple[str, list[int], int]] = [(kind, [], ex) for _, _, kind, ex in bounds]
    idx = 0
    for tok, (s, _e) in zip(ids, offsets):
        # the piece holding the token's first character (never an earlier one: order is kept)
        while idx + 1 < len(bounds) and s >= bounds[idx][1]:
            idx += 1
        # a token that runs past the end of a prompt turn's text belongs to the template after it
        target = idx + 1 if bounds[idx][2] == "user" and _e > bounds[idx][1] and idx + 1 < len(bounds) else idx
        out[target][1].append(tok)
        idx = target
    return [p for p in out if p[1]]


class Collator:
    """Dynamic padding: each batch is padded to its own longest sequence (optionally a multiple of N)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None, label_key: str = "labels"):
        self.pad_token_id = pad_token_id
        self.multiple = pad_to_multiple_of
        self.label_key = label_key

    def __call__(self, features: list[dict]):
        import torch

        longest = max(len(f["input_ids"]) for f in features)
        if self.multiple:
            longest = -(-longest // self.multiple) * self.multiple  # round up
        batch = {"input_ids": [], "attention_mask": []}
        if self.label_key == "labels":
            batch["labels"] = []
        for f in features:
            pad = longest - len(f["input_ids"])
            batch["input_ids"].append(list(f["input_ids"]) + [self.pad_token_id] * pad)
            batch["attention_mask"].append([1] * len(f["input_ids"]) + [0] * pad)
            if self.label_key == "labels":
                batch["labels"].append(list(f["labels"]) + [IGNORE] * pad)
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
        if self.label_key == "label":
            out["labels"] = torch.tensor([int(f["label"]) for f in features], dtype=torch.long)
        return out
