"""Tool data: tools reach the chat template, function calls and observations take the template's tool roles."""

from __future__ import annotations

import json
from functools import partial

import pytest
from omegaconf import OmegaConf

from conftest import data_cfg
from ftsweep import data
from ftsweep.data.sources import DataError
from ftsweep.data.tokenize import IGNORE

# A Qwen2.5-style template (tools in the system turn, <tool_call> in assistant turns, results as <tool_response>).
QWEN25_STYLE = (
    "{%- if tools %}{{ '<|im_start|>system\\n' }}{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}"
    "{% else %}{{ 'You are a helpful assistant.' }}{% endif %}{{ '\\n\\n# Tools\\n\\n<tools>' }}"
    "{% for tool in tools %}{{ '\\n' + (tool | tojson) }}{% endfor %}{{ '\\n</tools><|im_end|>\\n' }}"
    "{%- elif messages[0]['role'] == 'system' %}{{ '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' or (message['role'] == 'assistant' and not message.get('tool_calls')) %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'assistant' %}{{ '<|im_start|>assistant' }}"
    "{%- for tc in message['tool_calls'] %}{{ '\\n<tool_call>\\n{\"name\": \"' + tc['function']['name'] + '\", \"arguments\": ' "
    "+ (tc['function']['arguments'] | tojson) + '}\\n</tool_call>' }}{%- endfor %}{{ '<|im_end|>\\n' }}"
    "{%- elif message['role'] == 'tool' %}{{ '<|im_start|>user\\n<tool_response>\\n' + message['content'] + "
    "'\\n</tool_response><|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
CHAT = {"conversations": [{"from": "human", "value": "Weather in Oslo?"},
                          {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Oslo"}})},
                          {"from": "observation", "value": "{\"temp\": 3}"},
                          {"from": "gpt", "value": "3 degrees."}],
        "tools": json.dumps(TOOLS)}  # LLaMA-Factory stores tools as a JSON string


@pytest.fixture
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


cfg = partial(data_cfg, format="sharegpt")


SFT = OmegaConf.create({"name": "sft", "num_labels": None, "class_weights": None})


def write(tmp_path, records):
    path = tmp_path / "tools.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_tools_and_calls_render_through_a_template_that_supports_them(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("FTSWEEP_TOKENIZED_CACHE", "0")
    tok.chat_template = QWEN25_STYLE
    bundle = data.prepare(cfg(write(tmp_path, [CHAT, CHAT])), SFT, tok)
    row = bundle.train[0]
    text = tok.decode(row["input_ids"])
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\n<tools>\n{\"type\": \"function\"")
    assert "<|im_start|>user\n<tool_response>\n{\"temp\": 3}\n</tool_response><|im_end|>" in text
    spans, cur = [], []
    for t, lab in zip(row["input_ids"], row["labels"]):
        if lab != IGNORE:
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    # The call is learned in the template's own tool-call format, not as bare JSON (the newline after the header is
    # the generation prompt's); the observation is not learned.
    assert spans == ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>',
                     "3 degrees.<|im_end|>"]


def test_roles_can_be_remapped(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("FTSWEEP_TOKENIZED_CACHE", "0")
    tok.chat_template = QWEN25_STYLE
    rec = {"conversations": [{"from": "human", "value": "hi"}, {"from": "api", "value": json.dumps({"name": "f"})},
                             {"from": "result", "value": "ok"}, {"from": "gpt", "value": "done"}], "tools": TOOLS}
    bundle = data.prepare(cfg(write(tmp_path, [rec, rec]), roles={"api": "tool_call", "result": "tool"}), SFT, tok)
    assert "<tool_response>\nok\n</tool_response>" in tok.decode(bundle.train[0]["input_ids"])


def test_a_template_without_tool_support_is_an_error_not_a_silent_drop(tmp_path, tok, monkeypatch):
    monkeypatch.setenv("FTSWEEP_TOKENIZED_CACHE", "0")
    plain = {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    # The tiny model's template ignores tools; the one record with tools is named, wherever the split put it.
    with pytest.raises(DataError, match="^tools.jsonl: record 2: the chat template does not render the record's tools"):
        data.prepare(cfg(write(tmp_path, [plain, CHAT, plain, plain])), SFT, tok)
    no_tools = dict(CHAT)
    del no_tools["tools"]
    with pytest.raises(ValueError, match="does not render tool calls \\(the call to 'get_weather' is missing\\)"):
        data.prepare(cfg(write(tmp_path, [no_tools, no_tools])), SFT, tok)


@pytest.mark.parametrize("record, message", [
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "robot", "value": "x"}]}, "turn 2 has role 'robot'"),
    (dict(CHAT, tools={"name": "get_weather"}), "field 'tools' is an object, not a list of function schemas"),
    ({"conversations": [{"from": "human", "value": "hi"}, {"from": "function_call", "value": "get_weather(Oslo)"},
                        {"from": "gpt", "value": "x"}]}, "turn 2 is a function call but not JSON"),
])
def test_bad_tool_data_is_one_line_naming_record_and_field(tmp_path, tok, record, message):
    with pytest.raises(DataError) as err:
        data.prepare(cfg(write(tmp_path, [record, record])), SFT, tok)
    assert message in str(err.value) and str(err.value).startswith("tools.jsonl: record 1") and "\n" not in str(err.value)


def test_cli_exits_non_zero_with_one_line_for_a_template_without_tools(cli, tmp_path):
    path = write(tmp_path, [CHAT, CHAT])
    proc = cli(["mode=preview", "data=sharegpt", f"data.path={path}"], env={"FTSWEEP_TOKENIZED_CACHE": "0"})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ftsweep: error:")]
    assert proc.returncode != 0 and len(errors) == 1 and "does not render the record's tools" in errors[0]
