"""Every command the docs show parses as written and passes the checks a run makes first; every fix an error
message suggests parses.

Collected: each `python -m ftsweep ...` line in README.md, docs/*.md and the conf/ files' comments, and
each `key=value` an error message in ftsweep/ tells the user to type ("use quant=none", "set
data.on_bad_record=skip", "data.columns.output=NAME"). Each runs through the real CLI with `--cfg job`
(composition and override parsing, nothing loads); a sweep (-m) is checked through its first cell, and a
data file it names is replaced by a tiny temporary one.
"""

from __future__ import annotations

import json
import re
import shlex
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), *sorted((REPO / "conf").rglob("*.yaml"))]
ROOT_KEYS = ("model", "quant", "lora", "data", "task", "optim", "logger", "eval", "train", "plan", "preview", "mode", "seed",
             "project", "experiment", "hparams_search", "hydra", "skip_finished")
# Commands the docs show failing on purpose (README's "When things go wrong"), with the line they document.
DOCUMENTED_FAILURES = {"python -m ftsweep lora.rr=8": "unknown config key 'lora.rr'",
                       "python -m ftsweep data=alpaca": "data=alpaca reads a file: set data.path=...",
                       "python -m ftsweep data.path=train.jsonl": "data=synthetic makes its own records and reads no file"}


def documented_commands() -> dict[str, list[str]]:
    """{command text: [files that show it]} for `python -m ftsweep` (the main entry, not its submodules)."""
    found: dict[str, list[str]] = {}
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        for n, line in enumerate(lines):
            for m in re.finditer(r"python -m ftsweep(?=[\s`\"]|$)", line):
                text = line[m.start():]
                while text.rstrip().endswith("\\") and n + 1 < len(lines):  # shell line continuations
                    n += 1
                    text = text.rstrip()[:-1] + " " + lines[n].strip()
                quote = line[m.start() - 1] if m.start() else ""
                for end in ("`", '"' if quote == '"' else None, " && ", " | "):
                    if end and end in text:
                        text = text[: text.index(end)]
                text = re.sub(r"\s+#.*$", "", text.strip())  # trailing shell comments
                found.setdefault(text, []).append(doc.relative_to(REPO).as_posix())
    return found


def suggested_overrides() -> dict[str, str]:
    """{override: source file} for each key=value that an error message in ftsweep/ tells the user to type."""
    verbs = r"(?:use|set|e\.g\.|with|try|or|choose|add|map another column with)"
    pattern = re.compile(verbs + r"\s+`?(\+{0,2}[a-z_]+(?:[./][a-z_0-9{}\[\]]+)*=[^\s`,;)'\"]+)")
    found = {}
    for source in sorted((REPO / "ftsweep").rglob("*.py")):
        for m in pattern.finditer(source.read_text(encoding="utf-8")):
            override = m[1].replace("{key}", "output").replace("NAME", "response")
            key, value = override.lstrip("+").split("=", 1)
            if key.split(".")[0] not in ROOT_KEYS or "{" in override or value == "...":
                continue
            found.setdefault(override.replace(value, value.split("|")[0]), source.relative_to(REPO).as_posix())
    return found


def first_cell(args: list[str]) -> list[str]:
    """A sweep's overrides reduced to its first cell (--cfg cannot be combined with -m)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import Glob

    out = []
    for arg in args:
        if arg in ("-m", "--multirun") or arg.startswith("-"):
            continue
        [override] = OverridesParser.create().parse_overrides([arg])
        if override.is_sweep_override():
            if isinstance(override.value(), Glob):
                options = sorted(p.stem for p in (REPO / "conf" / override.key_or_group).glob("*.yaml"))
                value = override.value().filter(options)[0]
            else:
                value = next(iter(override.sweep_string_iterator()))
            arg = f"{override.get_key_element()}={value}"
        out.append(arg)
    return out


def data_file(tmp_path: Path, name: str) -> str:
    """A tiny file standing in for a data file a command names (same suffix, alpaca records)."""
    path = tmp_path / ("data-" + Path(name).name)
    records = [{"instruction": f"Say {i}.", "input": "", "output": str(i)} for i in range(4)]
    if path.suffix == ".csv":
        path.write_text("instruction,input,output\n" + "".join(f"Say {i}.,,{i}\n" for i in range(4)), encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    else:
        path.write_text(json.dumps(records), encoding="utf-8")
    return str(path)


def as_cfg_job(command: str, tmp_path: Path) -> list[str]:
    args = shlex.split(command)[3:]  # after "python -m ftsweep"
    if any(a in ("--help", "-h", "--cfg", "--info") for a in args):
        return args  # already a command that composes without running
    if "-m" in args or "--multirun" in args:
        args = first_cell(args)
    args = [a for a in args if not a.endswith("=...")]  # a placeholder the reader fills in ("data=...")
    args = [re.sub(r"^(data\.(?:val_)?path)=([\"']?)(.+\.(?:json|jsonl|csv))\2$",
                   lambda m: f"{m[1]}={m[2]}{data_file(tmp_path, m[3])}{m[2]}", a)  # quoted as written
            for a in args]
    return [*args, "--cfg", "job"]


def run_all(commands: list[list[str]], tmp_path: Path):
    with ThreadPoolExecutor(max_workers=4) as pool:  # --cfg job imports no torch: light processes
        return list(pool.map(lambda args: run_cli(args, cwd=tmp_path, timeout=120), commands))


def test_the_collection_finds_what_the_readme_shows():
    commands = documented_commands()
    readme = [c for c, files in commands.items() if "README.md" in files]
    assert len(readme) >= 15
    assert "python -m ftsweep data=sharegpt data.path=chats.jsonl 'data.roles={human: user, gpt: assistant}'" in readme
    assert "python -m ftsweep data=alpaca data.path=train.csv 'data.columns={instruction: prompt, output: response}'" in readme
    assert "data.columns.output=response" in suggested_overrides()


def test_every_documented_command_parses(tmp_path):
    commands = documented_commands()
    argv = [as_cfg_job(c, tmp_path) for c in commands]
    failures = []
    for command, args, proc in zip(commands, argv, run_all(argv, tmp_path)):
        expected = DOCUMENTED_FAILURES.get(command)
        if expected:
            said = proc.stderr if proc.returncode else refused(proc.stdout, tmp_path) or ""
            if expected not in said:
                failures.append(f"{command}: documented to fail with {expected!r}, got {said[-300:]!r}")
        elif proc.returncode != 0:
            error = (proc.stderr.strip().splitlines() or ["?"])[-1]
            failures.append(f"{command} ({', '.join(commands[command])}): {error}")
        elif not set(shlex.split(command)) & {"--help", "-h", "--cfg", "--info"} and (problems := refused(proc.stdout, tmp_path)):
            failures.append(f"{command} ({', '.join(commands[command])}): {problems}")
    assert not failures, "\n".join(failures)


def refused(composed: str, cwd: Path) -> str | None:
    """What validation (the checks a run makes before it loads anything) says of a composed config, device rules
    left out; None when it passes."""
    import os

    from omegaconf import OmegaConf

    from ftsweep.config import ConfigError, validate

    here = os.getcwd()
    os.chdir(cwd)  # relative data paths are the run's working directory's
    try:
        validate(OmegaConf.create(composed))
    except ConfigError as exc:
        return str(exc).replace("\n", "; ")
    finally:
        os.chdir(here)
    return None


def test_every_fix_an_error_message_suggests_parses(tmp_path):
    suggestions = suggested_overrides()
    assert len(suggestions) >= 10
    base = ["data=alpaca", f"data.path={data_file(tmp_path, 'train.json')}"]
    argv = [[*base, override, "--cfg", "job"] for override in suggestions]
    failures = [f"{o} (suggested in {suggestions[o]}): {(p.stderr.strip().splitlines() or ['?'])[-1]}"
                for o, p in zip(suggestions, run_all(argv, tmp_path)) if p.returncode != 0]
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("override, key, expected", [
    ("data.roles={human: user, gpt: assistant}", "roles", {"human": "user", "gpt": "assistant"}),
    ("data.columns={instruction: prompt, output: response}", "columns", {"instruction": "prompt", "output": "response"}),
    ("data.columns.output=response", "columns", {"output": "response"}),
    ("data.roles.human=user", "roles", {"human": "user"}),
])
def test_dict_overrides_take_effect_without_a_plus(tmp_path, override, key, expected):
    import yaml

    proc = run_cli(["data=sharegpt", "data.path=chats.jsonl", override, "--cfg", "job"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["data"][key] == expected
