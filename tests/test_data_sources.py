"""Files read the way users save them: UTF-8 with or without a byte-order mark; other encodings named."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from ftsweep import data
from ftsweep.data.sources import DataError

RECORDS = [{"instruction": "Say hi.", "input": "", "output": "héllo 你好"}, {"instruction": "Say bye.", "input": "", "output": "bye"}]


def cfg(path):
    return OmegaConf.create(dict(source="auto", path=str(path), split="train", hub_config=None))


def encoded(suffix: str) -> str:
    if suffix == "json":
        return json.dumps(RECORDS, ensure_ascii=False, indent=1).replace("\n", "\r\n")
    if suffix == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\r\n" for r in RECORDS)
    return "instruction,input,output\r\n" + "".join(f"{r['instruction']},,{r['output']}\r\n" for r in RECORDS)


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv"])
def test_a_utf8_byte_order_mark_and_crlf_are_accepted(tmp_path, suffix):
    path = tmp_path / f"d.{suffix}"
    path.write_bytes(b"\xef\xbb\xbf" + encoded(suffix).encode("utf-8"))
    assert data.read_records(cfg(path)) == RECORDS


@pytest.mark.parametrize("suffix", ["json", "jsonl", "csv"])
@pytest.mark.parametrize("encoding, named", [("utf-16", "the file is UTF-16 text; re-save it as UTF-8"),
                                             ("latin-1", "not UTF-8 text (byte 0xe9 on line"),
                                             ("gbk", "not UTF-8 text (byte 0x")])
def test_other_encodings_get_one_line_naming_the_problem(tmp_path, suffix, encoding, named):
    path = tmp_path / f"d.{suffix}"
    text = encoded(suffix)
    if encoding == "latin-1":
        text = text.replace("你好", "")
    if encoding == "gbk":
        text = text.replace("é", "e")
    path.write_bytes(text.encode(encoding))
    with pytest.raises(DataError) as err:
        data.read_records(cfg(path))
    message = str(err.value)
    assert message.startswith(f"d.{suffix}: ") and named in message and "re-save" in message and "\n" not in message


def test_a_latin1_file_fails_the_run_with_one_line(cli, tmp_path):
    path = tmp_path / "train.json"
    path.write_bytes(json.dumps([{"instruction": "café", "input": "", "output": "ok"}] * 4, ensure_ascii=False).encode("latin-1"))
    proc = cli(["mode=preview", "data=alpaca", f"data.path={path}"])
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ftsweep: error:")]
    assert len(lines) == 1 and "train.json: not UTF-8 text (byte 0xe9 on line 1" in lines[0] and "re-save" in lines[0]
