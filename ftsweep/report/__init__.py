"""Ablation reports from sweep and run directories.

    python -m ftsweep.report multirun/2026-11-22/14-03-11            # -> report.md in that folder
    python -m ftsweep.report multirun/A multirun/B --out reports/lora-vs-dora

``build_report`` is what the sweep callback calls at the end of every multirun.
This module imports nothing heavy: pandas and matplotlib load when a report is
built, and torch never does, so a report builds on a laptop from a copied
multirun/ folder.
"""

from __future__ import annotations

from pathlib import Path


def build_report(
    sweep_dirs: list[str | Path],
    out_dir: str | Path | None = None,
    metric: str = "eval_loss",
    maximize: bool | None = None,
) -> Path:
    """Write report.md, report.html, runs.csv and plots/*.png; return the path of report.md.

    sweep_dirs: sweep directories (multirun/<date>/<time>) or single run directories
        (outputs/<date>/<time>, each read as a sweep of one).
    out_dir: where to write; default the sweep directory itself, or <first>/compare/
        when several are given (a comparison never overwrites a sweep's own report).
    metric: summary.json key (or task_metrics key) that ranks the runs.
    maximize: True/False forces the direction; None infers it from the name
        (loss, perplexity: lower is better; accuracy, f1, exact_match, rouge*, bleu: higher).

    Raises ReportError (a ValueError) when a path is not a directory or holds no runs.
    """
    from .build import build_report as _build

    return _build(sweep_dirs, out_dir=out_dir, metric=metric, maximize=maximize)


def __getattr__(name: str):
    # ReportError lives with the readers; fetched lazily so this import stays light.
    if name == "ReportError":
        from .collect import ReportError

        return ReportError
    raise AttributeError(name)


__all__ = ["ReportError", "build_report"]
