"""A web chat with a run's adapter (Gradio; pip install "ftsweep[demo]"), in the template it was trained with.

    python -m ftsweep.demo RUN_DIR                       # http://127.0.0.1:7860
    python -m ftsweep.demo RUN_DIR --host 0.0.0.0 --port 8080
"""

from __future__ import annotations

import argparse
import sys

from ftsweep import infer

PROG = "python -m ftsweep.demo"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--system", help="system prompt (default: the run's data.system)")
    infer.add_generation_args(p)
    return p


def build_app(run, generation: dict, system: str | None):
    import gradio as gr

    def respond(message: str, history: list[dict]) -> str:
        turns = [{"role": m["role"], "content": m["content"]} for m in history if m.get("role") in ("user", "assistant")]
        turns.append({"role": "user", "content": message})
        prompt, _ = infer.chat_prompt(run, turns, system, int(generation.get("max_new_tokens", 64)))
        return infer.generate(run, [prompt], generation, 1)[0]

    return gr.ChatInterface(respond, title=f"ftsweep: {run.name}", api_name="chat")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)

    def _main() -> int:
        try:
            import gradio  # noqa: F401
        except ImportError:
            raise infer.UsageError('the web demo needs Gradio: pip install "ftsweep[demo]"') from None
        manifest = infer.check_run_dir(args.run_dir)
        infer.require_task(manifest, "sft", PROG)
        generation = infer.generation_settings(args, dict(manifest["config"].get("eval", {}).get("generation") or {}))
        run = infer.load_run(args.run_dir)
        system = args.system if args.system is not None else run.system
        build_app(run, generation, system).launch(server_name=args.host, server_port=args.port, share=False)
        return 0

    return infer.cli(PROG, _main)


if __name__ == "__main__":
    sys.exit(main())
