"""What a re-run of a cell does: skip it, resume it from a checkpoint, or start it afresh.

The decision is a pure function of what the run directory already holds (the
previous summary, the newest complete checkpoint) and the new config's hash,
so it is tested without training. What a resumed run restores from its own
metrics.jsonl (token counts, the baseline) lives here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ftsweep import accounting, artifacts

SKIP = "skip"  # finished ok with the same config: summary.json is left alone
RESUME = "resume"  # same config, a complete checkpoint exists: training continues from it
FRESH = "fresh"  # nothing to continue: train from step 0


@dataclass(frozen=True)
class Start:
    action: str  # SKIP, RESUME or FRESH
    checkpoint: Path | None = None  # the checkpoint a RESUME continues from
    discard_checkpoints: bool = False  # checkpoints/ belong to another config: remove them first


def decide(previous: dict | None, config_hash: str, skip_finished: bool, checkpoint: Path | None,
           data_hash: str | None = None) -> Start:
    """The one rule for a cell that may have run before.

    Same config (equal hash) and finished ok: skip when skip_finished. Same config with
    a checkpoint: resume. A different config never reuses anything of the old one. The
    data's files count as config: a data.path file edited since the run (records fixed or
    added) makes another run, which a skip would have hidden behind the old results (a
    summary from before data hashes were recorded counts as the same data).
    """
    same_data = previous is None or previous.get("data_hash") in (None, data_hash) or data_hash is None
    same_config = previous is not None and previous.get("config_hash") == config_hash and same_data
    if same_config and skip_finished and previous.get("status") == artifacts.OK:
        return Start(SKIP)
    if same_config and checkpoint is not None:
        return Start(RESUME, checkpoint)
    return Start(FRESH, discard_checkpoints=previous is not None and not same_config)


def token_counts(metrics: list[dict]) -> tuple[int, int] | None:
    """(tokens seen, all tokens fed) at the last train line, so tokens/s and padding
    efficiency after a resume count the steps before it too. All tokens = seen / efficiency."""
    train = [r for r in metrics if r.get("split") == "train"]
    if not train:
        return None
    seen = int(train[-1].get("tokens_seen") or 0)
    return seen, accounting.restored_total(seen, train[-1].get("padding_efficiency"))


def baseline(metrics: list[dict]) -> float | None:
    """The held-out loss before training: the eval line at step 0."""
    for r in metrics:
        if r.get("split") == "eval" and r.get("step") == 0:
            return r["eval_loss"]
    return None


def evaluated_steps(metrics: list[dict]) -> set[int]:
    """The steps the record has a held-out evaluation of (0: the baseline)."""
    return {int(r["step"]) for r in metrics if r.get("split") == "eval"}


def elapsed(metrics: list[dict]) -> float:
    """Seconds the run had taken up to its checkpoint: the time of its last kept line (train lines reach the
    checkpoint's step). A resumed run's clock goes on from there, so its line times keep rising and its
    wall_seconds count the sessions before."""
    return max((float(r["time"]) for r in metrics if r.get("time") is not None), default=0.0)
