"""One run, top to bottom: manifest -> model -> data -> adapter -> train -> eval -> summary.

A run never raises out of a sweep: whatever goes wrong is written to
summary.json as ``failed`` (or ``interrupted``) and the sweep goes on.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ftsweep import artifacts, distributed, manifest
from ftsweep.artifacts import MetricsLog, Stopwatch, atomic_write_json, now_iso, read_json
from ftsweep.config import config_hash, plain, validate

log = logging.getLogger("ftsweep")


class RunInterrupted(Exception):
    """SIGTERM or Ctrl-C during training: a checkpoint is saved and the run marked interrupted."""


@contextmanager
def _sigterm_as_interrupt():
    """SIGTERM (scancel, kill, a pool shutting down) behaves like Ctrl-C inside the run."""

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def last_checkpoint(run_dir: Path) -> Path | None:
    ckpts = [p for p in (run_dir / artifacts.CHECKPOINTS).glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return max(ckpts, key=lambda p: int(p.name.split("-")[-1]), default=None)


def peak_memory_bytes() -> int:
    import torch

    if torch.cuda.is_available():
        return int(torch.cuda.max_memory_allocated())
    # CPU: the process's peak resident set (Linux reports KiB).
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _quiet_libraries() -> None:
    """Our own progress bar and log lines are the console; library chatter goes."""
    import warnings

    from transformers.utils import logging as hf_logging

    warnings.filterwarnings("ignore", category=FutureWarning)  # transformers 5 renames (gradient_checkpointing_*)
    warnings.filterwarnings("ignore", message=".*kernels.*")  # bitsandbytes on CPU
    hf_logging.disable_progress_bar()  # "Loading weights" bars
    import datasets

    datasets.disable_progress_bars()  # "Saving the dataset" bars of the tokenized-data cache
    hf_logging.set_verbosity_error()


def _reset_globals(seed: int) -> None:
    """The basic launcher runs every job in one process: reset what would leak between them."""
    import torch
    from transformers import set_seed

    set_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


class Run:
    def __init__(self, cfg: DictConfig, run_dir: Path, run_name: str, overrides: list[str], sweep: dict | None):
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.name = run_name
        self.overrides = overrides
        self.sweep = sweep
        self.hash = config_hash(cfg)
        self.clock = Stopwatch()
        self.summary: dict[str, Any] = {}
        self.metrics: MetricsLog | None = None
        self.tracker = None
        self.trainer = None
        self.main = distributed.is_main()

    # ---- files -----------------------------------------------------------------
    def write_summary(self, **fields) -> None:
        self.summary.update(fields)
        if self.main:  # under torchrun only rank 0 writes the run directory
            atomic_write_json(self.dir / artifacts.SUMMARY, self.summary)

    def emit(self, record: dict) -> None:
        """One metrics record: to metrics.jsonl first (never lost), then to trackers."""
        self.metrics.write(record)
        if self.tracker is not None:
            self.tracker.log(record)

    # ---- the run -----------------------------------------------------------------
    def execute(self) -> dict:
        distributed.init()
        previous = read_json(self.dir / artifacts.SUMMARY)
        if self.cfg.skip_finished and previous and previous.get("status") == "ok" and previous.get("config_hash") == self.hash:
            log.info("skip %s: finished ok with the same config (hash %s)", self.name, self.hash)
            return dict(previous, status="skipped", _previous_status="ok")

        resume_from = last_checkpoint(self.dir) if previous and previous.get("config_hash") == self.hash else None
        distributed.barrier()  # every rank has read the directory before rank 0 changes it
        if previous and previous.get("config_hash") != self.hash and self.main:
            shutil.rmtree(self.dir / artifacts.CHECKPOINTS, ignore_errors=True)  # another config's checkpoints
        self.summary = {"status": "running", "run_name": self.name, "config_hash": self.hash, "started_at": now_iso(),
                        "resumed_from": resume_from.name if resume_from else None,
                        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}  # the device a GPU pool gave this run
        self.write_summary()
        try:
            import torch

            validate(self.cfg, cuda=torch.cuda.is_available())
            with _sigterm_as_interrupt():
                self._train_and_evaluate(resume_from)
        except KeyboardInterrupt as exc:
            self._save_checkpoint_quietly()
            self.write_summary(status="interrupted", error={"type": "Interrupted", "message": str(exc) or "interrupted"},
                               finished_at=now_iso(), wall_seconds=round(self.clock.elapsed(), 2))
            log.warning("run %s interrupted; re-run the same command to resume from the last checkpoint", self.name)
        except Exception as exc:  # noqa: BLE001 - a run records its failure instead of raising
            from ftsweep.errors import one_line

            self.write_summary(status="failed", error={"type": type(exc).__name__, "message": one_line(exc)},
                               finished_at=now_iso(), wall_seconds=round(self.clock.elapsed(), 2))
            if self.sweep is not None:  # a single run's error is the CLI's one line
                log.error("run %s failed: %s: %s", self.name, type(exc).__name__, one_line(exc))
            if os.environ.get("FTSWEEP_DEBUG"):
                log.exception("traceback")
        finally:
            if self.tracker is not None:
                self.tracker.finish({k: v for k, v in self.summary.items() if k not in ("error",)})
            if self.metrics is not None:
                self.metrics.close()
        return self.summary

    def _train_and_evaluate(self, resume_from: Path | None) -> None:
        import torch

        from ftsweep import adapters, data, evaluation, models, training
        from ftsweep.tracking import Tracker

        cfg = self.cfg
        _quiet_libraries()
        _reset_globals(int(cfg.seed))

        # 1. Model and tokenizer, quantized as the quant group says.
        path = models.resolve_model_path(cfg.model)
        _check_targets(cfg)  # on the model's config alone: a wrong target name fails before any weight loads
        tokenizer = models.load_tokenizer(cfg.model, path)
        # 2. Data: rendered, masked, split - before the model, so bad data fails fast.
        bundle = data.prepare(cfg.data, cfg.task, tokenizer, cfg.model)
        log.info("data: %d train / %d held-out examples (%s)", len(bundle.train), len(bundle.val),
                 ", ".join(f"{k} {v}" for k, v in bundle.stats.items() if k in ("truncated", "dropped_examples", "skipped_records")))
        if self.main:
            atomic_write_json(self.dir / artifacts.MANIFEST, manifest.build(
                run_name=self.name, overrides=self.overrides, config=plain(cfg), config_hash=self.hash, seed=int(cfg.seed),
                sweep=self.sweep, data_fingerprint=bundle.fingerprint, created_at=self.summary["started_at"]))
        base = models.load_model(cfg.model, cfg.quant, cfg.task, tokenizer, path)
        _, base_total = models.count_params(base)
        # 3. Adapter.
        model = adapters.apply(base, cfg.lora, cfg.quant, cfg.task.name, cfg.model.family, bool(cfg.train.gradient_checkpointing),
                               total_steps=training.total_steps(cfg, len(bundle.train)))
        adapters.initialize(model, cfg.lora, bundle, bundle.collator)  # data-driven inits (EVA, CorDA); no-op otherwise
        initial_adapter = adapters.save_initial(model, cfg.lora, self.dir) if self.main else None  # PiSSA / OLoRA
        # No KV cache while training: it is never reused, and packed batches need the forward pass without one.
        model.config.use_cache = False
        trainable, total = models.count_params(model)
        self.write_summary(trainable_params=trainable, total_params=total, trainable_share=round(trainable / total, 6),
                           estimated_memory_bytes=_planned_memory(cfg))
        log.info("adapter %s: %s trainable of %s params (%.3f%%)", cfg.lora.name, f"{trainable:,}", f"{total:,}", 100 * trainable / total)

        # 4. Tracker and metrics log: opened only once the run can train.
        self.metrics = MetricsLog(self.dir / artifacts.METRICS, resume_step=_step_of(resume_from)) if self.main else NullLog()
        tracker_root = Path(self.sweep["dir"]) if self.sweep else self.dir
        self.tracker = None if not self.main else Tracker.open(cfg.logger, run_name=self.name, group=self.sweep["id"] if self.sweep else None,
                                    tags=_swept_tags(self.overrides), config=manifest.scrub(plain(cfg)),
                                    root=tracker_root)

        # 5. Trainer (rebuilt with half the micro batch if the first attempt runs out of GPU memory).
        eval_seconds = [0.0]

        def build_trainer(micro_batch: int, grad_accum: int):
            args = training.training_arguments(cfg, self.dir, micro_batch, grad_accum)
            trainer = training.SweepTrainer(
                model=model, args=args, train_dataset=bundle.train, eval_dataset=bundle.val, data_collator=bundle.collator,
                processing_class=tokenizer, nan_check=bool(cfg.train.nan_check), class_weights=bundle.class_weights,
                optimizers=(adapters.optimizer(model, cfg.lora, cfg.optim), None),  # LoRA+ builds its own; None: Trainer's
            )
            trainer.remove_callback(ProgressCallback)  # it also prints every log dict and a bar per evaluation
            trainer.remove_callback(PrinterCallback)
            metrics_cb = training.MetricsCallback(self.emit, self.clock.elapsed)
            metrics_cb.trainer = trainer
            trainer.add_callback(metrics_cb)
            if cfg.train.progress:
                trainer.add_callback(training.ProgressBar(self.name))
            trainer.add_callback(training.EvalCallback(int(cfg.eval.every_n_steps), run_eval, bool(cfg.eval.get("per_epoch"))))
            self.trainer = trainer
            return trainer

        def run_eval(final: bool = False) -> dict:
            trainer, watch = self.trainer, Stopwatch()
            out = trainer.evaluate()
            record = {"split": "eval", "step": trainer.state.global_step, "epoch": round(float(trainer.state.epoch or 0), 4),
                      "tokens_seen": trainer.tokens_seen, "eval_loss": float(out["eval_loss"]),
                      "perplexity": evaluation.perplexity(float(out["eval_loss"]))}
            if final or cfg.task.name == "classify":  # classification metrics are cheap: every evaluation has them
                record.update(self._task_metrics(trainer, model, tokenizer, bundle))
            record["time"] = round(self.clock.elapsed(), 3)
            eval_seconds[0] += watch.elapsed()
            self.emit(record)
            return record

        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        micro, accum = int(cfg.optim.micro_batch_size), distributed.accumulation(int(cfg.optim.grad_accum), distributed.world_size())
        trainer = build_trainer(micro, accum)
        if resume_from is not None:
            _restore_token_counts(trainer, self.dir / artifacts.METRICS)

        # 6. Baseline, train, final evaluation.
        baseline = None
        if cfg.eval.at_start and resume_from is None:
            baseline = run_eval()["eval_loss"]
        elif resume_from is not None:
            baseline = _baseline_from_log(self.dir / artifacts.METRICS)
        train_watch, eval_before = Stopwatch(), eval_seconds[0]
        oom_retries = 0
        while True:
            try:
                result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
                break
            except torch.OutOfMemoryError:
                if not cfg.train.oom_retry or oom_retries or micro == 1:
                    raise
                # Same effective batch: 8 micro x 2 accum = 4 micro x 4 accum = 16 sequences/step.
                micro, accum, oom_retries = micro // 2, accum * 2, 1
                log.warning("out of memory: retrying from the start with micro batch %d x accumulation %d", micro, accum)
                del trainer
                self.trainer = None
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                shutil.rmtree(self.dir / artifacts.CHECKPOINTS, ignore_errors=True)
                self.metrics.close()
                self.metrics = MetricsLog(self.dir / artifacts.METRICS, resume_step=0) if self.main else NullLog()  # keep the baseline only
                resume_from = None
                trainer = build_trainer(micro, accum)
        # Evaluations inside the training loop are not training time.
        train_seconds = train_watch.elapsed() - (eval_seconds[0] - eval_before)
        final = run_eval(final=True)

        # 7. Adapter (safetensors only) and summary.
        if not self.main:
            self.summary.update(status="ok")
            return
        adapters.save(model, self.dir / artifacts.ADAPTER, initial_adapter)
        evals = [r for r in artifacts.read_metrics(self.dir / artifacts.METRICS) if r.get("split") == "eval"]
        best = min(evals, key=lambda r: r["eval_loss"])
        task_metric_names = [k for k in final if k not in ("split", "step", "epoch", "tokens_seen", "eval_loss", "perplexity", "time")]
        self.write_summary(
            status="ok",
            eval_loss=final["eval_loss"],
            best_eval_loss=best["eval_loss"],
            best_step=best["step"],
            baseline_eval_loss=baseline,
            perplexity=final["perplexity"],
            train_loss=float(result.training_loss),
            task_metrics={k: final[k] for k in task_metric_names},
            steps=int(trainer.state.global_step),
            tokens_seen=int(trainer.tokens_seen),
            tokens_per_second=round(trainer.tokens_seen / train_seconds, 2) if train_seconds > 0 else None,
            padding_efficiency=round(trainer.padding_efficiency, 4) if trainer.padding_efficiency else None,
            train_seconds=round(train_seconds, 2),
            eval_seconds=round(eval_seconds[0], 2),
            peak_memory_bytes=peak_memory_bytes(),
            oom_retries=oom_retries,
            micro_batch_size=micro,
            grad_accum=accum,
            dropped_examples=bundle.stats.get("dropped_examples", 0),
            skipped_records=bundle.stats.get("skipped_records", 0),
            truncated_examples=bundle.stats.get("truncated", 0),
            device="cuda" if torch.cuda.is_available() else "cpu",
            finished_at=now_iso(),
            wall_seconds=round(self.clock.elapsed(), 2),
            error=None,
        )
        if not cfg.train.keep_checkpoints:
            shutil.rmtree(self.dir / artifacts.CHECKPOINTS, ignore_errors=True)

    def _task_metrics(self, trainer, model, tokenizer, bundle) -> dict:
        from ftsweep import evaluation

        cfg = self.cfg
        if cfg.task.name == "classify":
            preds, labels = evaluation.predict_classes(trainer, bundle.val)
            return evaluation.classification_metrics(preds, labels, int(cfg.task.num_labels))
        prompts = bundle.eval_prompts[: int(cfg.eval.num_samples)]
        if not prompts or not self.main:  # generation needs no other rank: rank 0 alone writes samples
            return {}
        generation = dict(cfg.eval.generation)
        predictions = evaluation.generate(model, tokenizer, [p["prompt"] for p in prompts], generation, int(cfg.eval.batch_size))
        references = [p["reference"] for p in prompts]
        rows = [{"prompt": p["prompt"], "reference": r, "prediction": y, "exact_match": y.strip() == r.strip()}
                for p, r, y in zip(prompts, references, predictions)]
        artifacts.atomic_write_text(self.dir / artifacts.SAMPLES, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
        return evaluation.generation_metrics(predictions, references, list(cfg.task.metrics))

    def _save_checkpoint_quietly(self) -> None:
        """On interrupt, save where training stood so a re-run resumes there."""
        trainer = self.trainer
        if trainer is None or trainer.state.global_step == 0:
            return
        try:
            trainer._save_checkpoint(trainer.model, trial=None)
        except Exception as exc:  # noqa: BLE001 - the last periodic checkpoint still serves
            log.warning("could not save a checkpoint on interrupt: %s", exc)


class NullLog:
    """metrics.jsonl stand-in for ranks other than 0."""

    def write(self, record: dict) -> None:
        pass

    def close(self) -> None:
        pass


def _check_targets(cfg) -> None:
    from ftsweep import adapters, plan

    try:
        skeleton, _ = plan.meta_model(cfg.model, cfg.task)
    except Exception as exc:  # noqa: BLE001 - a config transformers cannot build offline: the real load will say why
        log.debug("target check skipped: %s", exc)
        return
    adapters.resolve_targets(cfg.lora.target_modules, cfg.model.family, adapters.linear_module_names(skeleton))


def _planned_memory(cfg) -> int | None:
    """mode=plan's GPU memory estimate for this cell, so the report can set it beside the measured peak."""
    try:
        from ftsweep import plan

        return int(plan.plan_cell(cfg)["memory_gib"]["total"] * plan.GIB)
    except Exception as exc:  # noqa: BLE001 - an estimate must never fail a run
        log.debug("no memory estimate: %s", exc)
        return None


def _swept_tags(overrides: list[str]) -> list[str]:
    """Tracker tags: the values this cell's sweep varies (all overrides of a single run)."""
    swept = [k for k in os.environ.get(artifacts.SWEPT_KEYS_ENV, "").split(",") if k]
    tags = [o for o in overrides if not o.startswith("hydra")]
    return [o for o in tags if o.split("=", 1)[0].lstrip("+~") in swept] if swept else tags


def _step_of(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.split("-")[-1]) if checkpoint else None


def _restore_token_counts(trainer, metrics_path: Path) -> None:
    train = [r for r in artifacts.read_metrics(metrics_path) if r.get("split") == "train"]
    if train:
        trainer.tokens_seen = int(train[-1].get("tokens_seen") or 0)
        eff = train[-1].get("padding_efficiency") or 1.0
        trainer.tokens_total = int(trainer.tokens_seen / eff)


def _baseline_from_log(metrics_path: Path) -> float | None:
    for r in artifacts.read_metrics(metrics_path):
        if r.get("split") == "eval" and r.get("step") == 0:
            return r["eval_loss"]
    return None


def describe(summary: dict, run_dir: Path) -> str:
    """The one console line after a run."""
    if summary.get("status") in ("ok", "skipped"):
        parts = [f"{summary['status']}", f"eval_loss {summary.get('eval_loss', float('nan')):.3f}"]
        if summary.get("baseline_eval_loss"):
            parts[-1] += f" (baseline {summary['baseline_eval_loss']:.3f})"
        for k, v in (summary.get("task_metrics") or {}).items():
            parts.append(f"{k} {v:.3f}")
        if summary.get("tokens_per_second"):
            parts.append(f"{summary['tokens_per_second']:.0f} tok/s")
        if summary.get("wall_seconds") is not None:
            parts.append(f"{summary['wall_seconds']:.1f}s")
        return " | ".join(parts) + f" -> {run_dir}"
    err = summary.get("error") or {}
    return f"{summary.get('status')}: {err.get('type')}: {err.get('message')} -> {run_dir}"

