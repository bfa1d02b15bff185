"""What the sweep callback learned at the end of a multirun, for the CLI's exit code."""

from __future__ import annotations

_FAILED: list[tuple[str, str]] = []


def record_failed(runs: list[tuple[str, str]]) -> None:
    _FAILED[:] = runs


def failed_runs() -> list[tuple[str, str]]:
    return list(_FAILED)
