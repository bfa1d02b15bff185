"""Chat with a run's adapter in the terminal, in the template it was trained with.

    python -m ftsweep.chat RUN_DIR
    python -m ftsweep.chat RUN_DIR --system "Answer briefly." --max-new-tokens 128 --temperature 0.7

Each line on stdin is a user turn; the answer is printed on its own line and
joins the history. `/reset` clears the history, `/exit` (or end of input) quits.
When the history outgrows the model's context, the oldest turns are dropped.
"""

from __future__ import annotations

import argparse
import sys

from ftsweep import infer

PROG = "python -m ftsweep.chat"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--system", help="system prompt (default: the run's data.system)")
    infer.add_generation_args(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def _main() -> int:
        manifest = infer.check_run_dir(args.run_dir)
        infer.require_task(manifest, "sft", PROG)
        generation = infer.generation_settings(args, dict(manifest["config"].get("eval", {}).get("generation") or {}))
        run = infer.load_run(args.run_dir)
        system = args.system if args.system is not None else run.system
        infer.seed_everything(args.seed if args.seed is not None else int(run.cfg.seed))
        interactive = sys.stdin.isatty()
        history: list[dict] = []
        while True:
            if interactive:
                print("you> ", end="", flush=True)
            line = sys.stdin.readline()
            if not line or line.strip() == "/exit":
                return 0
            text = line.rstrip("\n")
            if text.strip() == "/reset":
                history = []
                print("(history cleared)", flush=True)
                continue
            if not text.strip():
                continue
            history.append({"role": "user", "content": text})
            prompt, dropped = infer.chat_prompt(run, history, system, int(generation.get("max_new_tokens", 64)))
            if dropped:
                history = history[2 * dropped:]  # each dropped user turn takes its answer with it
            answer = infer.generate(run, [prompt], generation, 1)[0]
            history.append({"role": "assistant", "content": answer})
            print(("bot> " if interactive else "") + answer.replace("\n", " "), flush=True)

    return infer.cli(PROG, _main)


if __name__ == "__main__":
    sys.exit(main())
