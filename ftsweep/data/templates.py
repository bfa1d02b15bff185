"""Prompt templates: a Jinja chat template over a message list, or format strings from YAML.

The tokenizer's own chat template is the default. Named templates cover models
whose tokenizer has none or whose tutorial format differs; both render through
``tokenizer.apply_chat_template``, so one masking routine (``render_segments``)
serves them. ``data.template=custom`` takes one format string per role from
``data.custom_template`` (fields: {content}, {eos}, {bos}, and for alpaca
records {instruction} and {input}).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

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


@dataclass
class FormatTemplate:
    """data.template=custom: one format string per role."""

    system: str
    user: str
    assistant: str

    FIELDS = ("content", "eos", "bos", "instruction", "input")

    def render(self, message: dict, tokenizer) -> str:
        fmt = {"system": self.system, "user": self.user, "assistant": self.assistant}[message["role"]]
        fields = {"content": message["content"], "eos": tokenizer.eos_token or "", "bos": tokenizer.bos_token or "",
                  "instruction": message.get("instruction", message["content"]), "input": message.get("input", "")}
        return fmt.format(**fields)


def custom(spec: dict) -> FormatTemplate:
    missing = [k for k in ("user", "assistant") if not spec.get(k)]
    if missing:
        raise ValueError(f"data.template=custom needs data.custom_template.{missing[0]} (a format string, e.g. '{{content}}')")
    tpl = FormatTemplate(system=spec.get("system") or "{content}\n", user=spec["user"], assistant=spec["assistant"])
    for role in ("system", "user", "assistant"):
        names = {f for _, f, _, _ in string.Formatter().parse(getattr(tpl, role)) if f}
        unknown = names - set(FormatTemplate.FIELDS)
        if unknown:
            raise ValueError(f"data.custom_template.{role} uses {{{sorted(unknown)[0]}}}; the fields are "
                             + ", ".join("{" + f + "}" for f in FormatTemplate.FIELDS))
    if "content" not in {f for _, f, _, _ in string.Formatter().parse(tpl.assistant) if f}:
        raise ValueError("data.custom_template.assistant has no {content}: nothing would be learned; add {content}")
    return tpl


def resolve(name: str | None, tokenizer, custom_spec: dict | None = None):
    """The template to render with: custom format strings, a named Jinja template, or the tokenizer's own."""
    if name == "custom":
        return custom(dict(custom_spec or {}))
    if name:
        if name not in NAMED:
            raise ValueError(f"data.template={name}: unknown template; choose one of {sorted(NAMED)}, custom, or null for the tokenizer's own")
        return NAMED[name]
    if not tokenizer.chat_template:
        raise ValueError("the tokenizer has no chat template: set data.template to one of " + ", ".join(sorted(NAMED)))
    return tokenizer.chat_template


def _render(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _split_answer(answer: str, eos: str) -> list[tuple[str, bool]]:
    """Learn the answer up to and including its end token; what follows (a newline) belongs to the next prompt."""
    ends = [answer.rfind(t) + len(t) for t in {eos, "</s>"} if t and t in answer]
    cut = max(ends, default=len(answer))
    return [(answer[:cut], True), (answer[cut:], False)]


def render_segments(tokenizer, template, messages: list[dict]) -> list[tuple[str, bool]]:
    """Split a rendered conversation into (text, learn) pieces; every assistant turn is learned.

    For a Jinja template, an assistant turn's text is what rendering
    messages[:i+1] adds to rendering messages[:i] with the generation prompt.
    """
    eos = tokenizer.eos_token or ""
    if isinstance(template, FormatTemplate):
        segments = []
        for m in messages:
            text = template.render(m, tokenizer)
            segments += _split_answer(text, eos) if m["role"] == "assistant" else [(text, False)]
        return [(t, learn) for t, learn in segments if t]
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
        if m["content"].strip() and m["content"].strip() not in answer:
            raise ValueError("the chat template does not render the assistant's text where the generation prompt ends, "
                             "so nothing would be learned; set data.template to llama2, chatml, alpaca or custom")
        segments += _split_answer(answer, eos)
        done = full
    return [(text, learn) for text, learn in segments if text]


def render_prompt(tokenizer, template, messages: list[dict]) -> str:
    """The prompt for generation: everything before the last assistant turn."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if isinstance(template, FormatTemplate):
        return "".join(template.render(m, tokenizer) for m in messages[:last])
    return _render(tokenizer, template, messages[:last], add_generation_prompt=True)
