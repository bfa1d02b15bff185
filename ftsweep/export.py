"""Merge a run's adapter into its base and write a standalone model directory.

    python -m ftsweep.export RUN_DIR OUT_DIR
    python -m ftsweep.export RUN_DIR OUT_DIR --dtype bfloat16 --force

A 4-bit (or 8-bit) base cannot hold merged weights, so the base is loaded again
unquantized, the adapter applied and merged (PEFT merge_and_unload), and the
result saved as safetensors with the tokenizer and its chat template:
`AutoModelForCausalLM.from_pretrained(OUT_DIR)` loads it with plain
transformers. The merged model equals the adapter on the full-precision base;
against the adapter on the 4-bit base it differs by the quantization error.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from ftsweep import artifacts, infer

PROG = "python -m ftsweep.export"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("out_dir", metavar="OUT_DIR")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="weights of the merged model")
    p.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR")
    return p


def merge(run_dir: str | Path, dtype: str = "float32"):
    """(merged model, tokenizer, run config): the adapter folded into an unquantized base."""
    from omegaconf import OmegaConf

    from ftsweep import adapters, models

    manifest = infer.check_run_dir(run_dir)
    cfg = infer.run_config(manifest)
    tokenizer = infer.load_tokenizer(cfg)
    no_quant = OmegaConf.create({"name": "none", "bits": 16, "quant_type": "nf4", "double_quant": False,
                                 "compute_dtype": dtype, "upcast_non_quantized": False})
    base = models.load_model(OmegaConf.merge(cfg.model, {"dtype": dtype}), no_quant, cfg.task, tokenizer,
                             models.resolve_model_path(cfg.model))
    model = adapters.load_saved(base, Path(run_dir) / artifacts.ADAPTER)
    return model.merge_and_unload(), tokenizer, cfg


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def _main() -> int:
        infer.check_run_dir(args.run_dir)
        out = Path(args.out_dir)
        if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.force:
            raise infer.UsageError(f"{out}: exists and is not empty; choose a new OUT_DIR or pass --force")
        merged, tokenizer, cfg = merge(args.run_dir, args.dtype)
        # Written beside OUT_DIR first and moved in whole: an export stopped half-way (Ctrl-C while a 7B model's
        # shards are written) leaves no directory that looks like a model but holds half of one.
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.parent / f".{out.name}.partial-{os.getpid()}"
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir()
        try:
            merged.save_pretrained(part, safe_serialization=True)
            tokenizer.save_pretrained(part)
            artifacts.atomic_write_json(part / artifacts.EXPORT_INFO, {"run_dir": str(Path(args.run_dir).resolve()),
                                                                       "dtype": args.dtype, "merged_from_quant": cfg.quant.name})
            if out.is_dir() and not any(out.iterdir()):
                out.rmdir()
            if out.exists():  # --force: the new files replace those of the same name
                for item in part.iterdir():
                    shutil.rmtree(out / item.name) if (out / item.name).is_dir() else (out / item.name).unlink(missing_ok=True)
                    item.rename(out / item.name)
            else:
                part.rename(out)
        finally:
            shutil.rmtree(part, ignore_errors=True)
        print(f"merged model written to {out}", flush=True)
        return 0

    return infer.cli(PROG, _main)


if __name__ == "__main__":
    sys.exit(main())
