"""What the sweep callback learned at the end of a multirun, for the CLI's exit code."""

from __future__ import annotations

_FAILED: list[tuple[str, str]] = []
_SWEEP = [False]


def record_failed(runs: list[tuple[str, str]], sweep: bool = False) -> None:
    _FAILED[:] = runs
    _SWEEP[0] = sweep


def was_sweep() -> bool:
    return _SWEEP[0]


def failed_runs() -> list[tuple[str, str]]:
    return list(_FAILED)
