"""The Trainer for one run: arguments from the config, token counting, NaN stop, metrics callback."""

from __future__ import annotations

import logging
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices

from ftsweep import accounting, adapters, artifacts, distributed, lm_loss, models, runtime
from ftsweep.data.tokenize import IGNORE

log = logging.getLogger("ftsweep")


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or inf; the run stops rather than train on garbage."""


@contextmanager
def plain_loss(model):
    """AdaLoRA's forward adds its orthogonality regulariser (orth_reg_weight x ||P^T P - I||) to every loss it returns,
    evaluation included: its held-out loss would not be comparable with any other method's. Inside this block the
    weight is 0, so the loss is the plain token cross-entropy; training keeps the regulariser."""
    model = getattr(model, "module", model)  # under DDP the PEFT model is wrapped
    configs = [c for c in (getattr(model, "peft_config", None) or {}).values() if getattr(c, "orth_reg_weight", 0)]
    weights = [c.orth_reg_weight for c in configs]
    for c in configs:
        c.orth_reg_weight = 0.0
    try:
        yield
    finally:
        for c, w in zip(configs, weights):
            c.orth_reg_weight = w


class EpochSeededLengthGroupedSampler(LengthGroupedSampler):
    """Length-grouped batches whose order is a function of (seed, epoch) alone.

    transformers' own sampler draws each epoch's order from the global random state. A run resumed mid-epoch restores
    that state only after the epoch's order is drawn, so it skipped the batches of another order than the one it had
    trained on: within that epoch some examples came twice and others never, and the resumed run diverged from the
    run it continued (tokens_seen differed from the first step after the checkpoint).
    """

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:  # SweepTrainer._run_epoch calls it before each epoch's iterator
        self.epoch = int(epoch)

    def __iter__(self):
        import torch

        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=generator))


class SweepTrainer(Trainer):
    """Trainer that counts real (non-pad) tokens, stops on a non-finite loss and resumes length-grouped batches
    in the order it left them."""

    def __init__(self, *args, nan_check: bool = True, classify: bool = False, class_weights=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.nan_check = nan_check
        self.class_weights = class_weights
        if classify:
            # transformers sees the model's forward take **kwargs and assumes its loss is a sum over the items of the
            # whole accumulated batch divided by their count, so it neither divides by the accumulation steps nor
            # averages over ranks. A classification head's loss is each micro batch's mean: the step's loss and
            # gradient came out grad_accum x world size times too large (train loss 5.47 at grad_accum=4 where the
            # held-out loss was 1.35), and max_grad_norm clipped the inflated gradient.
            self.model_accepts_loss_kwargs = False
        self.example_losses: list[list] | None = None  # the last evaluation's [loss sums, tokens] per example
        self.tokens_seen = 0  # non-pad tokens fed to training
        self.tokens_total = 0  # all positions, padding included
        # Test hook: FTSWEEP_INJECT_OOM=N makes training step N (1: the first) raise a CUDA OOM, once per process,
        # so the retry path runs on machines without a GPU.
        # FTSWEEP_INJECT_OOM_RANK=R: under torchrun, only rank R runs out of memory (as one rank's longest batch does).
        only_rank = os.environ.get("FTSWEEP_INJECT_OOM_RANK")
        self.inject_oom = int(os.environ.get("FTSWEEP_INJECT_OOM", 0)) if only_rank in (None, str(distributed.rank())) else 0
        # Test hook: FTSWEEP_INJECT_NAN_RANK=R makes rank R's loss NaN at step 2 while the other ranks' stay finite
        # (one rank's batch overflowing), so the non-finite stop the ranks agree on is tested without a diverging model.
        self.inject_nan_rank = int(os.environ.get("FTSWEEP_INJECT_NAN_RANK", -1))
        self._epoch_sampler: EpochSeededLengthGroupedSampler | None = None

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is LengthGroupedSampler:
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            self._epoch_sampler = EpochSeededLengthGroupedSampler(sampler.batch_size, sampler.lengths, seed)
            return self._epoch_sampler
        return sampler

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        """The held-out loss: one mean over every predicted token of the held-out set (for classification, over every
        example), whatever the batch size and however many processes share the set.

        transformers' own evaluation loop averages per-batch means, each counted as a full batch: 20 examples in
        batches of 16 weigh the last 4 like the first 16. Under torchrun it also kept only the first rank's copies
        when it cut the gathered values to the set's size: with 7 examples over 2 ranks the loss was rank 0's 4
        alone (5.4786 where one process measured 5.5875, the same model). Here each rank sums its share (every
        world-size-th example, none repeated) and one all-reduce adds them up.
        """
        import torch
        from torch.utils.data import DataLoader, Subset

        dataset = eval_dataset if eval_dataset is not None else self.eval_dataset
        rank, world = distributed.rank(), distributed.world_size()
        share = Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset
        loader = DataLoader(share, batch_size=self.args.eval_batch_size, collate_fn=self.data_collator, shuffle=False)
        model = self.model  # not the DDP wrapper: ranks may have a batch more or less, and its forward syncs buffers
        was_training, started = model.training, time.perf_counter()
        model.eval()
        loss_sum, weight = 0.0, 0.0
        sums, counts = [], []  # per example, in the order of this rank's share (None: not available)
        try:
            with torch.no_grad(), self.accelerator.autocast():
                for inputs in loader:
                    inputs = self._prepare_inputs(inputs)
                    # A causal LM's loss in chunks of positions (ftsweep.lm_loss): the whole batch's logits were the
                    # run's memory peak. Classifiers and models whose logits are not a plain projection: as before.
                    per_example = lm_loss.example_losses(model, inputs)
                    if per_example is not None:
                        loss_sum += sum(per_example[0])
                        weight += sum(per_example[1])
                        if sums is not None:
                            sums += per_example[0]
                            counts += per_example[1]
                        continue
                    labels = inputs["labels"]
                    n = self._loss_weight(labels)
                    if not n:  # every label masked (a prompt cut at max_length): nothing to predict
                        sums = counts = None
                        continue
                    loss, outputs = self.compute_loss(model, inputs, return_outputs=True)
                    loss_sum += float(loss) * n
                    weight += n
                    if labels.dim() == 1 and sums is not None:  # a classifier: one cross-entropy per example
                        sums += torch.nn.functional.cross_entropy(outputs.logits.float(), labels, reduction="none").tolist()
                        counts += [1] * labels.numel()
                    else:
                        sums = counts = None
        finally:
            model.train(was_training)
        loss_sum, weight = distributed.total(loss_sum, weight)
        self.example_losses = distributed.interleave(sums, counts)
        metrics = {f"{metric_key_prefix}_loss": loss_sum / weight if weight else float("nan"),
                   f"{metric_key_prefix}_runtime": round(time.perf_counter() - started, 4)}
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    @staticmethod
    def _loss_weight(labels) -> float:
        """What a batch's mean held-out loss is a mean over. Causal LM: the predicted tokens (a label at i is predicted
        from position i - 1, so the first column never counts). Classification: the examples."""
        if labels.dim() == 1:
            return float(labels.numel())
        return float((labels[..., 1:] != IGNORE).sum())

    def train(self, *args, **kwargs):
        # transformers' evaluation or prediction before training (classification metrics at the baseline) prepares the
        # bare model with accelerate for evaluation only and marks it prepared. train() then found it marked and never
        # wrapped it in DistributedDataParallel: under torchrun each rank trained its own adapter on its own share of
        # every batch, gradients never averaged, and rank 0 saved its own. The mark goes (with the mixed-precision
        # forward it came with), so train() prepares the model for training.
        if self.model_wrapped is self.model and getattr(self.model, "_is_accelerate_prepared", False):
            self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)  # puts the plain forward back
            self.model._is_accelerate_prepared = False
            self.accelerator._models = [m for m in self.accelerator._models if m is not self.model]
        return super().train(*args, **kwargs)

    def _run_epoch(self, *args, **kwargs):
        # The epoch goes to the sampler here rather than through the data loader's set_epoch: accelerate's reaches a
        # sampler at most two wrappers deep, and a resumed epoch under torchrun wraps it three deep (skipped batches
        # around the per-rank shard around the batch sampler). There the order of epoch 0 was drawn again, and the
        # resumed run trained on other batches than the run it continued.
        if self._epoch_sampler is not None:
            self._epoch_sampler.set_epoch(kwargs["epoch"])
        return super()._run_epoch(*args, **kwargs)

    def _save_checkpoint(self, model, trial):
        folder = Path(self.args.output_dir) / f"{artifacts.CHECKPOINT_PREFIX}{self.state.global_step}"
        with adapters.full_size_checkpoint(self.model, folder, write=self.args.should_save):
            super()._save_checkpoint(model, trial)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        adapters.restore_budget(self.model, Path(resume_from_checkpoint))

    def training_step(self, model, inputs, num_items_in_batch=None):
        if self.inject_oom == self.state.global_step + 1:
            import torch

            os.environ.pop("FTSWEEP_INJECT_OOM", None)  # once per process: the retry must succeed
            self.inject_oom = 0
            raise torch.OutOfMemoryError(f"CUDA out of memory (injected by FTSWEEP_INJECT_OOM at step {self.state.global_step + 1})")
        loss = super().training_step(model, inputs, num_items_in_batch)
        if self.inject_nan_rank == distributed.rank() and self.state.global_step == 1:
            loss = loss * float("nan")
        value = float(loss) if self.nan_check else 0.0
        # One all-reduce per micro batch under torchrun: the job's token counts, and whether any rank's loss is not
        # finite. The ranks then all stop: a rank stopping alone broke the others' next all-reduce, and rank 0
        # recorded gloo's "Connection closed by peer" instead of the cause.
        seen, total, not_finite = distributed.total(*accounting.batch_tokens(inputs), int(not math.isfinite(value)))
        self.tokens_seen += seen
        self.tokens_total += total
        if not_finite:
            shown = value if not math.isfinite(value) else "not finite on another rank"
            raise NonFiniteLoss(f"training loss is {shown} at step {self.state.global_step + 1}; lower optim.lr or check the data")
        return loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if not model.training:
            with plain_loss(model):  # evaluation: the token cross-entropy alone, for every method alike
                return self._compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return self._compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def _compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        # Class weights shape training only: the held-out loss is the plain cross-entropy, so cells of a sweep over
        # task.class_weights are compared on one measure.
        if self.class_weights is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        import torch

        labels = inputs.pop("labels")
        outputs = model(**inputs)
        weight = torch.tensor(self.class_weights, dtype=outputs.logits.dtype, device=outputs.logits.device)
        loss = torch.nn.functional.cross_entropy(outputs.logits, labels, weight=weight)
        return (loss, outputs) if return_outputs else loss

    @property
    def padding_efficiency(self) -> float | None:
        return accounting.padding_efficiency(self.tokens_seen, self.tokens_total)

    def log_pending(self) -> None:
        """Log the mean loss of the steps since the last train line, as the training loop does at a logging step.
        A stop between steps ends the run there, and its checkpoint needs a line at that step (see MetricsCallback)."""
        steps = self.state.global_step - self._globalstep_last_logged
        if steps > 0:
            loss = self._tr_loss.item() / steps
            self._tr_loss -= self._tr_loss
            self._total_loss_scalar += loss * steps
            self._globalstep_last_logged = self.state.global_step
            self.log({"loss": loss, "learning_rate": self._get_learning_rate()})


class MetricsCallback(TrainerCallback):
    """Turns Trainer logs into metrics.jsonl lines (and tracker calls) with our key names."""

    def __init__(self, emit: Callable[[dict], None], clock: Callable[[], float]):
        self.emit = emit
        self.clock = clock
        self.trainer: SweepTrainer | None = None
        self._last = (time.perf_counter(), 0)

    def on_step_end(self, args, state, control, **kwargs):
        # A train line at every step a checkpoint is taken or training ends (the last step, a stop), whatever
        # train.logging_steps: a resumed run restores its token count from the line at its checkpoint and goes on
        # from there, and the run's mean train loss counts every step. Before, the steps after the last line were
        # in no line: a run resumed from step 10 with lines every 3 steps counted 330 tokens fewer, and its
        # step-12 line averaged 2 steps where the uninterrupted run's averaged 3.
        if control.should_save or control.should_training_stop:
            control.should_log = True

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = dict(logs or {})
        if "loss" not in logs:  # eval and end-of-train logs are handled elsewhere
            return
        t = self.trainer
        now, seen = time.perf_counter(), t.tokens_seen
        dt = now - self._last[0]
        record = {
            "split": "train",
            "step": state.global_step,
            "epoch": round(float(state.epoch or 0), 4),
            "tokens_seen": seen,
            "loss": float(logs["loss"]),
            "learning_rate": float(logs.get("learning_rate", 0.0)),
            "grad_norm": float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
            "tokens_per_second": round((seen - self._last[1]) / dt, 2) if dt > 0 else None,
            "padding_efficiency": round(t.padding_efficiency, 4) if t.padding_efficiency else None,
            "time": round(self.clock(), 3),
        }
        self._last = (now, seen)
        self.emit(record)


class EvalCallback(TrainerCallback):
    """Every eval.every_n_steps and/or at each epoch's end: evaluate (Trainer's own eval is left off).

    Every evaluation of the run (the baseline and the final one too) goes through ``now``,
    which times it: evaluation inside the training loop is not training time.
    The last step is left to the run's final evaluation, so no step is evaluated twice.
    An evaluation comes after its step and before that step's checkpoint, so a checkpoint holds the random state
    from after it (each evaluation's data loader draws a seed from the global random state), whether it was
    saved on schedule or by a stop.
    """

    def __init__(self, every: int, evaluate: Callable[..., dict], per_epoch: bool = False):
        self.every = every
        self.evaluate = evaluate
        self.per_epoch = per_epoch
        self.done_at = -1
        self.evaluated: set[int] = set()  # a resumed run: the steps its record has an evaluation of
        self.seconds = 0.0  # spent evaluating, baseline and final included

    def now(self, final: bool = False) -> dict:
        started = time.perf_counter()
        try:
            return self.evaluate(final=final)
        finally:
            self.seconds += time.perf_counter() - started

    def due(self, state) -> bool:
        """Whether the schedule evaluates after the step just completed. The last step of an epoch is the one whose
        end makes ``state.epoch`` whole (transformers sets it to epoch + micro steps done / micro steps per epoch)."""
        at_epoch_end = self.per_epoch and state.epoch is not None and float(state.epoch).is_integer()
        at_interval = bool(self.every) and state.global_step % self.every == 0
        return 0 < state.global_step < state.max_steps and (at_interval or at_epoch_end)

    def _evaluate_at(self, state) -> None:
        self.done_at = state.global_step
        self.now()

    def on_train_begin(self, args, state, control, **kwargs):
        self.done_at = -1  # a retry after an out-of-memory error starts again from step 0

    def on_step_begin(self, args, state, control, **kwargs):
        # A stop inside a step skips the evaluation due after it (StopAtStepEnd), so that checkpoint holds the random
        # state from before that evaluation. The resumed run evaluates there first, where the run never stopped did:
        # the curve has that point, and the steps after it draw the same dropout masks. transformers restores the
        # checkpoint's random state before this first step begins.
        if state.global_step != self.done_at and self.due(state) and state.global_step not in self.evaluated:
            self._evaluate_at(state)

    def on_step_end(self, args, state, control, **kwargs):
        # should_training_stop: a stop was asked for during this step (StopAtStepEnd); the user waits for the exit.
        if state.global_step != self.done_at and self.due(state) and not control.should_training_stop:
            self._evaluate_at(state)


SAME_STOP_S = 1.0  # a second signal sooner than this after the first is the same stop


class StopAtStepEnd(TrainerCallback):
    """Ctrl-C or SIGTERM during training stops the run at a step boundary, with the random state of that boundary.

    An interrupt raised where the signal lands leaves a checkpoint that is not a step boundary: inside a step, the
    step's random draws (dropout) already spent with the step undone, or the optimizer stepped with `global_step` not
    yet counted; between steps, part of the evaluation's draws spent (each evaluation's data loader draws a seed
    from the global random state) and the rest not. The resumed run then trains differently from one never stopped.
    So a first signal only asks for a stop: inside a step, the step completes (its loss is logged, its checkpoint is
    due) and the evaluation after it is skipped (the resumed run runs it first: EvalCallback); between steps, the
    evaluation or checkpoint under way completes and the next step does not begin. ``fit`` raises the interrupt
    once `train()` returns. A second signal stops at once, unless it comes within SAME_STOP_S of the first: a
    launcher passing the same stop on (torchrun sends each worker its own SIGINT after the terminal's), not a person
    asking twice. A scheduler's notice (runtime.NOTICE_SIGNALS: submitit's SIGUSR2 before a SLURM time limit) is such
    a stop too.

    Over several processes (torchrun) a stop always waits for a step's end, where the ranks agree (one all-reduce of
    a flag per step) to stop after the same step: a rank that stopped alone, between steps, left the others waiting
    in the next step's gradient all-reduce, and the whole job hung.
    """

    def __init__(self, label: str, before_stop: Callable[[], None] = lambda: None):
        self.label = label
        self.before_stop = before_stop  # between steps: the train line of the steps since the last one
        self.asked: int | None = None  # the signal that asked for a stop at a step boundary
        self._in_step = False
        self._done = 0  # optimizer steps complete
        self._ranks = distributed.world_size()
        self._asked_at = 0.0

    def handler(self, signum, frame):
        now = time.monotonic()
        if self.asked is not None and now - self._asked_at < SAME_STOP_S:
            return  # the same stop, passed on: torchrun signals each worker again after the terminal did
        if self.asked is not None:
            raise runtime.interrupt(signum)
        self.asked, self._asked_at = signum, now
        name = runtime.signal_name(signum)
        again = f"press {name} again" if signum == signal.SIGINT else f"send {name} again"
        when = (f"when step {self._done + 1} is complete" if self._in_step or self._ranks > 1
                else f"before step {self._done + 1}")
        log.warning("%s: stopping %s (%s to stop at once)", self.label, when, again)

    def raise_if_asked(self) -> None:
        if self.asked is not None:
            raise runtime.interrupt(self.asked)

    def on_step_begin(self, args, state, control, **kwargs):
        if self.asked is not None and self._ranks == 1:  # asked between steps: the next one does not begin
            self.before_stop()
            self.raise_if_asked()
        self._done, self._in_step = state.global_step, True

    def on_step_end(self, args, state, control, **kwargs):
        self._done, self._in_step = state.global_step, False
        if self._ranks > 1 and distributed.total(int(self.asked is not None))[0]:
            self.asked = self.asked or signal.SIGTERM  # another rank was signalled (the launcher passes SIGTERM on)
        if self.asked is not None:
            control.should_training_stop = True


@dataclass
class Fit:
    trainer: "SweepTrainer"
    output: Any  # transformers' TrainOutput
    oom_retries: int
    train_seconds: float  # wall time of trainer.train() less the evaluations inside it
    tokens: int  # real tokens trained on in that time (a resumed run: since the resume)


def fit(trainer: "SweepTrainer", rebuild: Callable[[int, int], "SweepTrainer"], evals: EvalCallback,
        resume_from: Path | None, oom_retry: bool, on_retry: Callable[[], None], label: str = "run") -> Fit:
    """Train; on a CUDA out-of-memory error retry once from step 0 with the same effective batch.

    8 micro x 2 accum = 4 micro x 4 accum = 16 sequences/step: halving the micro batch halves
    activation memory and keeps the optimisation the same. The retry starts where the first attempt did: the
    trainable weights and every random generator go back to their state before it, so the run is the one it would
    have been at the smaller micro batch (an out-of-memory error can come at any step, with a long batch).
    ``on_retry`` lets the run drop what the failed attempt wrote (checkpoints, train lines) before ``rebuild``
    makes the new trainer.
    Ctrl-C or SIGTERM during training raises KeyboardInterrupt at a step boundary (StopAtStepEnd).
    """
    import torch

    started, evals_before, retries = time.perf_counter(), evals.seconds, 0
    model = trainer.model
    # What a retry goes back to; a torchrun job never retries (below), so it keeps no copy.
    start = (adapters.trainable_state(model), runtime.random_state()) if oom_retry and distributed.world_size() == 1 else None
    while True:
        try:
            stop, tokens_before = StopAtStepEnd(label, before_stop=trainer.log_pending), trainer.tokens_seen
            trainer.callback_handler.callbacks.insert(0, stop)  # first: the evaluation after a stopped step is skipped
            try:
                with runtime.stop_signals(stop.handler):
                    output = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
            finally:
                trainer.remove_callback(stop)
            stop.raise_if_asked()
            seconds = time.perf_counter() - started - (evals.seconds - evals_before)
            return Fit(trainer, output, retries, seconds, trainer.tokens_seen - tokens_before)
        except torch.OutOfMemoryError as exc:
            micro, accum = trainer.args.per_device_train_batch_size, trainer.args.gradient_accumulation_steps
            if distributed.world_size() > 1:
                # The other ranks are inside this step's gradient exchange, waiting for this one: a retry alone hung
                # the job until the collective timed out. Exiting lets torchrun stop them at once.
                raise torch.OutOfMemoryError(
                    f"rank {distributed.rank()} of {distributed.world_size()} ran out of GPU memory at step "
                    f"{trainer.state.global_step + 1}; a torchrun job cannot retry on one rank: lower "
                    f"optim.micro_batch_size (now {micro}) and raise optim.grad_accum to keep the batch") from exc
            if not oom_retry or retries or micro == 1:
                raise
            micro, accum, retries = micro // 2, accum * 2, 1
            log.warning("out of memory: retrying from the start with micro batch %d x accumulation %d", micro, accum)
            del trainer
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            on_retry()
            adapters.restore_trainable(model, start[0])
            resume_from = None
            trainer = rebuild(micro, accum)
            runtime.set_random_state(start[1])  # after the new Trainer, which seeds the generators as it is built


def length_note(cfg, n_train: int) -> str:
    """One line that says what sets the training length, e.g. for epochs:
    `training length: 2 epochs x 8 steps (64 examples / 8 per step) = 16 steps`."""
    per_step, per_epoch = sequences_per_step(cfg), steps_per_epoch(cfg, n_train)
    if cfg.optim.max_steps > 0:
        return (f"training length: optim.max_steps={int(cfg.optim.max_steps)} steps; it wins over optim.epochs={cfg.optim.epochs:g} "
                f"({per_epoch} steps per epoch of {n_train} examples); set optim.max_steps=-1 to train by epochs")
    return (f"training length: {cfg.optim.epochs:g} epoch(s) x {per_epoch} steps ({n_train} examples / {per_step} per step) "
            f"= {total_steps(cfg, n_train)} steps")


def sequences_per_step(cfg) -> int:
    return int(cfg.optim.micro_batch_size) * int(cfg.optim.grad_accum)


def steps_per_epoch(cfg, n_train: int) -> int:
    """ceil(examples / (micro x accum)): 1000 examples / (8 x 1) = 125 steps."""
    return math.ceil(n_train / sequences_per_step(cfg))


def total_steps(cfg, n_train: int) -> int:
    """Optimizer steps of the run: max_steps, or epochs x steps per epoch."""
    if cfg.optim.max_steps > 0:
        return int(cfg.optim.max_steps)
    return max(1, math.ceil(float(cfg.optim.epochs) * steps_per_epoch(cfg, n_train)))


def training_arguments(cfg, run_dir: Path, micro_batch: int, grad_accum: int) -> TrainingArguments:
    import torch

    o, t = cfg.optim, cfg.train
    warmup: float = o.warmup_steps if o.warmup_steps > 0 else o.warmup_ratio  # a float < 1 is a ratio
    on_gpu = torch.cuda.is_available()
    precision = models.mixed_precision(cfg.model, cfg.quant, on_gpu, on_gpu and torch.cuda.is_bf16_supported())
    return TrainingArguments(
        output_dir=str(run_dir / artifacts.CHECKPOINTS),
        per_device_train_batch_size=micro_batch,
        per_device_eval_batch_size=int(cfg.eval.batch_size),
        gradient_accumulation_steps=grad_accum,
        learning_rate=float(o.lr),
        lr_scheduler_type=o.scheduler,
        warmup_steps=warmup,
        weight_decay=float(o.weight_decay),
        max_steps=int(o.max_steps) if o.max_steps > 0 else -1,
        num_train_epochs=float(o.epochs),
        max_grad_norm=float(o.max_grad_norm),
        optim=o.optimizer,
        logging_steps=int(t.logging_steps),
        # A diverged step is logged as NaN/inf, as it is. transformers' default drops it from the logged mean,
        # so a run with nan_check=false would show a loss of 0.0 that looks fine.
        logging_nan_inf_filter=False,
        eval_strategy="no",  # evaluation is driven by EvalCallback so step 0 and the end are included
        save_strategy="steps",
        save_steps=int(t.save_steps),
        save_total_limit=int(t.save_total_limit),
        seed=int(cfg.seed),
        data_seed=int(cfg.seed),
        report_to="none",  # trackers are driven by ftsweep.tracking, one run per sweep cell
        use_cpu=not on_gpu,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        tf32=bool(t.tf32) if on_gpu else None,
        use_liger_kernel=bool(t.liger_kernel),
        remove_unused_columns=False,
        disable_tqdm=True,  # ProgressBar below draws the one bar we want
        dataloader_num_workers=0,
        # Length grouping (transformers 5 name): batches of similar lengths, so less padding.
        train_sampling_strategy="group_by_length" if cfg.data.group_by_length else "random",
        save_only_model=False,
        # Under torchrun every trainable tensor of an adapter takes part in each forward pass; looking for unused
        # ones costs a walk of the autograd graph per step (and a warning from torch each run).
        ddp_find_unused_parameters=False,
    )


def _clock(seconds: float) -> str:
    """0:12, 3:04, 1:02:03: an ETA as a person reads it."""
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


class ProgressBar(TrainerCallback):
    """The console during training, replacing the Trainer's, which also prints every log dict and a bar per evaluation.

    On a terminal: one tqdm bar over optimizer steps with the latest loss. Where stdout is not a terminal
    (a log file, CI, nohup, SLURM): one line per logging step and per evaluation, as the Trainer's log lines,

        lora.r=8 | step 10/150 | loss 3.210 | lr 2.9e-04 | 4530 tok/s | ETA 0:12

    so a log read later shows how the run went. `tokens_seen` reads the trainer's count of real tokens.
    """

    def __init__(self, label: str, tokens_seen: Callable[[], int] | None = None, stream=None, lines: bool | None = None):
        import sys

        self.label = label
        self.tokens_seen = tokens_seen
        self.stream = stream or sys.stdout
        self.lines = (not self.stream.isatty()) if lines is None else lines
        self.bar = None
        self._start: tuple[float, int] = (0.0, 0)  # (time, step) when training (re)started, for the ETA
        self._last: tuple[float, int] = (0.0, 0)  # (time, tokens) at the previous line, for tokens/s

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        now = time.perf_counter()
        self._start = (now, state.global_step)
        self._last = (now, self.tokens_seen() if self.tokens_seen else 0)
        # disable=None: the bar only on a terminal (tqdm checks stderr, where it draws).
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.label, unit="step", dynamic_ncols=True, leave=False,
                        disable=None)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def _print(self, text: str) -> None:
        print(f"{self.label} | {text}", file=self.stream, flush=True)

    def line(self, state, logs: dict) -> str:
        """`step 10/150 | loss 3.210 | lr 2.9e-04 | 4530 tok/s | ETA 0:12` for one logging step."""
        now = time.perf_counter()
        parts = [f"step {state.global_step}/{state.max_steps}", f"loss {float(logs['loss']):.4g}"]
        if logs.get("learning_rate") is not None:
            parts.append(f"lr {float(logs['learning_rate']):.1e}")
        if self.tokens_seen is not None:
            seen = self.tokens_seen()
            dt = now - self._last[0]
            if dt > 0:
                parts.append(f"{(seen - self._last[1]) / dt:.0f} tok/s")
            self._last = (now, seen)
        done = state.global_step - self._start[1]
        if 0 < done and state.global_step < state.max_steps:
            parts.append(f"ETA {_clock((now - self._start[0]) / done * (state.max_steps - state.global_step))}")
        return " | ".join(parts)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "loss" not in logs:
            return
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{logs['loss']:.3f}")
        if self.lines:
            self._print(self.line(state, logs))

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if self.lines and metrics and "eval_loss" in metrics:
            # The baseline runs before training starts, when the step total is not known yet.
            step = f"step {state.global_step}/{state.max_steps}" if state.max_steps else f"step {state.global_step}"
            self._print(f"{step} | eval loss {float(metrics['eval_loss']):.4g}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
