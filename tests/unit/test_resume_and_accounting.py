"""What a re-run of a cell does (skip / resume / fresh) and how tokens are counted and restored.

These are the decisions a user meets when re-running a sweep: a changed config must never be
skipped or resumed from the old one's checkpoint, and a resumed run must go on counting tokens
where it stopped, counting only real (non-pad) tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import lane  # noqa: F401 - the lane's preloaded imports
from ftsweep import accounting, artifacts, resume

CKPT = Path("checkpoints/checkpoint-6")
OK = {"status": "ok", "config_hash": "abc"}


@pytest.mark.parametrize("previous, skip_finished, checkpoint, expected", [
    # Same config, finished ok: skipped when asked, else resumed from its checkpoint or started again.
    (OK, True, None, resume.Start(resume.SKIP)),
    (OK, True, CKPT, resume.Start(resume.SKIP)),
    (OK, False, CKPT, resume.Start(resume.RESUME, CKPT)),
    (OK, False, None, resume.Start(resume.FRESH)),
    # Same config, not finished: a checkpoint is resumed even with skip_finished; none means fresh.
    ({"status": "failed", "config_hash": "abc"}, True, CKPT, resume.Start(resume.RESUME, CKPT)),
    ({"status": "interrupted", "config_hash": "abc"}, True, None, resume.Start(resume.FRESH)),
    ({"status": "running", "config_hash": "abc"}, True, CKPT, resume.Start(resume.RESUME, CKPT)),
    # A changed config: never skipped, never resumed, and the old checkpoints are discarded.
    ({"status": "ok", "config_hash": "old"}, True, CKPT, resume.Start(resume.FRESH, discard_checkpoints=True)),
    ({"status": "ok", "config_hash": "old"}, True, None, resume.Start(resume.FRESH, discard_checkpoints=True)),
    ({"status": "ok"}, True, CKPT, resume.Start(resume.FRESH, discard_checkpoints=True)),  # no hash recorded
    # Nothing ran here before: start from step 0, nothing to discard.
    (None, True, None, resume.Start(resume.FRESH)),
    (None, True, CKPT, resume.Start(resume.FRESH)),
])
def test_decide(previous, skip_finished, checkpoint, expected):
    assert resume.decide(previous, "abc", skip_finished, checkpoint) == expected


@pytest.mark.parametrize("recorded, now, expected", [
    ("d1", "d1", resume.Start(resume.SKIP)),
    # data.path's file edited since the run: trained again, its checkpoints discarded. Before, the old results stood.
    ("d1", "d2", resume.Start(resume.FRESH, discard_checkpoints=True)),
    (None, "d2", resume.Start(resume.SKIP)),  # a summary from before data hashes were recorded
    ("d1", None, resume.Start(resume.SKIP)),  # a data config whose files cannot be hashed: the run says why
])
def test_changed_data_files_make_another_run(recorded, now, expected):
    previous = dict(OK, data_hash=recorded) if recorded else dict(OK)
    assert resume.decide(previous, "abc", True, CKPT, now) == expected


def test_start_defaults_keep_checkpoints():
    start = resume.Start(resume.FRESH)
    assert start.checkpoint is None and start.discard_checkpoints is False
    assert (resume.SKIP, resume.RESUME, resume.FRESH) == ("skip", "resume", "fresh")


def test_token_counts_come_from_the_last_train_line():
    metrics = [
        {"split": "eval", "step": 0, "eval_loss": 3.0},
        {"split": "train", "step": 2, "tokens_seen": 100, "padding_efficiency": 0.5},
        {"split": "train", "step": 4, "tokens_seen": 300, "padding_efficiency": 0.75},
        {"split": "eval", "step": 4, "eval_loss": 2.0, "tokens_seen": 999},
    ]
    assert resume.token_counts(metrics) == (300, 400)


def test_token_counts_without_train_lines_or_efficiency():
    assert resume.token_counts([]) is None
    assert resume.token_counts([{"split": "eval", "step": 0, "eval_loss": 1.0}]) is None
    # A line without padding_efficiency (packed: nothing was padding) fed exactly what it saw.
    assert resume.token_counts([{"split": "train", "step": 2, "tokens_seen": 120}]) == (120, 120)
    assert resume.token_counts([{"split": "train", "step": 2, "tokens_seen": None, "padding_efficiency": None}]) == (0, 0)


def test_restored_total_rounds_to_the_nearest_token():
    # 0.3333 is what metrics.jsonl keeps of 1/3 (4 digits): 100 / 0.3333 = 300.03 -> 300.
    assert accounting.restored_total(100, 0.3333) == 300
    assert accounting.restored_total(299, 0.6667) == 448  # 448.478...
    assert accounting.restored_total(50, None) == 50
    assert accounting.restored_total(50, 0.0) == 50


def test_baseline_is_the_eval_line_at_step_zero():
    metrics = [{"split": "train", "step": 0, "loss": 9.0}, {"split": "eval", "step": 3, "eval_loss": 2.5},
               {"split": "eval", "step": 0, "eval_loss": 3.25}, {"split": "eval", "step": 0, "eval_loss": 7.0}]
    assert resume.baseline(metrics) == 3.25
    assert resume.baseline(metrics[:2]) is None
    assert resume.baseline([]) is None


def test_the_evaluated_steps_are_those_of_the_eval_lines():
    """A resumed run evaluates first at its checkpoint's step only when the record has no evaluation there."""
    metrics = [{"split": "eval", "step": 0, "eval_loss": 5.5}, {"split": "train", "step": 2, "loss": 5.4},
               {"split": "eval", "step": 2, "eval_loss": 5.3}, {"split": "train", "step": 4, "loss": 5.2}]
    assert resume.evaluated_steps(metrics) == {0, 2}
    assert resume.evaluated_steps([]) == set()


def test_padded_batch_counts_only_real_tokens():
    """Two examples of 3 and 5 tokens padded to 5: 8 real tokens of 10 positions fed."""
    import torch

    from ftsweep.data.tokenize import Collator

    batch = Collator(pad_token_id=0)([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]},
                                      {"input_ids": [1, 2, 3, 4, 5], "labels": [1, 2, 3, 4, 5]}])
    assert accounting.batch_tokens(batch) == (8, 10)
    packed = {"input_ids": torch.ones(1, 8, dtype=torch.long), "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4]])}
    assert accounting.batch_tokens(packed) == (8, 8)
    assert all(type(n) is int for n in accounting.batch_tokens(batch))


def test_padding_efficiency():
    assert accounting.padding_efficiency(8, 10) == 0.8
    assert accounting.padding_efficiency(0, 0) is None
    assert accounting.padding_efficiency(10, 10) == 1.0


def test_checkpoint_step_and_last_complete_checkpoint(tmp_path):
    assert artifacts.checkpoint_step(Path("checkpoints/checkpoint-40")) == 40
    assert artifacts.checkpoint_step(None) is None
    assert artifacts.last_checkpoint(tmp_path) is None
    for step, complete in ((3, True), (12, True), (20, False), (9, True)):
        ckpt = tmp_path / artifacts.CHECKPOINTS / f"checkpoint-{step}"
        ckpt.mkdir(parents=True)
        if complete:
            (ckpt / artifacts.TRAINER_STATE).write_text("{}")
    # checkpoint-20 has no trainer_state.json (cut by a kill): the newest complete one is 12, not 9 (numeric order).
    assert artifacts.last_checkpoint(tmp_path).name == "checkpoint-12"


def test_the_mean_train_loss_weighs_each_line_by_the_steps_it_averages():
    lines = [{"split": "eval", "step": 0, "eval_loss": 9.0}, {"split": "train", "step": 5, "loss": 4.0},
             {"split": "train", "step": 2, "loss": 5.0}]  # any order in the file
    assert accounting.mean_train_loss(lines) == pytest.approx((2 * 5.0 + 3 * 4.0) / 5)  # 4.4, not the lines' mean 4.5
    assert accounting.mean_train_loss([{"split": "eval", "step": 0, "eval_loss": 9.0}]) is None


def test_a_resumed_clock_goes_on_from_the_last_kept_line():
    kept = [{"split": "eval", "step": 0, "time": 0.4}, {"split": "train", "step": 3, "time": 2.5},
            {"split": "eval", "step": 4, "time": 3.1}, {"split": "train", "step": 4, "time": 3.0}]
    assert resume.elapsed(kept) == 3.1
    assert resume.elapsed([]) == 0.0
