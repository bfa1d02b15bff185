"""Where records come from: the built-in set, local files (JSON, JSONL, CSV, Parquet) or a hub dataset.

Every record keeps its origin (file and 1-based record number) so that a bad
one is reported where a person can find it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ftsweep.data import synthetic


def json_type(value) -> str:
    """A value's type as its JSON file spells it (a number, not Python's int)."""
    for kind, name in ((bool, "a boolean"), (int, "a number"), (float, "a number"), (str, "a string"), (list, "a list"),
                       (dict, "an object")):
        if isinstance(value, kind):
            return name
    return "null" if value is None else f"a {type(value).__name__}"


class DataError(ValueError):
    """Bad data: the message names the file, the record number and the field."""


@dataclass
class Record:
    fields: dict
    origin: str  # "train.jsonl: record 12" (1-based; for JSONL the line number)


SUFFIXES = {".json": "json", ".jsonl": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def source_kind(data_cfg, path: str | None) -> str:
    if data_cfg.source == "synthetic":
        return "synthetic"
    if data_cfg.source not in ("auto", None):
        return str(data_cfg.source)
    suffix = Path(str(path)).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    if not Path(str(path)).exists() and "/" in str(path) and not str(path).startswith((".", "/", "~")):
        return "hub"  # "org/name": a dataset id
    raise DataError(f"{_key(data_cfg, path)}={path}: cannot tell the format from the suffix; use .json, .jsonl, .csv or "
                    ".parquet, or set data.source=json|jsonl|csv|parquet|hub")


def local_file(data_cfg, path: str | None) -> Path | None:
    """The file a local source reads (None for the built-in set or a hub id); DataError if there is none to read.
    Config validation calls it too, so that a wrong path fails before the libraries load, not after."""
    kind = source_kind(data_cfg, path)
    if kind in ("synthetic", "hub"):
        return None
    file = Path(str(path)).expanduser()
    if not file.is_file():
        key = _key(data_cfg, path)
        raise DataError(f"{key}={path}: no such file; point {key} at a JSON, JSONL, CSV or Parquet file")
    return file


def _key(data_cfg, path) -> str:
    """The setting that named ``path``: the held-out or test file's own, or the data's."""
    for key in ("val_path", "test_path"):
        if path is not None and path == data_cfg.get(key) and path != data_cfg.path:
            return f"data.{key}"
    return "data.path"


def read(data_cfg, path: str | None = None, split: str | None = None) -> list[Record]:
    """All records of the source (or of ``path``, e.g. a separate validation file)."""
    path = path if path is not None else data_cfg.path
    kind = source_kind(data_cfg, path)
    if kind == "synthetic":
        recs = synthetic.generate(int(data_cfg.num_records), list(data_cfg.synthetic_tasks))
        return [Record(r, f"synthetic: record {i + 1}") for i, r in enumerate(recs)]
    if kind == "hub":
        return _read_hub(data_cfg, str(path), split or data_cfg.split)
    file = local_file(data_cfg, path)
    name = file.name
    if kind in ("json", "jsonl"):
        text = read_text(file)
        records = _parse_jsonl(text, name) if kind == "jsonl" else _parse_json(text, name)
    elif kind == "csv":
        import io

        import pandas as pd

        frame = pd.read_csv(io.StringIO(read_text(file)), dtype=str, keep_default_na=False)
        records = [Record(row, f"{name}: record {i + 1}") for i, row in enumerate(frame.to_dict("records"))]
    elif kind == "parquet":
        import pandas as pd

        frame = pd.read_parquet(file)
        records = [Record(_plain(row), f"{name}: record {i + 1}") for i, row in enumerate(frame.to_dict("records"))]
    else:
        raise DataError(f"data.source={kind}: unknown source; choose auto, synthetic, json, jsonl, csv, parquet or hub")
    if not records:
        raise DataError(f"{name}: no records; the file is empty")
    return records


_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def read_text(file: Path) -> str:
    """A text file as users save it: UTF-8, with or without the byte-order mark Windows editors write.

    Any other encoding is one error naming it and the fix (a silent guess could mangle every record).
    """
    raw = file.read_bytes()
    if raw.startswith(_UTF16_BOMS) or raw.startswith((b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00")):
        kind = "UTF-32" if raw[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00") else "UTF-16"
        raise DataError(f"{file.name}: the file is {kind} text; re-save it as UTF-8 (e.g. Notepad: Save as, Encoding UTF-8; "
                        f"or iconv -f {kind} -t UTF-8)")
    try:
        return raw.decode("utf-8-sig")  # strips a UTF-8 byte-order mark
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        byte = raw[exc.start]
        raise DataError(f"{file.name}: not UTF-8 text (byte 0x{byte:02x} on line {line}, e.g. latin-1/cp1252 or GBK); "
                        "re-save the file as UTF-8 (e.g. iconv -f cp1252 -t UTF-8)") from None


def _parse_jsonl(text: str, name: str) -> list[Record]:
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{name}: record {lineno} (line {lineno}) is not valid JSON ({exc.msg}); fix or remove that line") from None
        if not isinstance(obj, dict):
            raise DataError(f"{name}: record {lineno} is {json_type(obj)}, not a JSON object")
        out.append(Record(obj, f"{name}: record {lineno}"))
    return out


def _parse_json(text: str, name: str) -> list[Record]:
    if not text.strip():
        return []
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{name}: not valid JSON at line {exc.lineno} ({exc.msg}); a .json file holds one list of records "
                        "(use .jsonl for one record per line)") from None
    if isinstance(obj, dict):  # {"train": [...]} or {"data": [...]}
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{name}: expected a JSON list of records (or an object holding one list)")
        obj = lists[0]
    if not isinstance(obj, list):
        raise DataError(f"{name}: expected a JSON list of records, found {json_type(obj)}")
    out = []
    for i, rec in enumerate(obj, start=1):
        if not isinstance(rec, dict):
            raise DataError(f"{name}: record {i} is {json_type(rec)}, not a JSON object")
        out.append(Record(rec, f"{name}: record {i}"))
    return out


def _read_hub(data_cfg, dataset_id: str, split: str) -> list[Record]:
    from ftsweep import hub

    hub.go_offline_unless_reachable()  # unreachable: the local cache at once, not 30 s of retries
    try:
        from datasets import load_dataset

        ds = load_dataset(dataset_id, data_cfg.get("hub_config"), split=split)
    except Exception as exc:  # noqa: BLE001 - offline, unknown id, unknown split: all the same advice
        if isinstance(exc, ConnectionError) and hub.offline():  # offline: "Couldn't reach ... on the Hub"
            raise DataError(f"data.path={dataset_id}: not in the local datasets cache and {hub.why_offline()}; download "
                            "it first or point data.path at a local file") from None
        raise DataError(f"data.path={dataset_id}: could not load the hub dataset ({type(exc).__name__}); check the id and "
                        "split, or download it and point data.path at a local file") from None
    return [Record(_plain(r), f"{dataset_id}[{split}]: record {i + 1}") for i, r in enumerate(ds)]


def _plain(row: dict) -> dict:
    """Parquet / Arrow rows hold numpy arrays for lists: make them plain Python."""
    out = {}
    for k, v in row.items():
        if hasattr(v, "tolist"):
            v = v.tolist()
        if isinstance(v, list):
            v = [x.tolist() if hasattr(x, "tolist") else (dict(x) if isinstance(x, dict) else x) for x in v]
        out[k] = v
    return out
