"""Record formats, normalised to one shape: a conversation (sft) or a text with a label (classify).

    alpaca           instruction, input, output, optional system and history [[q, a], ...]
    sharegpt         conversations: [{from: human|gpt|system, value}], role names mappable (data.roles)
    messages         messages: [{role: user|assistant|system, content}]
    multiple_choice  context, question, answers [...], label (index)
    text             text (plain continuation; with task=classify also label)

``data.columns`` renames fields the LLaMA-Factory way: ``{output: response}``
reads the canonical ``output`` from the file's ``response`` column.
Every check names the record and the field, so a bad file is fixed in one go.
"""

from __future__ import annotations

from dataclasses import dataclass

from ftsweep.data.sources import DataError, Record, json_type

FORMATS = ("alpaca", "sharegpt", "messages", "multiple_choice", "text")
OPTION_LETTERS = "ABCDEFGHIJ"  # multiple_choice: the options' names in the prompt, and the sft answer
DEFAULT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system",
                 "model": "assistant", "bot": "assistant",
                 # sharegpt tool data (LLaMA-Factory's names): a call is an assistant turn with tool_calls, its result a tool turn
                 "function_call": "tool_call", "observation": "tool", "tool": "tool"}


@dataclass
class Example:
    messages: list[dict] | None = None  # sft: the conversation; every assistant turn is learned
    tools: list | None = None  # function schemas passed to the chat template (apply_chat_template(tools=...))
    text: str | None = None  # text format / classify input
    label: int | None = None  # classify


def normalise(record: Record, data_cfg, task_cfg) -> Example:
    fmt = str(data_cfg.format)
    if fmt not in FORMATS:
        raise DataError(f"data.format={fmt}: unknown format; choose one of {', '.join(FORMATS)}")
    columns = dict(data_cfg.columns or {})
    get = _Getter(record, columns)
    classify = task_cfg.name == "classify"
    if fmt == "alpaca":
        ex = Example(messages=_alpaca(get, data_cfg.system, bool(data_cfg.get("instruction_as_system"))))
    elif fmt in ("sharegpt", "messages"):
        ex = Example(messages=_conversation(get, fmt, {**DEFAULT_ROLES, **dict(data_cfg.get("roles") or {})}, data_cfg.system),
                     tools=_tools(get))
    elif fmt == "multiple_choice":
        text, n_options = _multiple_choice_text(get)
        label = get.label("label", n_options)
        if classify:
            ex = Example(text=text, label=label)
        else:
            ex = Example(messages=_with_system([{"role": "user", "content": text + "\nAnswer:"},
                                                {"role": "assistant", "content": OPTION_LETTERS[label]}], data_cfg.system))
    else:
        ex = Example(text=get.text("text"))
    if classify:
        if ex.text is None:
            raise DataError(f"task=classify reads data.format=multiple_choice or text (with a label), not {fmt}")
        if ex.label is None:
            ex.label = get.label("label", None)
        num = int(task_cfg.num_labels)
        if not 0 <= ex.label < num:
            raise DataError(f"{record.origin}: field '{get.name('label')}' is {ex.label}, outside task.num_labels={num} "
                            f"(labels are 0..{num - 1}); fix the record or raise task.num_labels")
    return ex


class _Getter:
    """Field access with the record's origin in every error."""

    def __init__(self, record: Record, columns: dict):
        self.record, self.columns = record, columns

    def name(self, key: str) -> str:
        return str(self.columns.get(key, key))

    def fail(self, key: str, problem: str, fix: str) -> DataError:
        return DataError(f"{self.record.origin}: field '{self.name(key)}' {problem}; {fix}")

    def raw(self, key: str, required: bool = True):
        col = self.name(key)
        if col not in self.record.fields or self.record.fields[col] is None:
            if required:
                raise self.fail(key, "is missing", f"add it, or map another column with data.columns.{key}=NAME")
            return None
        return self.record.fields[col]

    def text(self, key: str, required: bool = True, allow_empty: bool = False) -> str | None:
        value = self.raw(key, required)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.fail(key, f"is {json_type(value)}, expected text", "make it a string")
        if not allow_empty and not value.strip():
            raise self.fail(key, "is empty", "give it text, or drop the record (data.on_bad_record=skip skips such records)")
        return value

    def label(self, key: str, n_options: int | None) -> int:
        value = self.raw(key)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(key, f"is {value!r}, expected a class index (0, 1, ...)", "store labels as integers")
        if n_options is not None and not 0 <= value < n_options:
            raise self.fail(key, f"is {value}, but the record has {n_options} answers", f"use an index in 0..{n_options - 1}")
        return value


def _with_system(messages: list[dict], system: str | None) -> list[dict]:
    if system and not any(m["role"] == "system" for m in messages):
        return [{"role": "system", "content": system}, *messages]
    return messages


def _alpaca(get: _Getter, default_system: str | None, instruction_as_system: bool = False) -> list[dict]:
    instruction = get.text("instruction", allow_empty=True)
    inp = get.text("input", required=False, allow_empty=True) or ""
    output = get.text("output")
    system = get.text("system", required=False, allow_empty=True) or default_system
    if instruction_as_system:  # the instruction is the task description; the input is what the user says
        if not inp.strip():
            raise get.fail("input", "is empty, but data.instruction_as_system=true makes it the user turn", "give it text")
        return [{"role": "system", "content": instruction}, {"role": "user", "content": inp, "instruction": inp, "input": ""},
                {"role": "assistant", "content": output}]
    if not instruction.strip() and not inp.strip():
        raise get.fail("instruction", "is empty and so is the input", "give the record a prompt")
    messages = [{"role": "system", "content": system}] if system else []
    history = get.raw("history", required=False) or []
    if not isinstance(history, list) or not all(isinstance(t, (list, tuple)) and len(t) == 2 for t in history):
        raise get.fail("history", "is not a list of [query, response] pairs", 'write it as [["q1", "a1"], ["q2", "a2"]]')
    for query, response in history:
        messages += [{"role": "user", "content": str(query)}, {"role": "assistant", "content": str(response)}]
    user = instruction + ("\n" + inp if inp else "")
    # instruction / input stay on the message for custom templates that place them separately.
    messages += [{"role": "user", "content": user, "instruction": instruction, "input": inp},
                 {"role": "assistant", "content": output}]
    return messages


def _conversation(get: _Getter, fmt: str, roles: dict, default_system: str | None) -> list[dict]:
    key, role_key, content_key = ("conversations", "from", "value") if fmt == "sharegpt" else ("messages", "role", "content")
    turns = get.raw(key)
    if not isinstance(turns, list) or not turns:
        raise get.fail(key, "is not a non-empty list of turns", f"write it as [{{'{role_key}': ..., '{content_key}': ...}}, ...]")
    role_key, content_key = get.name(role_key), get.name(content_key)
    messages = []
    for i, turn in enumerate(turns, start=1):
        if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
            raise get.fail(key, f"turn {i} lacks '{role_key}' or '{content_key}'", "give every turn both keys (or map them in data.columns)")
        role = roles.get(str(turn[role_key]))
        if role is None:
            raise get.fail(key, f"turn {i} has role {turn[role_key]!r}", f"map it in data.roles (known: {', '.join(sorted(roles))})")
        if not isinstance(turn[content_key], str):
            raise get.fail(key, f"turn {i} content is {json_type(turn[content_key])}, expected text", "make it a string")
        if role == "tool_call":
            messages.append({"role": "assistant", "content": "", "tool_calls": _tool_calls(get, key, i, turn[content_key])})
            continue
        if role not in ("user", "assistant", "system", "tool"):
            raise get.fail(key, f"turn {i} maps to role {role!r}", "map roles to user, assistant, system, tool or tool_call in data.roles")
        if role == "assistant" and not turn[content_key].strip():
            raise get.fail(key, f"turn {i} is an empty assistant turn", "give it text or drop the record (data.on_bad_record=skip)")
        messages.append({"role": role, "content": turn[content_key]})
    system = get.text("system", required=False, allow_empty=True)
    if system:
        messages = [{"role": "system", "content": system}, *messages]
    if not any(m["role"] == "assistant" for m in messages):
        raise get.fail(key, "has no assistant turn, so nothing would be learned", "add the response turn")
    return _with_system(messages, default_system)


def _tools(get: _Getter) -> list | None:
    """The record's tool schemas: a list, or a JSON string holding one (as LLaMA-Factory's sharegpt files store it)."""
    import json

    tools = get.raw("tools", required=False)
    if isinstance(tools, str):
        if not tools.strip():
            return None
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError:
            raise get.fail("tools", "is text but not JSON", "store it as a list of function schemas") from None
    if tools is None:
        return None
    if not isinstance(tools, list) or not all(isinstance(t, dict) for t in tools):
        raise get.fail("tools", f"is {json_type(tools)}, not a list of function schemas",
                       'write it as [{"type": "function", "function": {"name": ..., "parameters": ...}}, ...]')
    return tools or None


def _tool_calls(get: _Getter, key: str, i: int, value: str) -> list[dict]:
    """A function_call turn's value, {"name": ..., "arguments": {...}} (or a list of them), as template tool_calls."""
    import json

    try:
        calls = json.loads(value)
    except json.JSONDecodeError:
        raise get.fail(key, f"turn {i} is a function call but not JSON", 'write it as {"name": ..., "arguments": {...}}') from None
    calls = calls if isinstance(calls, list) else [calls]
    if not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        raise get.fail(key, f"turn {i} is a function call without a name", 'write it as {"name": ..., "arguments": {...}}')
    return [{"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}} for c in calls]


def _multiple_choice_text(get: _Getter) -> tuple[str, int]:
    """ReClor-style: 'Context: ... Question: ... Option A: ... Option B: ...'."""
    context = get.text("context", allow_empty=True)
    question = get.text("question")
    answers = get.raw("answers")
    if not isinstance(answers, list) or len(answers) < 2 or not all(isinstance(a, str) for a in answers):
        raise get.fail("answers", "is not a list of at least two strings", 'write it as ["first option", "second option", ...]')
    if len(answers) > len(OPTION_LETTERS):
        raise get.fail("answers", f"has {len(answers)} options, more than the {len(OPTION_LETTERS)} lettered A to J",
                       "split the question or drop options")
    options = "\n".join(f"Option {OPTION_LETTERS[i]}: {a}" for i, a in enumerate(answers))
    return f"Context: {context}\nQuestion: {question}\n{options}", len(answers)
