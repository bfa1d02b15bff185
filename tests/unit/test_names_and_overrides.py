"""Run directory names and the override parser: what a user sees as folder names and report factors."""

from __future__ import annotations

import pytest

from ftsweep import overrides as ovr
from ftsweep.artifacts import run_name


@pytest.mark.parametrize("text, key, value", [
    ("lora.r=8", "lora.r", "8"),
    ("+data.columns.x=y", "data.columns.x", "y"),
    ("++seed=3", "seed", "3"),
    ("~lora.extra", "lora.extra", "(deleted)"),
    ("~seed=3", "seed", "3"),
    ("optim.lr=1e-4", "optim.lr", "1e-4"),
    ("hydra/launcher=ray", "hydra/launcher", "ray"),
    ("data.system='be brief'", "data.system", "be brief"),
    ('data.system="x"', "data.system", "x"),
    ("lora.r=8,16", "lora.r", "8,16"),
    ("data.system=''", "data.system", ""),
])
def test_key_and_value_as_typed(text, key, value):
    assert ovr.key(text) == key
    assert ovr.value(text) == value
    assert ovr.split(text) == (key, value)


def test_value_keeps_inner_quotes_and_single_characters():
    assert ovr.value("x='a,b'") == "a,b"
    assert ovr.value("x=a") == "a"


def test_parse_rejects_what_hydra_rejects():
    with pytest.raises(Exception):
        ovr.parse("lora.r=[1,")


@pytest.mark.parametrize("name, keys, under", [
    ("logger.mode", ["logger"], True),
    ("logger", ["logger"], True),
    ("loggers", ["logger"], False),
    ("hydra/launcher", ["hydra"], True),
    ("lora.r", ["logger", "train.progress"], False),
    ("train.progress", ["logger", "train.progress"], True),
    ("train.progress_bar", ["train.progress"], False),
    ("train", ["train.progress"], False),
])
def test_is_under(name, keys, under):
    assert ovr.is_under(name, keys) is under


def test_run_name_sorts_and_drops_neutral_keys():
    assert run_name(["optim.lr=1e-4", "lora.r=8"]) == "lora.r=8,optim.lr=1e-4"
    # Keys that do not change the result never name a directory: logger, progress, mode, hydra's own.
    assert run_name(["lora.r=8", "logger=none", "train.progress=false", "mode=train", "hydra.run.dir=x",
                     "hydra/launcher=ray", "skip_finished=false"]) == "lora.r=8"
    assert run_name([]) == "default"
    assert run_name(["logger=none"]) == "default"


def test_run_name_in_a_sweep_keeps_only_the_swept_keys():
    cell = ["optim.max_steps=50", "lora.r=16", "optim.lr=3e-4", "logger=none"]
    assert run_name(cell, ["lora.r"]) == "lora.r=16"
    assert run_name(cell, ["lora.r", "optim.lr"]) == "lora.r=16,optim.lr=3e-4"
    # A swept key that is result-neutral still names the cell: it is what tells the cells apart.
    assert run_name(["logger=none", "lora.r=8"], ["logger"]) == "logger=none"
    assert run_name(["hydra.job.x=1", "lora.r=8"], ["hydra.job.x", "lora.r"]) == "lora.r=8"
    assert run_name(cell, []) == run_name(cell)  # an empty sweep list: every non-neutral override


def test_run_name_is_filesystem_safe():
    assert run_name(["data.path=/data/my file.json"]) == "data.path=_data_my_file.json-34f62b3000"
    assert run_name(["lora.target_modules=[q_proj,v_proj]"]) == "lora.target_modules=q+v_proj"
    assert run_name(["data.system='a;b'"]) == "data.system=a_b-9633054b73"  # Hydra's quotes are not the value's
    assert run_name(["+x.y@z=1-2"]) == "+x.y@z=1-2"


def test_values_that_read_alike_once_made_safe_still_name_their_own_directories():
    # Before, both Chinese file names became data.path=___.json_: the second cell trained into the first one's
    # directory, its results replaced the first's and the report showed one run "in 1 configuration".
    assert [run_name([f'data.path="{n}.json"']) for n in ("古诗", "宋词")] == ["data.path=古诗.json", "data.path=宋词.json"]
    assert run_name(["data.path=a/b.json"]) != run_name(["data.path=a_b.json"]) == "data.path=a_b.json"
    assert run_name(["data.system='a b'"]) != run_name(["data.system=a_b"])


def test_long_run_names_keep_a_hash_so_cells_never_collide():
    a = run_name([f"data.path={'a' * 200}"])
    b = run_name([f"data.path={'a' * 199}b"])
    assert a != b and len(a) == len(b) == 111
    assert a.startswith("data.path=" + "a" * 90) and a[100] == "-"
    exact = "data.path=" + "a" * 110  # 120 characters: kept whole
    assert run_name([exact]) == exact
    assert len(run_name(["data.path=" + "a" * 111])) == 111


def test_only_whole_quotes_are_removed():
    assert ovr.value("x=XabX") == "XabX"
    assert ovr.value("x='ab'") == "ab" and ovr.value('x="ab"') == "ab"



@pytest.mark.parametrize("word, typed", [
    ("lora.r=4,8,16", "lora.r=4,8,16"),
    ("data.system='Be brief, please.'", "\"data.system='Be brief, please.'\""),
    ("data.system='XL: one line'", "\"data.system='XL: one line'\""),
    ("lora.target_modules=[q_proj,v_proj]", "'lora.target_modules=[q_proj,v_proj]'"),
    ("data.path=my data.jsonl", "'data.path=my data.jsonl'"),
    ("data.system='$HOME'", "'data.system='\"'\"'$HOME'\"'\"''"),
])
def test_a_shell_word_is_typed_as_a_person_would_and_the_shell_gives_it_back(word, typed):
    import shlex

    assert ovr.shell_word(word) == typed
    assert shlex.split(typed) == [word]


def test_a_command_keeps_launcher_choices_and_drops_where_it_wrote():
    hydra = ["hydra/launcher=ray", "hydra.sweep.dir=multirun/x", "hydra.run.dir=out", "hydra.mode=MULTIRUN"]
    assert ovr.command(["lora.r=8,16", "data.system='a, b'"], hydra=hydra, multirun=True) == (
        "python -m ftsweep -m hydra/launcher=ray lora.r=8,16 \"data.system='a, b'\"")
    assert ovr.command(["lora.r=8"]) == "python -m ftsweep lora.r=8"
    assert ovr.command([]) == "python -m ftsweep"


def test_a_resume_command_names_the_directory_it_goes_on_in():
    assert ovr.resume_at("python -m ftsweep -m lora.r=8,16", "/w/multirun/a b", multirun=True) == (
        "python -m ftsweep -m lora.r=8,16 'hydra.sweep.dir=/w/multirun/a b'")
    assert ovr.resume_at("python -m ftsweep", "/w/outputs/2026-11-24/07-08-15", multirun=False) == (
        "python -m ftsweep hydra.run.dir=/w/outputs/2026-11-24/07-08-15")


def _sweep_with(tmp_path, statuses: dict[str, str]):
    from ftsweep import artifacts

    sweep = tmp_path / "multirun" / "sw"
    sweep.mkdir(parents=True)
    artifacts.write_sweep(sweep, {"id": "multirun_sw", "command": "python -m ftsweep -m lora.r=8,16",
                                  "overrides": ["lora.r=8,16"], "grid": {"lora.r": ["8", "16"]}, "swept": ["lora.r"],
                                  "started_at": "2026-11-24T09:00:00Z", "finished_at": None, "counts": None,
                                  "failed_runs": [], "previous_invocations": []})
    for cell, status in statuses.items():
        (sweep / cell).mkdir()
        artifacts.write_summary(sweep / cell, {"status": status, "run_name": cell, "finished_at": "2026-11-24T09:01:00Z"})
    return sweep


@pytest.mark.parametrize("statuses, says", [
    ({"lora.r=8": "ok", "lora.r=16": "ok"},
     "stopped by SIGTERM; every cell had run; the report was not written; write it with: python -m ftsweep.report {dir}"),
    ({"lora.r=8": "ok", "lora.r=16": "failed"},
     "stopped by SIGTERM; every cell had run; the report was not written; write it with: python -m ftsweep.report {dir}"),
    ({"lora.r=8": "ok"},
     "stopped by SIGTERM; no further cell was started; not yet run: lora.r=16; "
     "resume with: python -m ftsweep -m lora.r=8,16 hydra.sweep.dir={dir}"),
    ({"lora.r=8": "ok", "lora.r=16": "interrupted"},
     "stopped by SIGTERM; no further cell was started; not yet run: none; "
     "resume with: python -m ftsweep -m lora.r=8,16 hydra.sweep.dir={dir}"),
])
def test_a_stop_outside_a_run_names_what_is_left_to_do(tmp_path, monkeypatch, statuses, says):
    """Stopped while the report was written, every cell done: the line says how to write the report (the resume
    command would only skip every cell first); otherwise the cells not yet run and the command that resumes."""
    from ftsweep import cli
    from ftsweep.sweep import callbacks

    sweep = _sweep_with(tmp_path, statuses)
    monkeypatch.setattr(callbacks, "_running", sweep)
    assert cli._interrupted_message(143) == says.format(dir=sweep)


@pytest.mark.parametrize("signum, code, name", [(2, 130, "Ctrl-C"), (15, 143, "SIGTERM"), (12, 140, "SIGUSR2")])
def test_a_stop_signal_gives_128_plus_its_number_and_its_name(signum, code, name):
    from ftsweep import cli, runtime

    stop = runtime.interrupt(signum)
    assert isinstance(stop, KeyboardInterrupt) and str(stop) == ("" if signum == 2 else f"signal {signum}")
    assert runtime.exit_code(str(stop)) == code
    assert cli._signal_name(code) == name
