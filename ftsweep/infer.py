"""Use what a run produced: load it exactly as it trained, render prompts with its template.

    run dir -> manifest.json "config" -> tokenizer + base (same quant, same dtype)
            -> adapter/ (PeftModel) -> eval mode
    record / chat history -> messages -> the run's template -> prompt -> generate

Shared by ``ftsweep.generate``, ``ftsweep.chat``, ``ftsweep.demo`` and
``ftsweep.export``. Nothing here re-types a template or a quantization
setting: both come from the run's own manifest, through the same functions
the run used (``models.load_model``, ``adapters.prepare_base``,
``templates.resolve`` / ``render_prompt``, ``evaluation.generate``).

Checking a run directory imports nothing heavy, so bad input fails at once.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ftsweep import adapters, artifacts

RUN_DIR_HINT = "pass a run directory written by `python -m ftsweep` (outputs/<date>/<time> or multirun/<date>/<time>/<run>)"


class UsageError(Exception):
    """Bad input a person can fix. The message is one line naming the problem and the fix (exit code 2)."""


# ---- the run directory ---------------------------------------------------------------


def _best_run(sweep_dir: Path) -> Path | None:
    """The sweep's run with an adapter and the lowest eval_loss (else any run with an adapter)."""
    runs = [p for p in sorted(sweep_dir.iterdir()) if p.is_dir() and (p / artifacts.MANIFEST).exists()]
    with_adapter = [p for p in runs if artifacts.has_adapter(p)]

    def loss(p: Path) -> float:
        s = artifacts.read_json(p / artifacts.SUMMARY) or {}
        v = s.get("eval_loss")
        return float(v) if isinstance(v, (int, float)) else float("inf")

    return min(with_adapter, key=loss, default=runs[0] if runs else None)


def _rerun_hint(manifest: dict | None) -> str:
    cmd = (manifest or {}).get("command")
    return f"re-run it: {cmd}" if cmd else "re-run it with the same overrides"


def check_run_dir(run_dir: str | Path, need_adapter: bool = True) -> dict:
    """Validate a run directory and return its manifest; raise UsageError naming the problem and the fix."""
    path = Path(run_dir)
    if not path.exists():
        raise UsageError(f"{path}: no such directory; {RUN_DIR_HINT}")
    if not path.is_dir():
        raise UsageError(f"{path}: not a directory; {RUN_DIR_HINT}")
    if path.name == artifacts.ADAPTER and (path.parent / artifacts.MANIFEST).exists():
        raise UsageError(f"{path} is the adapter folder of a run; pass the run directory itself: {path.parent}")
    summary = artifacts.read_json(path / artifacts.SUMMARY)
    manifest = artifacts.read_json(path / artifacts.MANIFEST)
    status = (summary or {}).get("status")
    if status == artifacts.FAILED:
        err = summary.get("error") or {}
        raise UsageError(f"{path}: the run failed ({err.get('type')}: {err.get('message')}), so it has no adapter; "
                         f"fix that and {_rerun_hint(manifest)}")
    if manifest is None:
        if (path / artifacts.SWEEP).exists() or any((p / artifacts.MANIFEST).exists() for p in path.iterdir() if p.is_dir()):
            best = _best_run(path)
            example = f", e.g. {best} (lowest eval_loss)" if best else ""
            raise UsageError(f"{path} is a sweep directory, not a run; pass one of its run directories{example}")
        if (path / artifacts.MANIFEST).exists():
            raise UsageError(f"{path / artifacts.MANIFEST}: not readable JSON; {_rerun_hint(None)}")
        raise UsageError(f"{path} is not a run directory (no {artifacts.MANIFEST}); {RUN_DIR_HINT}")
    if not isinstance(manifest.get("config"), dict):
        raise UsageError(f"{path / artifacts.MANIFEST} has no \"config\" (written by an older ftsweep?); {_rerun_hint(manifest)}")
    if need_adapter and not artifacts.has_adapter(path):
        if status == artifacts.INTERRUPTED:
            why = "the run was interrupted before it saved an adapter; resume it with the same command"
            raise UsageError(f"{path}: {why}: {manifest.get('command') or 'python -m ftsweep ...'}")
        if status == artifacts.RUNNING:
            raise UsageError(f"{path}: no adapter yet (status: running: still training, or killed); "
                             f"wait for it to finish or {_rerun_hint(manifest)}")
        raise UsageError(f"{path}: {artifacts.ADAPTER}/ is missing (status: {status or 'unknown'}; deleted or copied without it?); "
                         f"{_rerun_hint(manifest)}")
    return manifest


def require_task(manifest: dict, task: str, tool: str) -> None:
    got = ((manifest.get("config") or {}).get("task") or {}).get("name")
    if got != task:
        raise UsageError(f"{tool} needs a task={task} run, this run trained task={got}; "
                         f"`python -m ftsweep.export` merges any run")


# ---- loading ---------------------------------------------------------------------------------


@dataclass
class LoadedRun:
    dir: Path
    manifest: dict
    cfg: Any  # DictConfig of the run's resolved config
    tokenizer: Any
    model: Any  # PeftModel in eval mode (or the bare base with adapter=False)
    template: str  # the Jinja template the run rendered its data with
    system: str | None  # the run's default system prompt (data.system)

    @property
    def name(self) -> str:
        return self.manifest.get("run_name") or self.dir.name

    @property
    def generation(self) -> dict:
        """The run's eval.generation: what produced samples.jsonl."""
        from omegaconf import OmegaConf

        return dict(OmegaConf.to_container(self.cfg.eval.generation, resolve=True) or {})

    @property
    def batch_size(self) -> int:
        return int(self.cfg.eval.batch_size)

    @property
    def max_context(self) -> int:
        """Tokens the base model attends to (its position limit)."""
        for key in ("max_position_embeddings", "n_positions", "seq_length"):
            v = getattr(getattr(self.model, "config", None), key, None)
            if isinstance(v, int) and v > 0:
                return v
        return int(self.cfg.data.max_length)


def run_config(manifest: dict):
    from omegaconf import OmegaConf

    return OmegaConf.create(manifest["config"])


def training_template(cfg, tokenizer) -> str:
    """The template the run rendered its data with (what data.prepare resolves)."""
    from ftsweep.data import templates

    return templates.resolve(cfg.data.get("template") or cfg.model.get("chat_template"), tokenizer, cfg.data.get("custom_template"))


def load_tokenizer(cfg):
    from ftsweep import models, runtime

    # The first load of every tool: from here on the console is the tool's own lines, as in training
    # (without it, export of a classifier printed a load report calling its trained head "MISSING").
    runtime.quiet_libraries()
    return models.load_tokenizer(cfg.model, models.resolve_model_path(cfg.model))


def load_base(cfg, tokenizer, quant_cfg=None, dtype: str | None = None):
    """The base as the run loaded it: same quantization, same dtype, same k-bit preparation.

    quant_cfg / dtype override the run's (export loads quant=none in float32).
    """
    from omegaconf import OmegaConf

    from ftsweep import models

    quant = cfg.quant if quant_cfg is None else quant_cfg
    model_cfg = cfg.model
    if dtype is not None:
        model_cfg = OmegaConf.merge(cfg.model, {"dtype": dtype})
    base = models.load_model(model_cfg, quant, cfg.task, tokenizer, models.resolve_model_path(cfg.model))
    # Training upcast the non-quantized weights of a k-bit base (norms, embeddings) to fp32: so does inference.
    return adapters.prepare_base(base, quant, gradient_checkpointing=False)


def load_run(run_dir: str | Path, adapter: bool = True) -> LoadedRun:
    """Tokenizer, base (as trained) and adapter of a run, ready to generate."""
    manifest = check_run_dir(run_dir, need_adapter=adapter)
    path = Path(run_dir)
    cfg = run_config(manifest)
    tokenizer = load_tokenizer(cfg)
    try:
        template = training_template(cfg, tokenizer)
    except ValueError as exc:
        raise UsageError(f"{path}: {exc}") from exc
    model = load_base(cfg, tokenizer)
    if adapter:
        model = adapters.load_saved(model, path / artifacts.ADAPTER)
    model.eval()
    return LoadedRun(dir=path, manifest=manifest, cfg=cfg, tokenizer=tokenizer, model=model, template=template,
                     system=cfg.data.get("system"))


# ---- records and prompts -------------------------------------------------------------------

_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def record_messages(record: dict, system: str | None, data_cfg=None) -> tuple[list[dict], str | None]:
    """A test-file record -> (conversation up to the answer, reference answer or None).

    Accepted shapes:
      alpaca     {"instruction", "input"?, "output"?, "system"?}   output is the reference
      prompt     {"prompt", "reference"? | "output"?}              prompt is the user turn
      messages   {"messages": [{"role", "content"}, ...]}          a final assistant turn is the reference
      sharegpt   {"conversations": [{"from", "value"}, ...]}       same
    """
    from omegaconf import OmegaConf

    from ftsweep.data import formats
    from ftsweep.data.sources import Record

    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    if "instruction" in record:
        # The run's own conversion, so the user turn reads exactly as in training.
        data_cfg = OmegaConf.merge(data_cfg if data_cfg is not None else {}, {"format": "alpaca", "columns": {}, "system": system})
        task = OmegaConf.create({"name": "sft"})
        example = formats.normalise(Record({**record, "output": record.get("output") or "-"}, "record"), data_cfg, task)
        return example.messages[:-1], record.get("output")
    if "prompt" in record:
        head = [{"role": "system", "content": record.get("system") or system}] if (record.get("system") or system) else []
        return head + [{"role": "user", "content": str(record["prompt"])}], record.get("reference", record.get("output"))
    turns = None
    if isinstance(record.get("messages"), list):
        turns = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    elif isinstance(record.get("conversations"), list):
        turns = [{"role": _SHAREGPT_ROLES.get(m.get("from"), m.get("from")), "content": m["value"]} for m in record["conversations"]]
    if turns is None:
        raise ValueError("expected alpaca fields (instruction, input, output), prompt (+ reference), messages or conversations")
    reference = None
    if turns and turns[-1]["role"] == "assistant":
        reference = turns.pop()["content"]
    if not turns or turns[-1]["role"] != "user":
        raise ValueError("the conversation must end with a user turn (or a user turn and its reference answer)")
    if system and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system})
    return turns, reference


def render(run: LoadedRun, messages: list[dict]) -> str:
    """The generation prompt for a conversation that ends with a user turn, in the run's template."""
    from ftsweep.data import templates

    # render_prompt renders everything before the last assistant turn, with the generation prompt.
    return templates.render_prompt(run.tokenizer, run.template, [*messages, {"role": "assistant", "content": ""}])


def chat_prompt(run: LoadedRun, history: list[dict], system: str | None, max_new_tokens: int,
                max_context: int | None = None) -> tuple[str, int]:
    """Render a chat history (ending with a user turn); drop the oldest turns if it outgrows the context.

    Returns (prompt, number of earlier user turns dropped).
    """
    limit = max_context or run.max_context
    turns = list(history)
    dropped = 0
    while True:
        messages = ([{"role": "system", "content": system}] if system else []) + turns
        prompt = render(run, messages)
        n_tokens = len(run.tokenizer(prompt, add_special_tokens=False)["input_ids"])
        users = [i for i, m in enumerate(turns) if m["role"] == "user"]
        if n_tokens + max_new_tokens <= limit or len(users) <= 1:
            return prompt, dropped
        turns = turns[users[1]:]  # from the second user turn on
        dropped += 1


def generate(run: LoadedRun, prompts: list[str], generation: dict, batch_size: int) -> list[str]:
    from ftsweep import evaluation

    return evaluation.generate(run.model, run.tokenizer, prompts, generation, batch_size)


# ---- generation settings ---------------------------------------------------------------------

SAMPLING_KEYS = ("temperature", "top_p", "top_k", "min_p", "typical_p")


def add_generation_args(parser) -> None:
    g = parser.add_argument_group("generation (default: the run's eval.generation, greedy)")
    g.add_argument("--config", metavar="GEN.yaml", help="generate() settings in YAML (flat keys, or under `generation:`)")
    mode = g.add_mutually_exclusive_group()
    mode.add_argument("--greedy", action="store_true", help="greedy decoding (drops sampling settings)")
    mode.add_argument("--sample", action="store_true", help="sampling (implied by --temperature/--top-p/--top-k)")
    g.add_argument("--temperature", type=float)
    g.add_argument("--top-p", type=float)
    g.add_argument("--top-k", type=int)
    g.add_argument("--repetition-penalty", type=float)
    g.add_argument("--no-repeat-ngram-size", type=int)
    g.add_argument("--max-new-tokens", type=int)
    g.add_argument("--seed", type=int, help="seed for sampling (default: the run's seed)")


def read_generation_yaml(path: str) -> dict:
    from omegaconf import OmegaConf

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--config {path}: no such file; write the generate() settings as YAML, e.g. `temperature: 0.7`")
    try:
        node = OmegaConf.to_container(OmegaConf.load(p), resolve=True)
    except Exception as exc:  # noqa: BLE001 - any parse error is the user's to fix
        raise UsageError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if isinstance(node, dict) and isinstance(node.get("generation"), dict) and len(node) == 1:
        node = node["generation"]
    if not isinstance(node, dict):
        raise UsageError(f"--config {path}: expected a mapping of generate() settings, e.g. `max_new_tokens: 64`")
    return node


def generation_settings(args, base: dict) -> dict:
    """The run's eval.generation, updated by --config YAML, then by flags; checked by transformers."""
    gen = dict(base)
    if getattr(args, "config", None):
        gen.update(read_generation_yaml(args.config))
    flags = {k: getattr(args, k) for k in ("temperature", "top_p", "top_k", "repetition_penalty",
                                            "no_repeat_ngram_size", "max_new_tokens")}
    gen.update({k: v for k, v in flags.items() if v is not None})
    if args.sample or (not args.greedy and any(flags[k] is not None for k in ("temperature", "top_p", "top_k"))):
        gen["do_sample"] = True
    if args.greedy:
        gen["do_sample"] = False
    if not gen.get("do_sample"):
        for k in SAMPLING_KEYS:
            gen.pop(k, None)  # greedy ignores them; transformers warns if they are set
    check_generation(gen)
    return gen


def check_generation(gen: dict) -> None:
    from transformers import GenerationConfig

    known = set(GenerationConfig().to_dict()) | {"streamer"}
    unknown = sorted(k for k in gen if k not in known)
    if unknown:
        raise UsageError(f"unknown generation setting(s) {', '.join(unknown)}; use transformers GenerationConfig names "
                         "(max_new_tokens, do_sample, temperature, top_p, top_k, repetition_penalty, ...)")
    try:
        GenerationConfig(**{k: v for k, v in gen.items() if k != "streamer"}).validate(strict=True)
    except ValueError as exc:
        raise UsageError(f"generation settings: {' '.join(str(exc).split())}") from exc


def seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(int(seed))


# ---- command-line plumbing ---------------------------------------------------------------


def cli(prog: str, main: Callable[[], int | None]) -> int:
    """Run a command's main; UsageError becomes one line on stderr and exit code 2."""
    from ftsweep import runtime

    runtime.quiet_imports()
    runtime.skip_exit_collection()
    try:
        return int(main() or 0)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a .jsonl file (one object per line) or a .json file (a list of objects)."""
    p = Path(path)
    if p.exists() and not p.is_file():
        raise UsageError(f"{p}: not a regular file; pass a .jsonl file with one record per line (alpaca fields or prompt/reference)")
    if not p.is_file():
        raise UsageError(f"{p}: no such file; pass a .jsonl file with one record per line (alpaca fields or prompt/reference)")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        try:
            records = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"{p}: not valid JSON ({exc}); fix the file or write it as .jsonl") from exc
        if not isinstance(records, list):
            raise UsageError(f"{p}: expected a JSON list of records")
        return records
    records = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except ValueError as exc:
            raise UsageError(f"{p} line {i}: not valid JSON ({exc}); one JSON object per line") from exc
    return records
