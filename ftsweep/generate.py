"""Generate with a run's adapter: the base loaded as it trained, prompts in its template.

    python -m ftsweep.generate RUN_DIR --prompt "Extract the city.\nname=Ann; city=Oslo"
    python -m ftsweep.generate RUN_DIR --file test.jsonl                # + metrics when records carry references
    python -m ftsweep.generate RUN_DIR --file test.jsonl --temperature 0.7 --top-p 0.9 --seed 1
    python -m ftsweep.generate RUN_DIR --file RUN_DIR/samples.jsonl --raw   # prompts already rendered

Records of --file: alpaca ({"instruction", "input", "output"}), {"prompt", "reference"},
{"messages": [...]} or sharegpt ({"conversations": [...]}). Output: one JSON line per
record ({"prompt", "reference", "prediction", "exact_match"}, like samples.jsonl) to
--out (default RUN_DIR/generations.jsonl); with references, the run's task metrics are
printed and written beside it (generations.metrics.json).

Defaults reproduce the run's own samples: greedy with the run's eval.generation and
eval.batch_size (batch composition changes padding, which can flip a near-tie).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ftsweep import infer

PROG = "python -m ftsweep.generate"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="Generate with a run's adapter, exactly as the run was trained.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (holds manifest.json and adapter/)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", metavar="TEXT", help="a user message (repeat for several)")
    src.add_argument("--file", metavar="FILE", help=".jsonl (or .json list) of records; see below")
    p.add_argument("--raw", action="store_true", help="prompts are already rendered (e.g. samples.jsonl): no template")
    p.add_argument("--system", help="system prompt (default: the run's data.system)")
    p.add_argument("--out", help="output JSONL (default: RUN_DIR/generations.jsonl)")
    p.add_argument("--batch-size", type=int, help="prompts per generate() call (default: the run's eval.batch_size)")
    p.add_argument("--base-only", action="store_true", help="the base without the adapter (a before/after comparison)")
    infer.add_generation_args(p)
    return p


def build_rows(run, records: list[dict], system: str | None, raw: bool) -> list[dict]:
    rows = []
    for i, rec in enumerate(records, 1):
        if raw:
            if not isinstance(rec, dict) or "prompt" not in rec:
                raise infer.UsageError(f"record {i}: --raw needs a rendered \"prompt\" field (as in samples.jsonl)")
            prompt, reference = str(rec["prompt"]), rec.get("reference", rec.get("output"))
        else:
            try:
                messages, reference = infer.record_messages(rec, system, run.cfg.data)
            except (ValueError, KeyError, TypeError) as exc:
                raise infer.UsageError(f"record {i}: {exc}") from exc
            prompt = infer.render(run, messages)
        row = {"prompt": prompt}
        if isinstance(rec, dict) and "id" in rec:
            row = {"id": rec["id"], **row}
        if reference is not None:
            row["reference"] = str(reference)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def _main() -> int:
        manifest = infer.check_run_dir(args.run_dir)  # before anything heavy: bad input fails at once
        infer.require_task(manifest, "sft", PROG)
        if args.batch_size is not None and args.batch_size < 1:
            raise infer.UsageError(f"--batch-size {args.batch_size}: must be >= 1")
        records = infer.read_jsonl(args.file) if args.file else [{"prompt": t} for t in args.prompt]
        if not records:
            raise infer.UsageError(f"{args.file}: no records")
        cfg = infer.run_config(manifest)
        base_gen = dict(manifest["config"].get("eval", {}).get("generation") or {})
        generation = infer.generation_settings(args, base_gen)

        run = infer.load_run(args.run_dir, adapter=not args.base_only)
        system = args.system if args.system is not None else run.system
        rows = build_rows(run, records, system, args.raw)
        infer.seed_everything(args.seed if args.seed is not None else int(cfg.seed))
        batch_size = args.batch_size or run.batch_size
        predictions = infer.generate(run, [r["prompt"] for r in rows], generation, batch_size)

        from ftsweep import artifacts, evaluation
        from ftsweep.metrics import TASK_METRICS

        names = list(cfg.task.get("metrics") or TASK_METRICS["sft"])
        for row, pred in zip(rows, predictions):
            row["prediction"] = pred
        with_reference = [r for r in rows if "reference" in r]  # they get samples.jsonl's per-example fields
        lines = evaluation.sample_lines([r["prompt"] for r in with_reference], [r["reference"] for r in with_reference],
                                        [r["prediction"] for r in with_reference], names)
        for row, line in zip(with_reference, lines):
            row.update({k: v for k, v in line.items() if k not in row})

        out = Path(args.out) if args.out else Path(args.run_dir) / artifacts.GENERATIONS
        artifacts.atomic_write_jsonl(out, rows)
        if args.prompt:
            for row in rows:
                print(row["prediction"], flush=True)
        print(f"wrote {len(rows)} generation(s) to {out}", file=sys.stderr if args.prompt else sys.stdout, flush=True)

        if with_reference:
            metrics = evaluation.generation_metrics([r["prediction"] for r in with_reference],
                                                   [r["reference"] for r in with_reference], names)
            print(f"metrics on {len(with_reference)} reference(s): " + " | ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
            artifacts.atomic_write_json(out.with_suffix(artifacts.GENERATION_METRICS_SUFFIX), {
                "run_dir": str(Path(args.run_dir).resolve()), "run_name": run.name,
                "config_hash": manifest.get("config_hash"), "adapter": not args.base_only,
                "file": str(args.file) if args.file else None, "records": len(rows), "references": len(with_reference),
                "generation": generation, "batch_size": batch_size, "metrics": metrics,
                "created_at": artifacts.now_iso()})
        return 0

    return infer.cli(PROG, _main)


if __name__ == "__main__":
    sys.exit(main())
