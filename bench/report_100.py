"""How long a report of 100 runs takes to build.

    .venv/bin/python bench/report_100.py

Writes 100 synthetic run directories (lora.r 5 levels x optim.lr 5 levels x
data.n 2 levels x 2 seeds, 1000 steps each: 100 train lines + 3 evals per run)
into a temp dir, then times build_report in this fresh process, so the figure
includes importing pandas and matplotlib, as the sweep callback pays it. The
target is <= 5 s.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from fixtures_report import curve, write_run, write_sweep_json  # noqa: E402

RANKS = ["4", "8", "16", "32", "64"]
LRS = ["1e-5", "3e-5", "1e-4", "3e-4", "1e-3"]
SIZES = ["100", "1000"]
SEEDS = ["1", "2"]


def write_sweep(sweep_dir: Path) -> int:
    grid = {"lora.r": RANKS, "optim.lr": LRS, "data.n": SIZES, "seed": SEEDS}
    write_sweep_json(sweep_dir, "bench", "python -m ftsweep -m " + " ".join(f"{k}={','.join(v)}" for k, v in grid.items()), grid)
    n = 0
    for k, (r, lr, size, seed) in enumerate(itertools.product(RANKS, LRS, SIZES, SEEDS)):
        # A smooth made-up response: best near r=16, lr=3e-4, more data helps, seeds jitter.
        loss = 3.0 + 0.05 * abs(RANKS.index(r) - 2) + 0.1 * abs(LRS.index(lr) - 3) - 0.2 * SIZES.index(size)
        loss += 0.01 * (k % 3)
        overrides = [f"lora.r={r}", f"optim.lr={lr}", f"data.n={size}", f"seed={seed}"]
        write_run(sweep_dir, overrides, eval_loss=loss, metrics=curve(loss, steps=1000))
        n += 1
    return n


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sweep_dir = Path(tmp) / "multirun" / "bench"
        n = write_sweep(sweep_dir)
        start = time.perf_counter()
        from ftsweep.report import build_report

        report = build_report([sweep_dir])
        first = time.perf_counter() - start
        start = time.perf_counter()
        build_report([sweep_dir])
        again = time.perf_counter() - start
        size = sum(p.stat().st_size for p in report.parent.iterdir() if p.is_file())
        print(f"{n} runs: build_report {first:.2f} s (first call, with imports), {again:.2f} s (again); "
              f"{size / 1e6:.1f} MB of report files")


if __name__ == "__main__":
    main()
