"""Prompt templates: every template is a Jinja chat template over a message list.

The tokenizer's own chat template is the default. Named templates cover models
whose tokenizer has none or whose tutorial format differs. Rendering goes
through ``tokenizer.apply_chat_template`` either way, so one masking routine
(``render_segments``) serves them all.
"""

from __future__ import annotations

# Llama-2 chat: [INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {assistant} </s>
LLAMA2 = (
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{%- set ns.system = m['content'] -%}"
    "{%- elif m['role'] == 'user' -%}"
    "{{ '<s>[INST] ' }}{%- if ns.system -%}{{ '<<SYS>>\\n' + ns.system + '\\n<</SYS>>\\n\\n' }}{%- set ns.system = '' -%}{%- endif -%}"
    "{{ m['content'] + '\\n[/INST]' }}"
    "{%- elif m['role'] == 'assistant' -%}{{ ' ' + m['content'] + ' </s>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

CHATML = (
    "{%- for m in messages -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

ALPACA = (
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}{{ m['content'] + '\\n\\n' }}"
    "{%- elif m['role'] == 'user' -%}{{ '### Instruction:\\n' + m['content'] + '\\n\\n### Response:\\n' }}"
    "{%- elif m['role'] == 'assistant' -%}{{ m['content'] + eos_token + '\\n\\n' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)

NAMED = {"llama2": LLAMA2, "chatml": CHATML, "alpaca": ALPACA}


def resolve(name: str | None, tokenizer) -> str:
    """The Jinja template to render with: a named one, or the tokenizer's own."""
    if name:
        if name not in NAMED:
            raise ValueError(f"data.template={name}: unknown template; choose one of {sorted(NAMED)} or null for the tokenizer's own")
        return NAMED[name]
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template: set data.template to one of " + ", ".join(sorted(NAMED)))
    return tokenizer.chat_template


def _render(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def render_segments(tokenizer, template: str, messages: list[dict]) -> list[tuple[str, bool]]:
    """Split a rendered conversation into (text, learn) pieces.

    An assistant turn's text is what rendering messages[:i+1] adds to rendering
    messages[:i] with the generation prompt. Whatever follows its end-of-turn
    token (a newline, say) belongs to the next prompt, so it is not learned.
    """
    eos = tokenizer.eos_token or ""
    segments: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, template, messages[:i], add_generation_prompt=True)
        full = _render(tokenizer, template, messages[: i + 1], add_generation_prompt=False)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise ValueError("the chat template renders a turn differently once later turns follow; use a named data.template")
        segments.append((prefix[len(done):], False))
        answer = full[len(prefix):]
        ends = [answer.rfind(t) + len(t) for t in {eos, "</s>"} if t and t in answer]
        cut = max(ends, default=len(answer))
        segments += [(answer[:cut], True), (answer[cut:], False)]
        done = full
    return [(text, learn) for text, learn in segments if text]


def render_prompt(tokenizer, template: str, messages: list[dict]) -> str:
    """The prompt for generation: everything before the last assistant turn."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return _render(tokenizer, template, messages[:last], add_generation_prompt=True)
