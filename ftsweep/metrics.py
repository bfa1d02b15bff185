"""The metric registry: for every number a run reports, which way is better, its unit and its digits.

One entry per name a summary.json or metrics.jsonl line holds. The report's runs
table (header, digits, ± std or not, GiB), its plots (axis labels), the search
objective and the console line all read it, so a metric is described once.

Direction:
  MINIMIZE / MAXIMIZE  a quality metric: the report ranks by it that way unless told.
  None                 a cost or a count (tokens/s, seconds, bytes, parameters): the
                       report ranks by it only the way it is told (--maximize /
                       --minimize), lower by default, and says it guessed.

Names not in the registry are matched by family (any *loss*, rouge*, ...), in the
order of FAMILIES; anything else is an unknown metric: no direction, 4 digits.

Standard library only: the report and the CLI import this without torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MINIMIZE = "minimize"
MAXIMIZE = "maximize"
GIB = 2**30


@dataclass(frozen=True)
class Metric:
    name: str
    direction: str | None  # MINIMIZE, MAXIMIZE, or None for a cost / count
    unit: str  # of the raw value: "nats/token", "0-1", "0-100", "tokens/s", "s", "bytes", "" (none)
    digits: int  # decimals shown (after scaling)
    header: str  # the runs table's column header
    spread: bool = True  # the table shows mean ± std over seeds (quality) or the mean alone (cost)
    scale: float = 1.0  # shown value = raw / scale (bytes -> GiB)
    thousands: bool = False  # 136,448
    short: str = ""  # the unit of the shown value on the console, when not `unit` ("tok/s", "GiB" after scaling)

    @property
    def maximize(self) -> bool:
        """Higher is better. Unknown and cost metrics count as lower-is-better."""
        return self.direction == MAXIMIZE

    def format(self, value: float | None) -> str:
        return format_number(value, self.digits, self.scale, self.thousands)

    def difference(self, value: float | None) -> str:
        return format_difference(value, self.digits, self.scale)

    def console(self, value: float | None) -> str:
        """One part of the console line: 'eval_loss 3.4100', 'bleu 32.00', '2900 tok/s', '48.2 s'."""
        if self.direction is None and (self.short or self.unit):
            return f"{self.format(value)} {self.short or self.unit}"
        return f"{self.name} {self.format(value)}"

    def axis_label(self, maximize: bool) -> str:
        """'eval_loss (nats/token, lower is better)' - the direction as the report ranks it."""
        unit = f"{self.unit}, " if self.unit else ""
        return f"{self.name} ({unit}{'higher' if maximize else 'lower'} is better)"


def format_number(value: float | None, digits: int, scale: float = 1.0, thousands: bool = False) -> str:
    """Fixed formatting, so a rebuilt report is byte-identical; "—" when there is no number."""
    if value is None or not math.isfinite(value):
        return "—"
    value = value / scale
    return f"{value:,.{digits}f}" if thousands else f"{value:.{digits}f}"


def format_difference(value: float | None, digits: int, scale: float = 1.0) -> str:
    """A difference or an end of its interval, in a sentence: as format_number, but a value that would print as
    zero keeps two significant digits (0.000041, not 0.0000, where runs differ by less than the table shows), and
    a negative one that rounds to zero is not printed as -0.0000."""
    text = format_number(value, digits, scale)
    if text == "—" or float(text) != 0:
        return text
    value = value / scale
    if value == 0:
        return f"{0:.{digits}f}"
    shown = max(digits, 1 - math.floor(math.log10(abs(value))))  # 4.1e-05: log10 -4.4, floor -5, 6 decimals
    return f"{value:.{shown}f}"


def _quality(name: str, direction: str, unit: str, digits: int, header: str | None = None) -> Metric:
    return Metric(name, direction, unit, digits, header or name)


def _cost(name: str, unit: str, digits: int, header: str, **kw: Any) -> Metric:
    return Metric(name, None, unit, digits, header, spread=False, **kw)


NATS = "nats/token"
SHARE = "0-1"

REGISTRY: dict[str, Metric] = {m.name: m for m in (
    # Held-out loss (mean cross-entropy over non-masked tokens) and what derives from it.
    _quality("eval_loss", MINIMIZE, NATS, 4, "eval loss"),
    _quality("best_eval_loss", MINIMIZE, NATS, 4, "best eval loss"),
    _quality("baseline_eval_loss", MINIMIZE, NATS, 4, "baseline eval loss"),  # before training (step 0)
    _quality("perplexity", MINIMIZE, "", 2),  # exp(eval_loss)
    _quality("train_loss", MINIMIZE, NATS, 4, "train loss"),  # mean over the run
    _quality("loss", MINIMIZE, NATS, 4, "train loss"),  # a metrics.jsonl train line
    # data.test_path, evaluated once at the end (its task metrics are test_<name>, ranked as <name> is).
    _quality("test_loss", MINIMIZE, NATS, 4, "test loss"),
    _quality("test_perplexity", MINIMIZE, "", 2, "test perplexity"),
    # sft: generations on held-out prompts against their references.
    _quality("exact_match", MAXIMIZE, SHARE, 4),  # share of predictions equal to the reference (stripped)
    _quality("rougeL", MAXIMIZE, SHARE, 4),  # mean ROUGE-L F1
    _quality("bleu", MAXIMIZE, "0-100", 2),  # sacrebleu corpus BLEU
    # classify: macro averages over all num_labels classes.
    _quality("accuracy", MAXIMIZE, SHARE, 4),
    _quality("precision", MAXIMIZE, SHARE, 4),
    _quality("recall", MAXIMIZE, SHARE, 4),
    _quality("f1", MAXIMIZE, SHARE, 4),
    # Cost and size.
    _cost("trainable_params", "params", 0, "trainable params", thousands=True),
    _cost("total_params", "params", 0, "total params", thousands=True),
    _cost("trainable_share", SHARE, 6, "trainable share"),
    _cost("tokens_per_second", "tokens/s", 0, "tokens/s", short="tok/s"),  # non-pad training tokens / training seconds
    _cost("tokens_seen", "tokens", 0, "tokens seen", thousands=True),
    _cost("steps", "steps", 0, "steps"),
    _cost("padding_efficiency", SHARE, 4, "padding efficiency"),  # non-pad / all tokens fed
    _cost("wall_seconds", "s", 1, "wall time (s)"),
    _cost("train_seconds", "s", 1, "train time (s)"),
    _cost("eval_seconds", "s", 1, "eval time (s)"),
    _cost("peak_memory_bytes", "bytes", 2, "peak memory (GiB)", scale=GIB, short="GiB"),
    _cost("estimated_memory_bytes", "bytes", 2, "planned GPU memory (GiB)", scale=GIB, short="GiB"),
)}

# What each task can compute at a held-out evaluation (task.metrics picks among them).
TASK_METRICS: dict[str, tuple[str, ...]] = {"sft": ("exact_match", "rougeL", "bleu"),
                                            "classify": ("accuracy", "precision", "recall", "f1")}


def searchable(chosen) -> list[str]:
    """The summary numbers a search can optimize for a run that computes the `chosen` task metrics: the registry's
    run-level numbers, less a train line's `loss`, data.test_path's and every task metric it does not compute."""
    other = {m for metrics in TASK_METRICS.values() for m in metrics} - set(chosen)
    return [name for name in REGISTRY if name != "loss" and not name.startswith("test_") and name not in other]


# Families of names not in the registry (rouge1, eval_accuracy, val_loss, sacrebleu, ...): the first
# substring of the lower-cased name that matches decides direction, unit and digits.
FAMILIES: tuple[tuple[str, str, str, int], ...] = (
    ("loss", MINIMIZE, NATS, 4),
    ("perplexity", MINIMIZE, "", 4),
    ("ppl", MINIMIZE, "", 4),
    ("accuracy", MAXIMIZE, SHARE, 4),
    ("f1", MAXIMIZE, SHARE, 4),
    ("exact_match", MAXIMIZE, SHARE, 4),
    ("rouge", MAXIMIZE, SHARE, 4),
    ("bleu", MAXIMIZE, "0-100", 2),
    ("precision", MAXIMIZE, SHARE, 4),
    ("recall", MAXIMIZE, SHARE, 4),
)


def get(name: str) -> Metric:
    """The registry's entry for ``name``, else its family's, else an unknown metric."""
    if name in REGISTRY:
        return REGISTRY[name]
    lower = name.lower()
    for hint, direction, unit, digits in FAMILIES:
        if hint in lower:
            return Metric(name, direction, unit, digits, name)
    return Metric(name, None, "", 4, name)


def console(name: str, value: float | None) -> str:
    """How the console line after a run shows one number (ftsweep.run.describe)."""
    return get(name).console(value)


def known(name: str) -> bool:
    """Whether the registry or a family gives ``name`` a direction."""
    return get(name).direction is not None


def maximizes(name: str, maximize: bool | None = None) -> bool:
    """An explicit choice wins; else the registry decides; unknown and cost metrics are minimized."""
    return maximize if maximize is not None else get(name).maximize


def as_number(raw: Any) -> float | None:
    """JSON numbers only (bools are not metrics); NaN and inf count as missing."""
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        return None
    return float(raw) if math.isfinite(raw) else None


def summary_value(summary: dict, name: str) -> float | None:
    """A finite number for ``name`` from summary.json: top level, else task_metrics."""
    raw = summary.get(name)
    if raw is None:
        raw = (summary.get("task_metrics") or {}).get(name)
    return as_number(raw)


def worst(maximize: bool) -> float:
    """What a search objective scores a run without the metric: the worst value for the direction."""
    return float("-inf") if maximize else float("inf")  # pragma: no mutate - float() reads "INF" as "inf": case mutants are equivalent
