"""Tokenize once per sweep: tokenized datasets on disk, keyed by everything that shapes them.

    key = sha256(source content, tokenizer identity, template, max_length, task, format and split knobs)

Runs 2..N of a sweep (and every data.n of a data-size sweep, which cuts its
subset from the same parent) load the parent instead of reading, rendering and
tokenizing again, and say so in their log. Entries live under
$FTSWEEP_HOME/tokenized/<key> (FTSWEEP_TOKENIZED_CACHE=0 turns the cache off)
and are written to a temporary directory first, then renamed, so a killed run
never leaves half an entry.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable

from ftsweep import artifacts
from ftsweep.artifacts import CACHE_META, CACHE_TEST, CACHE_TRAIN, CACHE_VAL
from ftsweep.data.sources import DataError, source_kind

log = logging.getLogger("ftsweep")

# Data knobs that change what the parent holds (data.n does not: subsets are cut after loading).
DATA_KEYS = ("format", "columns", "roles", "system", "instruction_as_system", "template", "custom_template", "max_length",
             "train_on_prompt", "shuffle", "shuffle_seed", "val_size", "on_bad_record", "source", "hub_config", "split",
             "num_records", "synthetic_tasks")
VERSION = 9  # bump when the tokenized layout changes (2: structure-keeping truncation and its counts; 3: tools; 4: test;
#             5: held-out examples that are also training examples; 6: held-out answers scored alone under train_on_prompt;
#             7: the held-out examples' fingerprint as scored; 8: the first skipped records' reasons;
#             9: which held-out examples data.max_length cut, for mode=preview)
SPLITS = {"train": CACHE_TRAIN, "val": CACHE_VAL, "test": CACHE_TEST}  # parent key -> folder in a cache entry


def _file_hash(path) -> str:
    file = Path(str(path)).expanduser().resolve()
    stat = file.stat()
    return _content_hash(str(file), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)


@functools.lru_cache(maxsize=32)
def _content_hash(file: str, *stat: int) -> str:
    """Read once per process while the file is unchanged: every cell of a sweep asks twice (its data hash, its
    cache key), and a data file can be gigabytes."""
    h = hashlib.sha256()
    with open(file, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_identity(data_cfg, path) -> str | None:
    if path is None:
        return None
    kind = source_kind(data_cfg, path)
    if kind == "synthetic":  # its knobs are in DATA_KEYS; the generator's version says which records they make
        from ftsweep.data import synthetic

        return f"synthetic:v{synthetic.VERSION}"
    if kind == "hub":
        return f"hub:{path}"  # the id (revision changes are not seen)
    return _file_hash(path) if Path(str(path)).expanduser().is_file() else f"missing:{path}"


def tokenizer_identity(tokenizer) -> dict:
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return {"class": type(tokenizer).__name__, "vocab": hashlib.sha256(vocab.encode()).hexdigest()[:16],
            "chat_template": hashlib.sha256(str(tokenizer.chat_template).encode()).hexdigest()[:16],
            "special": [tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token]}


def cache_key(data_cfg, task_cfg, tokenizer, template) -> str:
    from omegaconf import OmegaConf

    data = OmegaConf.to_container(data_cfg, resolve=True) if OmegaConf.is_config(data_cfg) else dict(data_cfg)
    parts = {
        "version": VERSION,
        "files": data_identity(data_cfg),
        "data": {k: data.get(k) for k in DATA_KEYS},
        "task": {"name": task_cfg.name, "num_labels": task_cfg.get("num_labels")},
        "tokenizer": tokenizer_identity(tokenizer),
        "template": template if isinstance(template, (str, type(None))) else repr(template),
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def data_identity(data_cfg) -> str | None:
    """What the run's data files hold, in one hash (synthetic data: its generator's version; a hub dataset: its id):
    part of the tokenized cache's key, and summary.json's data_hash, so that a re-run whose data changed is another
    run whatever the config says. None when the data config cannot name its files (the run then fails on it, with
    its own message)."""
    try:
        parts = [_source_identity(data_cfg, data_cfg.path if data_cfg.source != "synthetic" else "synthetic"),
                 _source_identity(data_cfg, data_cfg.val_path) if data_cfg.get("val_path") else None,
                 _source_identity(data_cfg, data_cfg.test_path) if data_cfg.get("test_path") else None]
    except (DataError, OSError):
        return None
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:12]


def cache_root() -> Path:
    from ftsweep.models import cache_home

    return cache_home() / artifacts.TOKENIZED


def tokenized(data_cfg, task_cfg, tokenizer, template, build: Callable[[], dict]) -> dict:
    """The tokenized parent: loaded from the cache, or built by `build()` and stored."""
    from datasets import Dataset, load_from_disk

    key = cache_key(data_cfg, task_cfg, tokenizer, template)
    entry = cache_root() / key
    enabled = os.environ.get("FTSWEEP_TOKENIZED_CACHE", "1") != "0"
    if enabled and (entry / CACHE_META).exists():
        meta = json.loads((entry / CACHE_META).read_text(encoding="utf-8"))
        log.info("tokenized data: cache hit %s", key)
        return dict(meta, **{split: load_from_disk(str(entry / folder)) for split, folder in SPLITS.items()
                             if (entry / folder).exists()})
    log.info("tokenized data: cache miss %s, tokenizing", key)
    parent = build()
    for split in SPLITS:
        rows = parent.pop(split, [])
        if rows or split != "test":  # no test file, no test split
            parent[split] = Dataset.from_list(rows)
    if enabled:
        _store(entry, parent)
    return parent


def _store(entry: Path, parent: dict) -> None:
    # Built beside the entry and renamed: another run may have stored the same entry meanwhile, either is fine.
    try:
        with artifacts.atomic_dir(entry) as tmp:
            for split, folder in SPLITS.items():
                if split in parent:
                    parent[split].save_to_disk(str(tmp / folder))
            meta = {k: v for k, v in parent.items() if k not in SPLITS}
            (tmp / CACHE_META).write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    except OSError:
        pass  # a cache that cannot be written only costs time
