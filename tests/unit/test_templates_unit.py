"""Chat rendering and masking: the exact text each template renders, and which pieces of it are learned.

render_pieces cuts a rendered chat into template text, the prompt turns' own text ("user"), the header
right before an answer, the answer (learned) and what follows it (masked). Every expectation below is
the template's text written out by hand.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import lane  # noqa: F401 - the lane's preloaded imports
from ftsweep.data import templates as T
from ftsweep.models import build_tiny_tokenizer


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer()  # byte-level, eos <|im_end|>, bos <s>, a ChatML-like own template


CHAT = [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo."},
        {"role": "user", "content": "  Q2 "}, {"role": "assistant", "content": "A2"}]

IM = [("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\n", "template", 0), ("Hi?", "user", 0),
      ("<|im_end|>\n<|im_start|>assistant\n", "header", 0), ("Yo.<|im_end|>", "answer", 0), ("\n", "after", 0),
      ("<|im_start|>user\n", "template", 1), ("  Q2 ", "user", 1), ("<|im_end|>\n<|im_start|>assistant\n", "header", 1),
      ("A2<|im_end|>", "answer", 1), ("\n", "after", 1)]
EXPECTED = {
    None: (IM, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nYo.<|im_end|>\n"
               "<|im_start|>user\n  Q2 <|im_end|>\n<|im_start|>assistant\n"),
    "chatml": (IM, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\nYo.<|im_end|>\n"
                   "<|im_start|>user\n  Q2 <|im_end|>\n<|im_start|>assistant\n"),
    # Llama-2: the system inside the first [INST], contents stripped (so the second question is "Q2"), no text after </s>.
    "llama2": ([("<s>[INST] <<SYS>>\nS\n<</SYS>>\n\n", "template", 0), ("Hi?", "user", 0), (" [/INST]", "header", 0),
                (" Yo. <|im_end|>", "answer", 0), ("<s>[INST] ", "template", 1), ("Q2", "user", 1), (" [/INST]", "header", 1),
                (" A2 <|im_end|>", "answer", 1)],
               "<s>[INST] <<SYS>>\nS\n<</SYS>>\n\nHi? [/INST] Yo. <|im_end|><s>[INST] Q2 [/INST]"),
    "alpaca": ([("S\n\n### Instruction:\n", "template", 0), ("Hi?", "user", 0), ("\n\n### Response:\n", "header", 0),
                ("Yo.<|im_end|>", "answer", 0), ("\n\n", "after", 0), ("### Instruction:\n", "template", 1), ("  Q2 ", "user", 1),
                ("\n\n### Response:\n", "header", 1), ("A2<|im_end|>", "answer", 1), ("\n\n", "after", 1)],
               "S\n\n### Instruction:\nHi?\n\n### Response:\nYo.<|im_end|>\n\n### Instruction:\n  Q2 \n\n### Response:\n"),
}


@pytest.mark.parametrize("name", [None, "chatml", "llama2", "alpaca"])
def test_named_templates_render_and_mask_a_two_exchange_chat(tok, name):
    tpl = T.resolve(name, tok)
    pieces, prompt = EXPECTED[name]
    assert T.render_pieces(tok, tpl, CHAT) == pieces
    # The pieces are the template's whole rendering, nothing added or lost; only the answers are learned.
    assert "".join(t for t, _, _ in pieces) == tok.apply_chat_template(CHAT, chat_template=tpl, tokenize=False)
    assert T.render_segments(tok, tpl, CHAT) == [(t, k == "answer") for t, k, _ in pieces]
    # The generation prompt: everything before the last answer, with the template's assistant header.
    assert T.render_prompt(tok, tpl, CHAT) == prompt


def test_consecutive_answers_each_learned_and_the_prompt_between_them_is_a_header(tok):
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "One."}, {"role": "assistant", "content": "Two."}]
    assert T.render_pieces(tok, T.CHATML, chat) == [
        ("<|im_start|>user\n", "template", 0), ("Hi", "user", 0), ("<|im_end|>\n<|im_start|>assistant\n", "header", 0),
        ("One.<|im_end|>", "answer", 0), ("\n", "after", 0), ("<|im_start|>assistant\n", "header", 0),
        ("Two.<|im_end|>", "answer", 0), ("\n", "after", 0)]


# Templates that change the question's text: the prompt cannot be split by markers, so it is one masked header.
UPPER = ("{%- for m in messages -%}{{ m['role'] + ': ' + (m['content'] | upper if m['role'] == 'user' else m['content']) + '\\n' }}"
         "{%- endfor -%}{%- if add_generation_prompt -%}{{ 'assistant: ' }}{%- endif -%}")
BANG = ("{%- for m in messages -%}{{ m['role'] + ': ' + m['content'] }}{{ '!' if m['content'].endswith('?') else '' }}{{ '\\n' }}"
        "{%- endfor -%}{%- if add_generation_prompt -%}{{ 'assistant: ' }}{%- endif -%}")
TAIL = ("{%- for m in messages -%}{%- if m['role'] == 'assistant' -%}"
        "{{ 'assistant:' + (' Q' if loop.previtem['content'].endswith('?') else '') + ' ' + m['content'] + '\\n' }}"
        "{%- else -%}{{ m['role'] + ': ' + m['content'] + '\\n' }}{%- endif -%}{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{ 'assistant:' + (' Q' if messages[-1]['content'].endswith('?') else '') }}{%- endif -%}")


@pytest.mark.parametrize("template, prompt, answer", [
    (UPPER, "user: HI?\nassistant: ", "Yo.\n"),
    (BANG, "user: Hi?!\nassistant: ", "Yo.\n"),
    (TAIL, "user: Hi?\nassistant: Q", " Yo.\n"),
])
def test_a_template_that_transforms_the_question_masks_the_prompt_as_one_header(tok, template, prompt, answer):
    chat = [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Yo."}]
    # No end token in these templates: the whole answer is learned and nothing follows it.
    assert T.render_pieces(tok, template, chat) == [(prompt, "header", 0), (answer, "answer", 0)]


# ---- data.template=custom: one format string per role ---------------------------------------------

STUB = SimpleNamespace(eos_token="<E>", bos_token="<B>")
SPEC = {"system": "[{content}]\n", "user": "{bos}Q: {content}\n", "assistant": "A: {content}{eos}\n\n"}


@pytest.mark.parametrize("messages, expected", [
    (CHAT[:3] + [{"role": "user", "content": "Q2"}, {"role": "assistant", "content": "A2"}],
     [("[S]\n", "template", 0), ("<B>Q: ", "template", 0), ("Hi?", "user", 0), ("\n", "header", 0), ("A: Yo.<E>", "answer", 0),
      ("\n\n", "after", 0), ("<B>Q: ", "template", 1), ("Q2", "user", 1), ("\n", "header", 1), ("A: A2<E>", "answer", 1),
      ("\n\n", "after", 1)]),
    # No question: the system text right before the answer is its header.
    ([{"role": "system", "content": "S"}, {"role": "assistant", "content": "Yo."}],
     [("[S]\n", "header", 0), ("A: Yo.<E>", "answer", 0), ("\n\n", "after", 0)]),
    # An empty question renders as template text: all the template text before the answer is one header.
    ([{"role": "system", "content": "S"}, {"role": "user", "content": ""}, {"role": "assistant", "content": "Yo."}],
     [("[S]\n<B>Q: \n", "header", 0), ("A: Yo.<E>", "answer", 0), ("\n\n", "after", 0)]),
    ([{"role": "user", "content": "Hi"}, {"role": "user", "content": ""}, {"role": "assistant", "content": "Yo."}],
     [("<B>Q: ", "template", 0), ("Hi", "user", 0), ("\n<B>Q: \n", "header", 0), ("A: Yo.<E>", "answer", 0),
      ("\n\n", "after", 0)]),
    # The answer is learned up to its last end token, even when the text mentions the end token itself.
    ([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "say <E> here"}],
     [("<B>Q: ", "template", 0), ("Hi", "user", 0), ("\n", "header", 0), ("A: say <E> here<E>", "answer", 0),
      ("\n\n", "after", 0)]),
])
def test_custom_template_pieces(messages, expected):
    tpl = T.custom(SPEC)
    assert T.render_pieces(STUB, tpl, messages) == expected
    assert T.render_segments(STUB, tpl, messages) == [(t, k == "answer") for t, k, _ in expected]


@pytest.mark.parametrize("assistant, pieces", [
    # Llama's </s> ends an answer even when the tokenizer's own end token is another one.
    ("{content}</s>\n", [("Yo</s>", "answer", 0), ("\n", "after", 0)]),
    # No end token at all: the whole assistant text is learned, nothing after it.
    ("=> {content}", [("=> Yo", "answer", 0)]),
])
def test_custom_answer_ends_at_eos_or_llama_end_token(assistant, pieces):
    tpl = T.custom({"user": "{content}\n", "assistant": assistant})
    chat = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]
    assert T.render_pieces(STUB, tpl, chat) == [("Hi", "user", 0), ("\n", "header", 0)] + pieces


def test_custom_prompt_is_every_turn_before_the_last_answer():
    tpl = T.custom(SPEC)
    assert T.render_prompt(STUB, tpl, CHAT) == "[S]\n<B>Q: Hi?\nA: Yo.<E>\n\n<B>Q:   Q2 \n"


def test_format_fields_fill_in_and_missing_tokens_are_empty():
    tpl = T.FormatTemplate("{content}", "I={instruction};N={input};B={bos};E={eos};C={content}", "{content}")
    assert tpl.render({"role": "user", "content": "C"}, SimpleNamespace(eos_token=None, bos_token=None)) == "I=C;N=;B=;E=;C=C"
    msg = {"role": "user", "content": "X\nY", "instruction": "X", "input": "Y"}
    assert tpl.render(msg, STUB) == "I=X;N=Y;B=<B>;E=<E>;C=X\nY"


FIELDS = "the fields are {content}, {eos}, {bos}, {instruction}, {input}"


@pytest.mark.parametrize("spec, message", [
    ({"assistant": "{content}"}, "data.template=custom needs data.custom_template.user (a format string, e.g. '{content}')"),
    ({}, "data.template=custom needs data.custom_template.user (a format string, e.g. '{content}')"),
    ({"user": "{content}", "assistant": ""}, "data.template=custom needs data.custom_template.assistant (a format string, e.g. '{content}')"),
    ({"user": "{question}", "assistant": "{content}"}, "data.custom_template.user uses {question}; " + FIELDS),
    ({"user": "{content}", "assistant": "{content}", "system": "{zeta}{alpha}"}, "data.custom_template.system uses {alpha}; " + FIELDS),
    ({"user": "{content}", "assistant": "{eos}"},
     "data.custom_template.assistant has no {content}: nothing would be learned; add {content}"),
])
def test_custom_template_errors_name_the_key_and_the_fix(spec, message):
    with pytest.raises(ValueError) as err:
        T.custom(spec)
    assert str(err.value) == message


def test_custom_system_defaults_to_its_content_on_a_line():
    assert T.custom({"user": "{content}", "assistant": "{content}"}).system == "{content}\n"
    assert T.custom({"user": "{content}", "assistant": "{content}", "system": "<<{content}>>"}).system == "<<{content}>>"


def test_resolve_picks_custom_named_or_the_tokenizers_own(tok):
    assert T.resolve("custom", tok, {"user": "U{content}", "assistant": "{content}"}) == T.FormatTemplate("{content}\n", "U{content}", "{content}")
    assert (T.resolve("llama2", tok), T.resolve("chatml", tok), T.resolve("alpaca", tok)) == (T.LLAMA2, T.CHATML, T.ALPACA)
    assert T.resolve(None, tok) == tok.chat_template
    with pytest.raises(ValueError, match=r"needs data\.custom_template\.user"):
        T.resolve("custom", tok, None)
    with pytest.raises(ValueError) as err:
        T.resolve("vicuna", tok)
    assert str(err.value) == ("data.template=vicuna: unknown template; choose one of ['alpaca', 'chatml', 'llama2'], custom, "
                              "or null for the tokenizer's own")
    with pytest.raises(ValueError) as err:
        T.resolve(None, SimpleNamespace(chat_template=None))
    assert str(err.value) == "the tokenizer has no chat template: set data.template to one of alpaca, chatml, llama2"


@pytest.mark.parametrize("roles, exchanges", [
    (["system", "user", "assistant", "user", "assistant"], [0, 0, 0, 1, 1]),
    (["user", "user", "assistant", "user", "assistant"], [0, 0, 0, 1, 1]),  # consecutive questions share an exchange
    (["user", "system", "user", "assistant"], [0, 0, 0, 0]),  # a system message between them does not split them
    (["system", "system", "user", "assistant"], [0, 0, 0, 0]),
    (["assistant", "user", "assistant"], [0, 0, 0]),
    (["user", "assistant", "tool", "assistant", "user", "assistant"], [0, 0, 0, 0, 1, 1]),  # tool results stay with their question
])
def test_exchange_of(roles, exchanges):
    assert T.exchange_of([{"role": r, "content": "x"} for r in roles]) == exchanges


# ---- refusals -------------------------------------------------------------------------------------

def test_a_template_refusal_names_the_roles(tok):
    bad = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c"}]
    with pytest.raises(ValueError) as err:
        T.render_pieces(tok, T.LLAMA2, bad)
    # The roles of the rendering that failed: the prompt before the first answer.
    assert str(err.value) == ("the chat template refuses a conversation with roles user/user: Conversation roles must "
                              "alternate user/assistant/user/assistant/...; fix the records or choose another data.template")


LAST_ONLY = ("{%- for m in messages -%}{{ m['role'] + ': ' + m['content'] }}{{ ' <end>' if loop.last else '' }}{{ '\\n' }}"
             "{%- endfor -%}{%- if add_generation_prompt -%}{{ 'assistant: ' }}{%- endif -%}")
DROPS_ANSWER = ("{%- for m in messages -%}{{ m['role'] + ': ' + (m['content'] if m['role'] != 'assistant' else '...') + '\\n' }}"
                "{%- endfor -%}{%- if add_generation_prompt -%}{{ 'assistant: ' }}{%- endif -%}")


@pytest.mark.parametrize("template, message", [
    (LAST_ONLY, "the chat template renders a turn differently once later turns follow; use a named data.template"),
    (DROPS_ANSWER, "the chat template does not render the assistant's text where the generation prompt ends, so nothing would "
                   "be learned; set data.template to llama2, chatml, alpaca or custom"),
])
def test_templates_that_cannot_be_masked_are_refused(tok, template, message):
    with pytest.raises(ValueError) as err:
        T.render_pieces(tok, template, CHAT[1:3])
    assert str(err.value) == message


# ---- tools ----------------------------------------------------------------------------------------

TOOLS_TPL = (
    "{%- if tools -%}{{ '<|im_start|>system\\ntools: ' + (tools | map(attribute='function') | map(attribute='name') | join(', '))"
    " + '<|im_end|>\\n' }}{%- endif -%}"
    "{%- for m in messages -%}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] }}"
    "{%- for c in m.get('tool_calls') or [] -%}{{ 'call ' + c['function']['name'] + '(' + c['function']['arguments'] + ')' }}"
    "{%- endfor -%}{{ '<|im_end|>\\n' }}{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {}}}]
CALL = {"role": "assistant", "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}]}
TOOL_CHAT = [{"role": "user", "content": "Weather in Oslo?"}, CALL, {"role": "tool", "content": "3C"},
             {"role": "assistant", "content": "It is 3C."}]


def test_tools_and_calls_render_and_the_call_is_learned(tok):
    assert T.render_pieces(tok, TOOLS_TPL, TOOL_CHAT, TOOLS) == [
        ("<|im_start|>system\ntools: get_weather<|im_end|>\n<|im_start|>user\n", "template", 0), ("Weather in Oslo?", "user", 0),
        ("<|im_end|>\n<|im_start|>assistant\n", "header", 0), ('call get_weather({"city": "Oslo"})<|im_end|>', "answer", 0),
        ("\n", "after", 0), ("<|im_start|>tool\n", "template", 0), ("3C", "user", 0),
        ("<|im_end|>\n<|im_start|>assistant\n", "header", 0), ("It is 3C.<|im_end|>", "answer", 0), ("\n", "after", 0)]
    assert T.render_prompt(tok, TOOLS_TPL, TOOL_CHAT, TOOLS) == (
        '<|im_start|>system\ntools: get_weather<|im_end|>\n<|im_start|>user\nWeather in Oslo?<|im_end|>\n<|im_start|>assistant\n'
        'call get_weather({"city": "Oslo"})<|im_end|>\n<|im_start|>tool\n3C<|im_end|>\n<|im_start|>assistant\n')


NO_TOOLS_FIX = (", so they would be dropped without a word; use the model's own template (data.template=null) if it supports "
                "tools, or a data.template / model.chat_template that does")


LISTS_TOOLS_DROPS_CALLS = TOOLS_TPL.replace("{{ 'call ' + c['function']['name'] + '(' + c['function']['arguments'] + ')' }}", "")


@pytest.mark.parametrize("template, messages, tools, what", [
    (None, TOOL_CHAT[:1] + [{"role": "assistant", "content": "Sunny."}], TOOLS, "the record's tools"),
    (T.ALPACA, TOOL_CHAT[:1] + [{"role": "assistant", "content": "Sunny."}], TOOLS, "the record's tools"),
    (None, TOOL_CHAT, None, "tool calls (the call to 'get_weather' is missing)"),
    # The tools listing names get_weather, but the call itself is not rendered: still refused.
    (LISTS_TOOLS_DROPS_CALLS, TOOL_CHAT, TOOLS, "tool calls (the call to 'get_weather' is missing)"),
    # Two calls, one rendered (the template shows only the first call of a turn): the second would be dropped.
    (TOOLS_TPL.replace("m.get('tool_calls') or []", "(m.get('tool_calls') or [])[:1]"),
     [TOOL_CHAT[0], dict(CALL, tool_calls=CALL["tool_calls"] * 2)] + TOOL_CHAT[2:], TOOLS,
     "tool calls (the call to 'get_weather' is missing)"),
    ("custom", TOOL_CHAT[:1] + [{"role": "assistant", "content": "Sunny."}], TOOLS,
     "tools or tool calls (data.template=custom has no place for them)"),
])
def test_tools_a_template_would_drop_are_refused(tok, template, messages, tools, what):
    tpl = {"custom": T.custom({"user": "{content}", "assistant": "{content}"}), None: tok.chat_template}.get(template, template)
    with pytest.raises(ValueError) as err:
        T.render_pieces(tok, tpl, messages, tools)
    assert str(err.value) == "the chat template does not render " + what + NO_TOOLS_FIX
