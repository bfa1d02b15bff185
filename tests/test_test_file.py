"""data.test_path: a file that no part of the run sees before its end, evaluated once like the held-out set."""

from __future__ import annotations

import csv
import json
import math

import pytest
from conftest import FAST, data_cfg
from omegaconf import OmegaConf

from ftsweep import data
from ftsweep.data.sources import DataError

SFT = OmegaConf.create({"name": "sft", "num_labels": None, "class_weights": None})


def write(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def city_records(n, offset=0):
    cities = ["Oslo", "Bern", "Lima", "Rome", "Kyiv", "Baku", "Doha", "Riga", "Oran", "Nice"]
    return [{"instruction": "Extract the city.", "input": f"name=P{i}; city={cities[i % len(cities)]}",
             "output": cities[i % len(cities)]} for i in range(offset, offset + n)]


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_the_test_file_is_its_own_split_and_comes_back_from_the_cache(tmp_path, tok):
    train, test = write(tmp_path / "train.jsonl", city_records(12)), write(tmp_path / "test.jsonl", city_records(5, 100))
    cfg = data_cfg(train, test_path=str(test), val_size=2)
    first = data.prepare(cfg, SFT, tok)
    again = data.prepare(cfg, SFT, tok)  # the tokenized cache's entry, test/ folder included
    for bundle in (first, again):
        assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (10, 2, 5)
        assert bundle.stats["test_records"] == 5
        assert [p["reference"] for p in bundle.test_prompts] == [r["output"] for r in city_records(5, 100)]
        assert all("name=P1" in p["prompt"] for p in bundle.test_prompts)  # P100..P104: the test file's own records
    assert list(first.test["input_ids"]) == list(again.test["input_ids"])
    # Nothing of the test file is trained on or held out, and the training data's fingerprint does not depend on it.
    train_ids = {tuple(x) for x in first.train["input_ids"]} | {tuple(x) for x in first.val["input_ids"]}
    assert not train_ids & {tuple(x) for x in first.test["input_ids"]}
    assert data.prepare(data_cfg(train, val_size=2), SFT, tok).fingerprint == first.fingerprint
    bare = data.prepare(data_cfg(train, val_size=2), SFT, tok)
    assert bare.test is None and bare.test_fingerprint is None
    assert first.test_fingerprint == again.test_fingerprint and len(first.test_fingerprint) >= 8
    # Another test file is another cache entry, not the first one's test set.
    other = write(tmp_path / "other.jsonl", city_records(3, 200))
    assert len(data.prepare(data_cfg(train, test_path=str(other), val_size=2), SFT, tok).test) == 3


@pytest.mark.parametrize("n, expected", [(None, 3), (2, 2)])
def test_test_examples_that_are_training_examples_too_are_counted(tmp_path, tok, n, expected):
    # File order: records P0-P9 train, P10-P11 are held out. The test file repeats P0-P2 and adds two of its own;
    # data.n=2 trains on P0-P1 only. Those copies make the test loss partly a measure of recall.
    train = write(tmp_path / "train.jsonl", city_records(12))
    test = write(tmp_path / "test.jsonl", city_records(3) + city_records(2, 100))
    bundle = data.prepare(data_cfg(train, test_path=str(test), val_size=2, shuffle=False, n=n), SFT, tok)
    assert bundle.stats["tested_in_train"] == expected and bundle.stats["held_out_in_train"] == 0
    clean = write(tmp_path / "clean.jsonl", city_records(5, 100))
    assert data.prepare(data_cfg(train, test_path=str(clean), val_size=2), SFT, tok).stats["tested_in_train"] == 0


def test_a_test_file_with_nothing_to_learn_is_refused(tmp_path, tok):
    def chat(system, question, answer):
        return {"conversations": [{"from": "system", "value": system}, {"from": "human", "value": question},
                                  {"from": "gpt", "value": answer}]}

    train = write(tmp_path / "train.jsonl", [chat("Be brief.", f"Q{i}?", f"A{i}.") for i in range(6)])
    # A system message is never cut: 400 bytes of it leave no room for the answer's header in 64 tokens.
    test = write(tmp_path / "test.jsonl", [chat("x" * 400, "Q?", "A.")])
    with pytest.raises(DataError) as err:
        data.prepare(data_cfg(train, format="sharegpt", test_path=str(test), max_length=64), SFT, tok)
    assert str(err.value) == (f"data.test_path={test}: no test example has a learnable token after truncation to "
                              "data.max_length=64; raise data.max_length")


def test_a_runs_test_numbers_are_its_held_out_numbers_on_the_test_file(cli, tmp_path):
    """The same file as held-out set and test set gives the same loss and generations; another file, its own."""
    val = write(tmp_path / "val.jsonl", city_records(6, 50))
    other = write(tmp_path / "other.jsonl", city_records(6, 300)[::-1] + city_records(3, 400))
    train = write(tmp_path / "train.jsonl", city_records(60))
    sweep = tmp_path / "sweep"
    proc = cli(["-m", f"data.test_path={val},{other}", "data=alpaca", f"data.path={train}", f"data.val_path={val}",
                *FAST, f"hydra.sweep.dir={sweep}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if (p / "summary.json").exists())
    assert len(runs) == 2
    by_file = {json.loads((r / "manifest.json").read_text())["config"]["data"]["test_path"]: r for r in runs}
    same, own = by_file[str(val)], by_file[str(other)]

    s = json.loads((same / "summary.json").read_text())
    assert s["status"] == "ok"
    assert s["test_loss"] == pytest.approx(s["eval_loss"], rel=1e-6)
    assert s["test_perplexity"] == pytest.approx(math.exp(s["eval_loss"]), rel=1e-6)
    for name, value in s["task_metrics"].items():
        assert s[f"test_{name}"] == pytest.approx(value)
    lines = [(same / f).read_text().splitlines() for f in ("samples.jsonl", "test_samples.jsonl")]
    assert len(lines[0]) == 4 and lines[0] == lines[1]  # eval.num_samples=4 prompts, the same generations

    o = json.loads((own / "summary.json").read_text())
    assert o["test_loss"] != pytest.approx(o["eval_loss"], rel=1e-3)
    refs = [json.loads(x)["reference"] for x in (own / "test_samples.jsonl").read_text().splitlines()]
    assert refs == [r["output"] for r in city_records(6, 300)[::-1][:4]]
    assert f"test_loss {o['test_loss']:.3f}" in proc.stdout + proc.stderr  # the console line after the run
    # Each manifest names its test records apart from the data it trained and chose by.
    manifests = [json.loads((r / "manifest.json").read_text()) for r in (same, own)]
    assert manifests[0]["data_fingerprint"] == manifests[1]["data_fingerprint"]
    assert None not in {m["test_fingerprint"] for m in manifests} and manifests[0]["test_fingerprint"] != manifests[1]["test_fingerprint"]

    # The report shows the test numbers beside the held-out ones.
    from ftsweep.report import build_report

    build_report([sweep])
    with open(sweep / "runs.csv", newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        rows = {row["data.test_path"]: row for row in reader}
    tested = [c for c in reader.fieldnames if c.startswith("test_")]
    assert tested == ["test_loss", "test_perplexity", "test_bleu", "test_exact_match", "test_rougeL"]
    assert "test loss" in (sweep / "report.md").read_text()  # the registry's header
    assert float(rows[str(other)]["test_loss"]) == pytest.approx(o["test_loss"], abs=1e-4)
