"""Which steps the training loop evaluates after (EvalCallback.due): the points of every eval curve."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ftsweep.training import EvalCallback


def due_steps(every: int, max_steps: int, per_epoch: bool = False, steps_per_epoch: int | None = None) -> list[int]:
    callback = EvalCallback(every, evaluate=lambda final=False: {}, per_epoch=per_epoch)
    steps = []
    for step in range(1, max_steps + 1):
        epoch = step / steps_per_epoch if steps_per_epoch else None
        if callback.due(SimpleNamespace(global_step=step, max_steps=max_steps, epoch=epoch)):
            steps.append(step)
    return steps


@pytest.mark.parametrize("every, max_steps, steps", [
    (2, 5, [2, 4]),       # the step before the last is due; the last is the final evaluation's
    (2, 6, [2, 4]),       # 6 is the last step: evaluated once, by the final evaluation
    (10, 125, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120]),  # the default run's schedule
    (0, 8, []),           # eval.every_n_steps=0: baseline and final only
])
def test_every_n_steps_evaluates_after_each_multiple_before_the_last_step(every, max_steps, steps):
    assert due_steps(every, max_steps) == steps


def test_per_epoch_evaluates_at_each_epochs_last_step_but_the_runs_last():
    # 3 epochs of 4 steps: after steps 4 and 8; 12 is the final evaluation
    assert due_steps(0, 12, per_epoch=True, steps_per_epoch=4) == [4, 8]
    # both schedules: their union, each step once
    assert due_steps(3, 12, per_epoch=True, steps_per_epoch=4) == [3, 4, 6, 8, 9]
