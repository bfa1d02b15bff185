"""Named templates checked token for token against their reference renderings, on the tiny tokenizer."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ftsweep import data
from ftsweep.data import templates
from ftsweep.data.tokenize import IGNORE

# The chat template of meta-llama/Llama-2-7b-chat-hf (tokenizer_config.json), verbatim.
OFFICIAL_LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
    "{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate "
    "user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = "
    "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}"
    "{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)


def meta_chat_completion_tokens(tok, dialog: list[dict]) -> list[int]:
    """Meta's reference (llama/generation.py, chat_completion) with the tokenizer's bos/eos ids."""
    B_INST, E_INST = "[INST]", "[/INST]"
    B_SYS, E_SYS = "<<SYS>>\n", "\n<</SYS>>\n\n"
    if dialog[0]["role"] == "system":
        dialog = [{"role": dialog[1]["role"], "content": B_SYS + dialog[0]["content"] + E_SYS + dialog[1]["content"]}] + dialog[2:]

    def encode(text, bos, eos):
        return [tok.bos_token_id] * bos + tok.encode(text, add_special_tokens=False) + [tok.eos_token_id] * eos

    tokens = []
    for prompt, answer in zip(dialog[::2], dialog[1::2]):
        tokens += encode(f"{B_INST} {(prompt['content']).strip()} {E_INST} {(answer['content']).strip()} ", True, True)
    if len(dialog) % 2:
        tokens += encode(f"{B_INST} {(dialog[-1]['content']).strip()} {E_INST}", True, False)
    return tokens


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


DIALOG = [{"role": "system", "content": " Answer in one word. "}, {"role": "user", "content": "  Capital of Norway?\n"},
          {"role": "assistant", "content": " Oslo.\n"}, {"role": "user", "content": "And of Sweden? "},
          {"role": "assistant", "content": "Stockholm. "}]


def test_llama2_is_the_official_template_text():
    assert templates.LLAMA2 == OFFICIAL_LLAMA2


def test_llama2_training_rows_match_meta_token_for_token(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("FTSWEEP_TOKENIZED_CACHE", "0")
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"messages": DIALOG}) * 1 + "\n" + json.dumps({"messages": DIALOG}) + "\n", encoding="utf-8")
    cfg = OmegaConf.create(dict(name="t", source="auto", path=str(path), format="messages", columns={}, roles={}, template="llama2",
                                system=None, custom_template={}, n=None, val_size=1, val_path=None, max_length=512,
                                train_on_prompt=False, shuffle_seed=0, shuffle=True, instruction_as_system=False,
                                on_bad_record="error", pad_to_multiple_of=None, hub_config=None, split="train"))
    bundle = data.prepare(cfg, OmegaConf.create({"name": "sft", "num_labels": None, "class_weights": None}), tok)
    row = bundle.train[0]
    assert row["input_ids"] == meta_chat_completion_tokens(tok, DIALOG)
    assert tok.decode(row["input_ids"]) == ("<s>[INST] <<SYS>>\n Answer in one word. \n<</SYS>>\n\n  Capital of Norway? [/INST] "
                                            "Oslo. <|im_end|><s>[INST] And of Sweden? [/INST] Stockholm. <|im_end|>")
    learned = [tok.decode([t for t, lab in zip(row["input_ids"], row["labels"]) if lab != IGNORE])]
    assert learned == [" Oslo. <|im_end|> Stockholm. <|im_end|>"]
    # The generation prompt is Meta's dialog ending with the user turn.
    prompt = templates.render_prompt(tok, templates.LLAMA2, DIALOG)
    assert tok.encode(prompt, add_special_tokens=False) == meta_chat_completion_tokens(tok, DIALOG[:-1])
    # And the official text renders the same string through transformers.
    assert tok.apply_chat_template(DIALOG, chat_template=OFFICIAL_LLAMA2, tokenize=False) == tok.decode(row["input_ids"])


def test_llama2_refuses_roles_that_do_not_alternate_with_one_line(tok):
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    with pytest.raises(ValueError) as err:
        templates.render_segments(tok, templates.LLAMA2, bad)
    assert "roles user/user" in str(err.value) and "must alternate" in str(err.value) and "\n" not in str(err.value)
