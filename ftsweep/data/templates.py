"""Prompt templates: a Jinja chat template over a message list, or format strings from YAML.

The tokenizer's own chat template is the default. Named templates cover models
whose tokenizer has none or whose tutorial format differs; both render through
``tokenizer.apply_chat_template``, so one masking routine (``render_pieces``)
serves them. ``data.template=custom`` takes one format string per role from
``data.custom_template`` (fields: {content}, {eos}, {bos}, and for alpaca
records {instruction} and {input}).
"""

from __future__ import annotations

import string
from dataclasses import dataclass

# Llama-2 chat, as Meta's reference chat_completion and the chat template of meta-llama/Llama-2-7b-chat-hf
# render it (this is that template's text): contents stripped, the system inside the first [INST],
#   <s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n{user} [/INST] {answer} </s><s>[INST] {user2} [/INST]
# with the tokenizer's own bos/eos tokens; roles must alternate user/assistant.
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}"
    "{% endfor %}"
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


def _render(tokenizer, template: str, messages: list[dict], add_generation_prompt: bool, tools: list | None = None) -> str:
    from jinja2.exceptions import TemplateError

    try:
        return tokenizer.apply_chat_template(
            messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt, tools=tools
        )
    except TemplateError as exc:  # the template's own raise_exception, e.g. roles that must alternate
        roles = "/".join(m["role"] for m in messages)
        raise ValueError(f"the chat template refuses a conversation with roles {roles}: {exc}; fix the records or "
                         "choose another data.template") from None


def _split_answer(answer: str, eos: str) -> tuple[str, str]:
    """(learned, after): the answer up to and including its end token, and what follows it (a newline), which
    belongs to the next prompt."""
    ends = [answer.rfind(t) + len(t) for t in {eos, "</s>"} if t and t in answer]
    cut = max(ends, default=len(answer))
    return answer[:cut], answer[cut:]


def exchange_of(messages: list[dict]) -> list[int]:
    """Each message's exchange: a user turn opens one, and it holds everything up to the next user turn.

    Leading system messages belong to exchange 0; tool calls and tool results stay in the exchange of
    the question that caused them, so dropping an exchange never leaves an answer without its question.
    """
    out, ex, prev = [], -1, None
    for m in messages:
        if m["role"] == "user" and prev != "user":
            ex += 1
        out.append(max(ex, 0))
        if m["role"] != "system":
            prev = m["role"]
    return out


_MARK = "\ue000{}\ue001"  # private-use characters: survive strip(), never in a template's own text
_FIELDS = ("content", "instruction", "input")


def _marked(messages: list[dict], covered: range) -> tuple[list[dict], dict[str, str]]:
    """Copies of messages whose covered prompt turns carry markers in place of their text fields."""
    marks, out = {}, []
    for i, m in enumerate(messages):
        if i in covered and m["role"] in ("user", "tool"):
            m = dict(m)
            for f in _FIELDS:
                if isinstance(m.get(f), str) and m[f]:
                    key = _MARK.format(len(marks))
                    marks[key], m[f] = m[f], key
        out.append(m)
    return out, marks


def _prompt_pieces(text: str, marked_text: str, marks: dict[str, str]) -> list[tuple[str, str]]:
    """Split one prompt segment into template text, the prompt turns' own text ("user"), and the header.

    The header is the template's text after the last prompt turn (e.g. "<|im_end|>\n<|im_start|>assistant\n"
    or " [/INST]"). The spans come from rendering with markers; when the marked rendering cannot be matched
    to the real one (a template that transforms the text), the whole segment is treated as template + header.
    """
    import re

    parts = re.split("(" + "|".join(re.escape(k) for k in marks) + ")", marked_text) if marks else [marked_text]
    pieces, pos = [], 0
    for part in parts:
        if part in marks:
            value = next((v for v in (marks[part], marks[part].strip()) if text.startswith(v, pos)), None)
            if value is None:
                return [(text, "header")]
            pieces.append((value, "user"))
        else:
            if not text.startswith(part, pos):
                return [(text, "header")]
            pieces.append((part, "template"))
            value = part
        pos += len(value)
    if pos != len(text):
        return [(text, "header")]
    last_user = max((i for i, (_, kind) in enumerate(pieces) if kind == "user"), default=None)
    if last_user is None:
        return [(text, "header")]
    head = [(t, k) for t, k in pieces[: last_user + 1] if t]
    return head + [("".join(t for t, _ in pieces[last_user + 1:]), "header")]


NO_TOOLS = ("the chat template does not render {what}, so they would be dropped without a word; use the model's own "
            "template (data.template=null) if it supports tools, or a data.template / model.chat_template that does")


def _check_tools(tokenizer, template, messages: list[dict], tools: list | None) -> None:
    """Tools and tool calls must show up in the rendering: a template that ignores them is an error, not a silent drop."""
    calls = [c["function"]["name"] for m in messages for c in m.get("tool_calls") or []]
    if not tools and not calls:
        return
    if isinstance(template, FormatTemplate):
        raise ValueError(NO_TOOLS.format(what="tools or tool calls (data.template=custom has no place for them)"))
    # The first message rendered with the tools: the tools listing, which names every function too.
    listed = _render(tokenizer, template, messages[:1], False, tools) if tools else ""
    if tools and listed == _render(tokenizer, template, messages[:1], False):
        raise ValueError(NO_TOOLS.format(what="the record's tools"))
    rendered = _render(tokenizer, template, messages, False, tools)
    # A call counts as rendered only where its name shows up beyond the listing.
    missing = [name for name in calls if rendered.count(name) - listed.count(name) < calls.count(name)]
    if missing:
        raise ValueError(NO_TOOLS.format(what=f"tool calls (the call to {missing[0]!r} is missing)"))


def render_pieces(tokenizer, template, messages: list[dict], tools: list | None = None) -> list[tuple[str, str, int]]:
    """A conversation as (text, kind, exchange) pieces; kind is one of
    template, user (a prompt turn's own text), header (template text right before an answer),
    answer (learned: the assistant's text up to and including its end token), after (masked tail).

    For a Jinja template, an assistant turn's text is what rendering messages[:i+1] adds to
    rendering messages[:i] with the generation prompt; the prompt segment before it is what that
    prefix adds to the previous turn's rendering.
    """
    eos = tokenizer.eos_token or ""
    _check_tools(tokenizer, template, messages, tools)
    exchange = exchange_of(messages)
    pieces: list[tuple[str, str, int]] = []
    if isinstance(template, FormatTemplate):
        for i, m in enumerate(messages):
            text = template.render(m, tokenizer)
            if m["role"] == "assistant":
                answer, after = _split_answer(text, eos)
                pieces += [(answer, "answer", exchange[i]), (after, "after", exchange[i])]
            else:
                marked, marks = _marked([m], range(1))
                pieces += [(t, k if k != "header" else "template", exchange[i])
                           for t, k in _prompt_pieces(text, template.render(marked[0], tokenizer), marks)]
        return _with_headers([p for p in pieces if p[0]])
    done, start = "", 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prefix = _render(tokenizer, template, messages[:i], add_generation_prompt=True, tools=tools)
        full = _render(tokenizer, template, messages[: i + 1], add_generation_prompt=False, tools=tools)
        if not prefix.startswith(done) or not full.startswith(prefix):
            raise ValueError("the chat template renders a turn differently once later turns follow; use a named data.template")
        marked, marks = _marked(messages, range(start, i))
        marked_prefix = _render(tokenizer, template, marked[:i], add_generation_prompt=True, tools=tools)
        segment = prefix[len(done):]
        marked_segment = marked_prefix[len(done):] if marked_prefix.startswith(done) else segment
        pieces += [(t, k, exchange[i]) for t, k in _prompt_pieces(segment, marked_segment, marks)]
        answer = full[len(prefix):]
        if m["content"].strip() and m["content"].strip() not in answer:
            raise ValueError("the chat template does not render the assistant's text where the generation prompt ends, "
                             "so nothing would be learned; set data.template to llama2, chatml, alpaca or custom")
        learned, after = _split_answer(answer, eos)
        pieces += [(learned, "answer", exchange[i]), (after, "after", exchange[i])]
        done, start = full, i + 1
    return [p for p in pieces if p[0]]


def _with_headers(pieces: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Format templates: the prompt text after the last user text before an answer is that answer's header."""
    out = list(pieces)
    for j, (text, kind, ex) in enumerate(out):
        if kind != "answer":
            continue
        k = j - 1
        while k >= 0 and out[k][1] == "template":
            k -= 1
        if k < j - 1:  # merge the template pieces right before the answer into one header
            merged = "".join(t for t, _, _ in out[k + 1:j])
            out[k + 1:j] = [("", "template", ex)] * (j - k - 2) + [(merged, "header", ex)]
    return [p for p in out if p[0]]


def render_segments(tokenizer, template, messages: list[dict], tools: list | None = None) -> list[tuple[str, bool]]:
    """The conversation as (text, learn) pieces: every assistant turn is learned, everything else masked."""
    return [(text, kind == "answer") for text, kind, _ in render_pieces(tokenizer, template, messages, tools)]


def render_prompt(tokenizer, template, messages: list[dict], tools: list | None = None) -> str:
    """The prompt for generation: everything before the last assistant turn."""
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if isinstance(template, FormatTemplate):
        return "".join(template.render(m, tokenizer) for m in messages[:last])
    return _render(tokenizer, template, messages[:last], add_generation_prompt=True, tools=tools)
