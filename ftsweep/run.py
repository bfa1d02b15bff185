"""One run, read top to bottom like a recipe.

    execute: decide (skip / resume / fresh) -> setup model -> setup data -> setup adapter
             -> open logs -> baseline -> train -> final eval -> write

Each phase is a method below, in that order, and leaves what the next one needs
on ``self``. A run never raises out of a sweep: whatever goes wrong is written
to summary.json as ``failed`` (or ``interrupted``) and the sweep goes on.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from ftsweep import accounting, artifacts, auto, distributed, evaluation, manifest, resume, runtime
from ftsweep import overrides as ovr
from ftsweep.artifacts import MetricsLog, Stopwatch, now_iso
from ftsweep.config import config_hash, plain

log = logging.getLogger("ftsweep")


class ResultsInTheWay(RuntimeError):
    """The finished run of another config in this directory could not be moved aside: nothing is started."""


class Run:
    def __init__(self, cfg: DictConfig, run_dir: Path, run_name: str, overrides: list[str],
                 sweep: dict | None = None, swept: list[str] | None = None):
        self.cfg = cfg
        self.dir = Path(run_dir)
        self.name = run_name
        self.overrides = overrides
        self.sweep = sweep  # {"id", "dir"} of the multirun this cell belongs to, None for a single run
        self.swept = swept  # the keys this sweep varies (None: a single run, every override counts)
        self.hash = config_hash(cfg)
        self.clock = Stopwatch()
        self.main = distributed.is_main()  # under torchrun only rank 0 writes the run directory
        self.summary: dict[str, Any] = {}
        self.metrics: MetricsLog | NullLog | None = None
        self.tracker = None
        self.resumed_trackers: dict | None = None  # a resumed run's tracker records, from the stopped session
        self.trainer = None
        self.evals = None
        self.spreads: dict[str, dict | None] = {}  # samples file name -> evaluation.answer_spread of its last writing

    # ---- the recipe -------------------------------------------------------------------------------------
    def execute(self, refused: Exception | None = None) -> dict:
        """The recipe. ``refused``: the CLI's validation failed; the run is recorded as failed with it."""
        distributed.init()
        # Rank 0 alone writes the directory, so it alone claims it; every rank learns whether it did (a sum of
        # one flag), so that all of them stop or none.
        self.lock = artifacts.lock_run(self.dir) if self.main else None
        (claimed,) = distributed.total(int(self.lock is not None) if self.main else 0)
        if not claimed:
            return self.in_use()
        try:
            return self._execute(refused)
        finally:
            if self.lock is not None:
                self.lock.close()

    def in_use(self) -> dict:
        """Another process trains this directory: it is left as that process writes it."""
        message = (f"{self.dir} is being trained by another process (pid {artifacts.lock_holder(self.dir) or '?'}): "
                   "wait for it to finish, or stop it; the same command then skips or resumes this run")
        if self.sweep is not None:
            log.error("run %s not started: %s", self.name, message)
        return {"status": artifacts.FAILED, "error": {"type": "RunDirInUse", "message": message}}

    def _execute(self, refused: Exception | None) -> dict:
        from ftsweep.data import cache

        previous = artifacts.read_summary(self.dir)
        self.data_hash = cache.data_identity(self.cfg.data)
        start = resume.decide(previous, self.hash, bool(self.cfg.skip_finished), artifacts.last_checkpoint(self.dir),
                              self.data_hash)
        if previous and previous.get("config_hash") == self.hash and start.action == resume.FRESH and start.discard_checkpoints:
            log.warning("run %s: its data files changed since it ran (data hash %s, now %s): training it again",
                        self.name, previous.get("data_hash"), self.data_hash)
        if start.action == resume.SKIP:
            log.info("skip %s: finished ok with the same config (hash %s)", self.name, self.hash)
            return dict(previous, status=artifacts.SKIPPED, _previous_status=artifacts.OK)
        # A resume continues the stopped session's tracker records.
        self.resumed_trackers = (previous or {}).get("trackers") if start.checkpoint else None
        try:
            self.begin(start, previous)
            if refused is not None:
                raise refused
            with runtime.stops_as_interrupt():
                self.setup_model()
                self.setup_data()
                self.setup_adapter()
                self.open_logs()
                self.baseline()
                self.train()
                self.final_eval()
                self.write()
        except ResultsInTheWay as exc:  # nothing was written: the earlier run's summary.json stands as it was
            if self.sweep is not None:
                log.error("run %s not started: %s", self.name, exc)
            return {"status": artifacts.FAILED, "error": {"type": type(exc).__name__, "message": str(exc)}}
        except KeyboardInterrupt as exc:
            if self.summary.get("status") == artifacts.OK:
                raise  # it had finished (only tidying up was left): the stop is for what comes next, not this run
            self.stop_interrupted(exc)
            runtime.pass_on(exc)  # a scheduler's notice (SLURM time limit, preemption): its handler requeues the job
        except Exception as exc:  # noqa: BLE001 - a run records its failure instead of raising
            self.stop_failed(exc)
        finally:
            self.close()
        return self.summary

    # ---- phases, in order ---------------------------------------------------------------------------------
    def begin(self, start: resume.Start, previous: dict | None = None) -> None:
        """Clear what belongs to another config (keeping its finished results aside), then mark the run running."""
        self.resume_from = start.checkpoint
        distributed.barrier()  # every rank has read the directory before rank 0 changes it
        blocked = None
        if start.discard_checkpoints and self.main and previous and previous.get("status") == artifacts.OK:
            blocked = self.keep_replaced(previous)
        if distributed.total(int(blocked is not None))[0]:  # every rank stops, not rank 0 alone
            raise ResultsInTheWay(blocked or f"{self.dir}: rank 0 could not move the earlier run's results aside")
        if start.discard_checkpoints and self.main:
            shutil.rmtree(self.dir / artifacts.CHECKPOINTS, ignore_errors=True)
        if start.checkpoint is None and self.main:
            # A fresh start in a directory an earlier config trained (a re-run after the config changed): the
            # results it wrote at its end go now, so that none survives beside this run's (eval.num_samples=0
            # writes no samples.jsonl, and the old one would have stood as this run's).
            for name in (artifacts.SAMPLES, artifacts.TEST_SAMPLES, artifacts.HELD_OUT_LOSSES):
                (self.dir / name).unlink(missing_ok=True)
        self.summary = {"status": artifacts.RUNNING, "run_name": self.name, "config_hash": self.hash, "data_hash": self.data_hash,
                        "started_at": now_iso(), "resumed_from": start.checkpoint.name if start.checkpoint else None,
                        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}  # the device a pool gave this run
        if self.resumed_trackers:  # kept until the trackers reopen: a session killed before then loses none of them
            self.summary["trackers"] = self.resumed_trackers
        self.write_summary()

    def keep_replaced(self, previous: dict) -> str | None:
        """A finished run of another config (or of since-changed data) in this directory: its results
        (artifacts.RESULTS) move to replaced/<its config hash>/ instead of being overwritten. Reusing hydra.run.dir
        with another learning rate destroyed the first run's adapter and summary without a word. Returns why they
        could not move (everything already moved is put back, so the old run stays whole), or None."""
        moving = [self.dir / name for name in artifacts.RESULTS if (self.dir / name).exists()]
        if not moving:
            return None
        name = str(previous.get("config_hash") or "unknown")
        kept, k = self.dir / artifacts.REPLACED / name, 1
        while kept.exists():  # the same config replaced twice (A, B, A, B in one directory)
            k += 1
            kept = self.dir / artifacts.REPLACED / f"{name}-{k}"
        moved: list[Path] = []
        try:
            kept.mkdir(parents=True)
            for path in moving:
                path.rename(kept / path.name)
                moved.append(path)
        except OSError as exc:
            for path in reversed(moved):
                (kept / path.name).rename(path)
            shutil.rmtree(kept, ignore_errors=True)
            return (f"{self.dir} holds a finished run of another config that could not be moved aside to "
                    f"{artifacts.REPLACED}/ ({exc.strerror or exc}: {exc.filename or ''}); it is left as it was: free "
                    "the file, or choose another hydra.run.dir")
        what = ("its results from the earlier data" if previous.get("config_hash") == self.hash else
                f"a finished run of another config (config hash {name}, now {self.hash}) was there; its results")
        log.warning("run %s: %s are kept in %s", self.name, what, kept)
        return None

    def setup_model(self) -> None:
        """Check the targets on the meta device (no weights), then the tokenizer: bad names fail fast."""
        from ftsweep import models

        runtime.quiet_libraries()
        runtime.settle_heap()
        # The run's clock starts with the libraries loaded: their import (5-6 s on 2 CPU cores) is the process's,
        # paid once, by the first cell of a sweep the basic launcher runs in one process. Counted in that cell's
        # wall time, it made the first configuration look twice as slow as the others in the report.
        self.clock = Stopwatch()
        runtime.reset_globals(int(self.cfg.seed))
        self.model_path = models.resolve_model_path(self.cfg.model)
        self.skeleton = _meta_model(self.cfg)
        if self.skeleton is not None:
            from ftsweep import adapters

            adapters.resolve_targets(self.cfg.lora.target_modules, self.cfg.model.family, adapters.linear_module_names(self.skeleton))
        # The `auto` speed knobs become plain booleans here; the hash keeps `auto` (the loss does not depend on them).
        self.write_summary(auto=auto.resolve(self.cfg, base=copy.deepcopy(self.skeleton) if self.skeleton is not None else None))
        auto.apply(self.cfg, self.summary["auto"])
        self.tokenizer = models.load_tokenizer(self.cfg.model, self.model_path)

    def setup_data(self) -> None:
        """Rendered, masked, split - before the weights load, so bad data fails fast."""
        from ftsweep import data, training

        cfg = self.cfg
        self.bundle = data.prepare(cfg.data, cfg.task, self.tokenizer, cfg.model)
        stats = self.bundle.stats
        test = f" / {len(self.bundle.test)} test" if self.bundle.test is not None else ""
        log.info("data: %d train / %d held-out%s examples (%s)", len(self.bundle.train), len(self.bundle.val), test,
                 ", ".join(f"{k} {v}" for k, v in stats.items() if k in (*data.TRUNCATION_KEYS, "dropped_examples", "skipped_records")))
        if stats.get("skipped_records"):
            log.warning("data: %s", data.skipped_note(stats["skipped_records"], self.bundle.skipped))
        if stats.get("held_out_in_train"):
            log.warning("data: %d of the %d held-out examples are also training examples, token for token: the held-out "
                        "loss partly measures recall of them; remove the duplicate records from the data",
                        stats["held_out_in_train"], len(self.bundle.val))
        if stats.get("tested_in_train"):
            log.warning("data: %d of the %d test examples (data.test_path) are also training examples, token for token: "
                        "the test loss partly measures recall of them; remove them from one of the files",
                        stats["tested_in_train"], len(self.bundle.test))
        log.info(training.length_note(cfg, len(self.bundle.train)))
        if self.main:
            artifacts.write_manifest(self.dir, manifest.build(
                run_name=self.name, overrides=self.overrides, config=plain(cfg), config_hash=self.hash, seed=int(cfg.seed),
                sweep=self.sweep, data_fingerprint=self.bundle.fingerprint, created_at=self.summary["started_at"],
                test_fingerprint=self.bundle.test_fingerprint, held_out_fingerprint=self.bundle.held_out_fingerprint))

    def setup_adapter(self) -> None:
        """Load the base as quant says, wrap it with the PEFT adapter, count what trains."""
        from ftsweep import adapters, lm_loss, models, training

        cfg, bundle = self.cfg, self.bundle
        base = models.load_model(cfg.model, cfg.quant, cfg.task, self.tokenizer, self.model_path)
        self.model = adapters.apply(base, cfg.lora, cfg.quant, cfg.task.name, cfg.model.family, bool(cfg.train.gradient_checkpointing),
                                    total_steps=training.total_steps(cfg, len(bundle.train)))
        adapters.initialize(self.model, cfg.lora, bundle, bundle.collator)  # data-driven inits (EVA, CorDA); no-op otherwise
        self.initial_adapter = adapters.save_initial(self.model, cfg.lora, self.dir) if self.main else None  # PiSSA / OLoRA
        # No KV cache while training: it is never reused, and packed batches need the forward pass without one.
        self.model.config.use_cache = False
        if lm_loss.chunks_training(cfg.train):
            lm_loss.chunk_training_loss(self.model)
        trainable, total = models.count_params(self.model)
        estimate, source = _planned_memory(cfg, self.skeleton)
        self.write_summary(trainable_params=trainable, total_params=total, trainable_share=round(trainable / total, 6),
                           estimated_memory_bytes=estimate, config_source=source)
        self.skeleton = None  # the planner wrapped it; nothing else needs it
        # PEFT's own wording and count (print_trainable_parameters): all params include the adapter's.
        log.info("adapter %s: trainable params: %s || all params: %s || trainable%%: %.4f", cfg.lora.name, f"{trainable:,}", f"{total:,}",
                 100 * trainable / total)

    def open_logs(self) -> None:
        """metrics.jsonl, the tracker and the trainer: opened only once the run can train."""
        from ftsweep import training
        from ftsweep.tracking import Tracker

        cfg = self.cfg
        self.metrics = MetricsLog(self.dir / artifacts.METRICS, resume_step=artifacts.checkpoint_step(self.resume_from)) if self.main else NullLog()
        kept = artifacts.read_metrics(self.dir / artifacts.METRICS) if self.resume_from is not None else []  # up to the checkpoint
        if self.main:
            self.tracker = Tracker.open(cfg.logger, run_name=self.name, group=self.sweep["id"] if self.sweep else None,
                                        tags=swept_tags(self.overrides, self.swept), config=manifest.scrub(plain(cfg)),
                                        root=Path(self.sweep["dir"]) if self.sweep else self.dir, resume=self.resumed_trackers)
            self.tracker.replay(kept)
            self.write_summary(trackers=self.tracker.ids())
        self.evals = training.EvalCallback(int(cfg.eval.every_n_steps), self.evaluate, bool(cfg.eval.get("per_epoch")))
        micro = int(cfg.optim.micro_batch_size)
        self.trainer = self.build_trainer(micro, distributed.accumulation(int(cfg.optim.grad_accum), distributed.world_size()))
        if self.resume_from is not None:
            self.evals.evaluated = resume.evaluated_steps(kept)
            self.clock.add(resume.elapsed(kept))
            counts = resume.token_counts(kept)
            if counts:
                self.trainer.tokens_seen, self.trainer.tokens_total = counts

    def baseline(self) -> None:
        """The held-out loss before training: measured once, read back on resume."""
        self.baseline_loss = None
        if self.resume_from is not None:
            self.baseline_loss = resume.baseline(artifacts.read_metrics(self.dir / artifacts.METRICS))
        elif self.cfg.eval.at_start:
            self.baseline_loss = self.evals.now()["eval_loss"]

    def train(self) -> None:
        from ftsweep import training

        self.fit = training.fit(self.trainer, self.build_trainer, self.evals, self.resume_from,
                                bool(self.cfg.train.oom_retry), self.restart_logs, label=self.name)
        self.trainer = self.fit.trainer

    def final_eval(self) -> None:
        self.final = self.evals.now(final=True)
        self.test = self.test_eval() if self.bundle.test is not None else {}

    def test_eval(self) -> dict:
        """data.test_path, once, after the final held-out evaluation: what that evaluation measures, named test_*.

        The held-out set can choose among a sweep's cells (the report's best, a search's objective), which makes
        the winner's held-out score optimistic; a test file that nothing chose by gives the number to quote.
        """
        started = time.perf_counter()
        bundle = self.bundle
        loss = float(self.trainer.evaluate(eval_dataset=bundle.test, metric_key_prefix="test")["test_loss"])
        values = {"test_loss": loss, "test_perplexity": evaluation.perplexity(loss)}
        task = self.task_metrics(bundle.test, bundle.test_prompts, self.dir / artifacts.TEST_SAMPLES)
        values.update({f"test_{k}": v for k, v in task.items()})
        self.evals.seconds += time.perf_counter() - started
        log.info("test: %s", ", ".join(f"{k} {v:.4g}" for k, v in values.items()))
        return values

    def write(self) -> None:
        """The adapter (safetensors only) and the summary; checkpoints go unless kept."""
        from ftsweep import adapters

        if not self.main:
            self.summary.update(status=artifacts.OK)
            return
        adapters.save(self.model, self.dir / artifacts.ADAPTER, self.initial_adapter)
        lines = artifacts.read_metrics(self.dir / artifacts.METRICS)
        evals = [r for r in lines if r.get("split") == "eval"]
        self.write_summary(**self.results(min(evals, key=lambda r: r["eval_loss"]), accounting.mean_train_loss(lines)))
        if not self.cfg.train.keep_checkpoints:
            shutil.rmtree(self.dir / artifacts.CHECKPOINTS, ignore_errors=True)

    # ---- endings --------------------------------------------------------------------------------------------
    def stop_interrupted(self, exc: BaseException) -> None:
        if (cause := self.failure_of_another_rank()) is not None:  # torchrun stops the job after a rank failed
            self.write_summary(status=artifacts.FAILED, error=cause, finished_at=now_iso(), wall_seconds=round(self.clock.elapsed(), 2))
            return
        # The status first: a second Ctrl-C during the checkpoint leaves the run marked interrupted, and a
        # checkpoint cut short has no trainer_state.json, so the resume takes the last complete one.
        self.write_summary(status=artifacts.INTERRUPTED, error={"type": "Interrupted", "message": str(exc) or "interrupted"},
                           finished_at=now_iso(), wall_seconds=round(self.clock.elapsed(), 2))
        self.save_checkpoint_quietly()
        log.warning("run %s interrupted; checkpoint saved", self.name)

    def stop_failed(self, exc: Exception) -> None:
        from ftsweep.errors import one_line

        error = self.failure_of_another_rank() or {"type": type(exc).__name__, "message": one_line(exc)}
        self.write_summary(status=artifacts.FAILED, error=error, finished_at=now_iso(), wall_seconds=round(self.clock.elapsed(), 2))
        if not self.main and distributed.world_size() > 1 and error["type"] == "OutOfMemoryError":
            # Rank 0 alone writes the run directory, but this cause is this rank's: its exit breaks rank 0's next
            # collective ("Connection closed by peer"), or torchrun stops rank 0, and rank 0 keeps this as the cause.
            artifacts.write_summary(self.dir, self.summary)
        if self.sweep is not None:  # a single run's error is the CLI's one line
            log.error("run %s failed: %s: %s", self.name, type(exc).__name__, one_line(exc))
        if os.environ.get("FTSWEEP_DEBUG"):  # also set by the CLI when the user sets HYDRA_FULL_ERROR=1
            traceback.print_exception(exc, file=sys.stderr)

    def failure_of_another_rank(self) -> dict | None:
        """Under torchrun, rank 0's view: a failure another rank recorded while this one ran is the job's cause, and
        this rank's own error only what followed it. Nothing else writes `failed` during a job (rank 0 marked it
        running). Other ranks keep their own error, the line each prints."""
        if distributed.world_size() == 1 or not self.main:
            return None
        on_disk = artifacts.read_summary(self.dir) or {}
        return on_disk.get("error") if on_disk.get("status") == artifacts.FAILED else None

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.finish(self.summary)
        if self.metrics is not None:
            self.metrics.close()

    # ---- pieces the phases share -------------------------------------------------------------------------
    def build_trainer(self, micro_batch: int, grad_accum: int):
        """The Trainer for this run; built again with half the micro batch after an out-of-memory error."""
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        from ftsweep import adapters, training

        cfg, bundle = self.cfg, self.bundle
        args = training.training_arguments(cfg, self.dir, micro_batch, grad_accum)
        trainer = training.SweepTrainer(
            model=self.model, args=args,
            train_dataset=bundle.train, eval_dataset=bundle.val, data_collator=bundle.collator,
            processing_class=self.tokenizer, nan_check=bool(cfg.train.nan_check),
            classify=cfg.task.name == "classify", class_weights=bundle.class_weights,
            optimizers=(adapters.optimizer(self.model, cfg.lora, args), None),  # LoRA+ builds its own; None: Trainer's
        )
        trainer.remove_callback(ProgressCallback)  # it also prints every log dict and a bar per evaluation
        trainer.remove_callback(PrinterCallback)
        metrics_cb = training.MetricsCallback(self.emit, self.clock.elapsed)
        metrics_cb.trainer = trainer
        trainer.add_callback(metrics_cb)
        if cfg.train.progress:
            trainer.add_callback(training.ProgressBar(self.name, tokens_seen=lambda: trainer.tokens_seen))
        trainer.add_callback(self.evals)
        if (budget := adapters.budget_callback(cfg.lora)) is not None:
            trainer.add_callback(budget)
        self.trainer = trainer
        return trainer

    def restart_logs(self) -> None:
        """Before an out-of-memory retry: the failed attempt's checkpoints and train lines go; the baseline stays."""
        self.trainer = None
        shutil.rmtree(self.dir / artifacts.CHECKPOINTS, ignore_errors=True)
        self.metrics.close()
        self.metrics = MetricsLog(self.dir / artifacts.METRICS, resume_step=0) if self.main else NullLog()
        self.resume_from = None

    def evaluate(self, final: bool = False) -> dict:
        """One held-out evaluation: loss and perplexity, task metrics at the end (and always for classify)."""
        trainer = self.trainer
        out = trainer.evaluate()
        record = {"split": "eval", "step": trainer.state.global_step, "epoch": round(float(trainer.state.epoch or 0), 4),
                  "tokens_seen": trainer.tokens_seen, "eval_loss": float(out["eval_loss"]),
                  "perplexity": evaluation.perplexity(float(out["eval_loss"]))}
        if final and self.main and trainer.example_losses is not None:
            sums, tokens = trainer.example_losses
            artifacts.atomic_write_json(self.dir / artifacts.HELD_OUT_LOSSES, {
                "step": record["step"], "loss_sums": [round(x, 6) for x in sums], "tokens": tokens})
        if final or self.cfg.task.name == "classify":  # classification metrics are cheap: every evaluation has them
            record.update(self.task_metrics(self.bundle.val, self.bundle.eval_prompts, self.dir / artifacts.SAMPLES))
        record["time"] = round(self.clock.elapsed(), 3)
        self.emit(record)
        return record

    def task_metrics(self, dataset, prompts: list[dict], samples: Path) -> dict:
        """Classification metrics over ``dataset``, or generation metrics over the first eval.num_samples ``prompts``
        (their generations written to ``samples``)."""
        cfg = self.cfg
        if cfg.task.name == "classify":
            preds, labels = evaluation.predict_classes(self.trainer, dataset)
            if self.main:  # every held-out example with its class and the predicted one, to read the mistakes
                texts = self.tokenizer.batch_decode(list(dataset["input_ids"]))
                artifacts.write_samples(samples, [{"prompt": t, "reference": y, "prediction": p, "exact_match": p == y}
                                                  for t, y, p in zip(texts, labels, preds)])
            self.spreads[samples.name] = evaluation.answer_spread(preds, labels)
            return evaluation.classification_metrics(preds, labels, int(cfg.task.num_labels), list(cfg.task.metrics))
        prompts = prompts[: int(cfg.eval.num_samples)]
        if not prompts or not self.main:  # generation needs no other rank: rank 0 alone writes samples
            return {}
        predictions = evaluation.generate(self.model, self.tokenizer, [p["prompt"] for p in prompts], dict(cfg.eval.generation),
                                          int(cfg.eval.batch_size))
        references = [p["reference"] for p in prompts]
        artifacts.write_samples(samples, evaluation.sample_lines([p["prompt"] for p in prompts], references, predictions,
                                                                 list(cfg.task.metrics)))
        self.spreads[samples.name] = evaluation.answer_spread(predictions, references)
        return evaluation.generation_metrics(predictions, references, list(cfg.task.metrics))

    def results(self, best: dict, train_loss: float | None) -> dict:
        """summary.json's fields for a run that finished ok."""
        fit, trainer, final, stats = self.fit, self.trainer, self.final, self.bundle.stats
        return dict(
            status=artifacts.OK,
            eval_loss=final["eval_loss"],
            best_eval_loss=best["eval_loss"],
            best_step=best["step"],
            baseline_eval_loss=self.baseline_loss,
            perplexity=final["perplexity"],
            train_loss=train_loss,
            task_metrics={k: v for k, v in final.items() if k not in artifacts.EVAL_LINE_FIELDS},
            answer_spread=self.spreads.get(artifacts.SAMPLES),
            **self.test,
            steps=int(trainer.state.global_step),
            tokens_seen=int(trainer.tokens_seen),
            # The rate of this session: a resumed run's tokens_seen counts steps trained before the resume too.
            tokens_per_second=round(fit.tokens / fit.train_seconds, 2) if fit.train_seconds > 0 else None,
            padding_efficiency=round(trainer.padding_efficiency, 4) if trainer.padding_efficiency else None,
            train_seconds=round(fit.train_seconds, 2),
            eval_seconds=round(self.evals.seconds, 2),
            peak_memory_bytes=runtime.peak_memory_bytes(),
            oom_retries=fit.oom_retries,
            micro_batch_size=trainer.args.per_device_train_batch_size,
            grad_accum=trainer.args.gradient_accumulation_steps,
            # Under torchrun grad_accum is each process's share (distributed.accumulation); the batch one optimizer
            # step trains is micro x accum x processes.
            processes=distributed.world_size(),
            effective_batch=trainer.args.per_device_train_batch_size * trainer.args.gradient_accumulation_steps
            * distributed.world_size(),
            dropped_examples=stats.get("dropped_examples", 0),
            held_out_in_train=stats.get("held_out_in_train", 0),
            tested_in_train=stats.get("tested_in_train", 0),
            skipped_records=stats.get("skipped_records", 0),
            truncated_examples=stats.get("truncated", 0),
            # How truncation kept each chat's structure (ftsweep.data.tokenize.fit): whole exchanges dropped
            # oldest first, question text cut, answer cut after its header, examples too long to keep.
            turns_dropped=stats.get("turns_dropped", 0),
            prompts_cut=stats.get("prompts_cut", 0),
            responses_cut=stats.get("responses_cut", 0),
            dropped_too_long=stats.get("dropped_too_long", 0),
            device=runtime.device_name(),
            finished_at=now_iso(),
            wall_seconds=round(self.clock.elapsed(), 2),
            error=None,
        )

    def write_summary(self, **fields) -> None:
        self.summary.update(fields)
        if self.main:
            artifacts.write_summary(self.dir, self.summary)

    def emit(self, record: dict) -> None:
        """One metrics record: to metrics.jsonl first (never lost), then to trackers."""
        self.metrics.write(record)
        if self.tracker is not None:
            self.tracker.log(record)

    def save_checkpoint_quietly(self) -> None:
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


def _meta_model(cfg):
    """The model's modules on the meta device, for the target check and the memory plan; None if
    transformers cannot build the config offline (the real load then says why)."""
    from ftsweep import models

    try:
        return models.meta_model(cfg.model, cfg.task)[0]
    except Exception as exc:  # noqa: BLE001
        log.debug("no meta-device model: %s", exc)
        return None


def _planned_memory(cfg, skeleton) -> tuple[int | None, str | None]:
    """mode=plan's GPU memory estimate for this cell, so the report can set it beside the measured peak,
    and where the planner read the model's shape (a local config.json, or the YAML's arch: facts)."""
    try:
        from ftsweep import plan

        cell = plan.plan_cell(cfg, base=skeleton)
        return int(cell["memory_gib"]["total"] * plan.GIB), cell.get("config_source")
    except Exception as exc:  # noqa: BLE001 - an estimate must never fail a run
        log.debug("no memory estimate: %s", exc)
        return None, None


def swept_tags(overrides: list[str], swept: list[str] | None) -> list[str]:
    """Tracker tags: the overrides of the keys this sweep varies (all overrides of a single run)."""
    tags = [o for o in overrides if not ovr.is_under(ovr.key(o), ("hydra",))]
    if not swept:
        return tags
    return [o for o in tags if ovr.key(o) in swept]


def describe(summary: dict, run_dir: Path) -> str:
    """The one console line after a run."""
    if summary.get("status") in artifacts.HAS_RESULT:
        parts = [f"{summary['status']}", f"eval_loss {summary.get('eval_loss', float('nan')):.3f}"]
        if summary.get("baseline_eval_loss"):
            parts[-1] += f" (baseline {summary['baseline_eval_loss']:.3f})"
        for k, v in (summary.get("task_metrics") or {}).items():
            parts.append(f"{k} {v:.3f}")
        if evaluation.gives_one_answer(spread := summary.get("answer_spread")):  # those metrics then measure no skill
            parts.append(f"one answer to {spread['top_count']} of {spread['n']} held-out examples")
        if summary.get("test_loss") is not None:
            parts.append(f"test_loss {summary['test_loss']:.3f}")
        if summary.get("tokens_per_second"):
            parts.append(f"{summary['tokens_per_second']:.0f} tok/s")
        if summary.get("wall_seconds") is not None:
            parts.append(f"{summary['wall_seconds']:.1f}s")
        return " | ".join(parts) + f" -> {run_dir}"
    err = summary.get("error") or {}
    return f"{summary.get('status')}: {err.get('type')}: {err.get('message')} -> {run_dir}"
