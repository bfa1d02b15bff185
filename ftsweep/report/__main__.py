"""Command line: python -m ftsweep.report SWEEP_DIR [SWEEP_DIR ...] [options].

Writes report.md, report.html, runs.csv and plots/*.png and prints the path of
report.md. Bad input (a path that is not a directory, no runs, a metric no run
reports) prints one line to stderr and exits with code 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DESCRIPTION = """\
Build a reproducible ablation report from sweep directories.

Each SWEEP_DIR is a sweep folder (multirun/<date>/<time>, holding sweep.json and
one directory per run) or a single run directory (outputs/<date>/<time>), which
is read as a sweep of one. Several sweeps (e.g. a LoRA and a DoRA sweep) are
compared in one report with a "sweep" column; the sweep becomes a factor of the
effects only when nothing in the runs' overrides tells them apart.

Output (--out): by default the sweep folder itself for one SWEEP_DIR, and
<first SWEEP_DIR>/compare/ for several, so a comparison never overwrites a
sweep's own report."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m ftsweep.report", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sweep_dirs", nargs="+", metavar="SWEEP_DIR", help="sweep or run directory")
    parser.add_argument("--out", metavar="DIR", help="output directory (default: see above)")
    parser.add_argument(
        "--metric",
        default=None,
        help="summary.json or task_metrics key that ranks the runs (default: eval_loss)",
    )
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--maximize", dest="maximize", action="store_true", default=None, help="higher is better")
    direction.add_argument("--minimize", dest="maximize", action="store_false", help="lower is better")
    parser.epilog = (
        "Without --maximize/--minimize the metric's name decides: *loss* and perplexity are "
        "minimized; accuracy, f1, exact_match, rouge*, bleu, precision, recall maximized; "
        "anything else minimized."
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from .build import available_metrics, default_out_dir, write_report
    from .collect import ReportError, collect

    try:
        sweeps = collect(args.sweep_dirs)
        runs = [run for sweep in sweeps for run in sweep.runs]
        metric = args.metric or "eval_loss"
        available = available_metrics(runs)
        if args.metric and available and metric not in available:
            # A metric typed on purpose that no ok run reports is a typo, not a result.
            raise ReportError(f"--metric {metric}: no ok run reports it; use one of {', '.join(available)}")
        out = default_out_dir(sweeps) if args.out is None else Path(args.out)
        path = write_report(sweeps, out, metric, args.maximize)
    except ReportError as exc:
        print(f"ftsweep.report: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an output folder that cannot be written
        print(f"ftsweep.report: cannot write the report: {exc}; pass a writable folder with --out", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
