"""What may confound a comparison of the runs, said in the report's overview, one line each.

Each function returns [] or one line (a list of strings and inline code) for the overview's bullets:

    training_length     the ok runs trained for different numbers of steps or tokens (a data.n sweep at one epoch)
    repeated_data       a data.n sweep at equal steps went over its smaller sets more times (optim.max_steps)
    held_out_tokens     they scored the held-out examples as different tokens (a data.max_length or tokenizer sweep)
    rank_scale          a rank sweep at one lora.alpha also swept LoRA's update scale alpha / r
    variant_scale       rsLoRA beside other variants at one rank and alpha: its update scale is alpha / sqrt(r)
    duplicates          held-out or test examples that were also training examples
    one_answer          runs that gave one answer to nearly every held-out example: their task metrics measure no skill
    overfitting         runs whose held-out loss ended well above its lowest: the adapter is the last step's
"""

from __future__ import annotations

import math

from ftsweep.artifacts import SAMPLES, SUMMARY
from ftsweep.evaluation import gives_one_answer
from ftsweep.metrics import as_number

from . import repro
from .collect import available_metrics
from .factors import DATA_SIZE, SWEEP, Design
from .render import Code, join_code


def lines(design: Design, metric: str, best: list[int] = ()) -> list:
    """``best``: the runs of the best configuration (indices into design.runs)."""
    return [*training_length(design, metric), *repeated_data(design), *held_out_tokens(design, metric), *rank_scale(design),
            *variant_scale(design), *duplicates(design), *one_answer(design, best), *overfitting(design)]


def training_length(design: Design, metric: str) -> list:
    """When the ok runs trained for different numbers of optimizer steps or tokens, a difference in the metric is
    partly one of training length: at `optim.epochs=1` a data.n sweep's larger sets also train longer, a
    micro-batch sweep at fixed `optim.max_steps` sees more tokens. Said, with the swept parameters that set it."""
    length = {i: (int(as_number(run.summary.get("steps"))), as_number(run.summary.get("tokens_seen")))
              for i, run in enumerate(design.runs) if run.ok and as_number(run.summary.get("steps")) is not None}
    if len(length) < 2:
        return []
    steps = [s for s, _ in length.values()]
    tokens = [t for _, t in length.values()]
    if None in tokens:  # a summary without tokens_seen: compare the steps alone
        length = {i: (s, None) for i, (s, _) in length.items()}
        tokens = []
    same_steps = min(steps) == max(steps)
    # Equal steps can differ a little in tokens (lengths of the sampled examples): 10 % is a real difference.
    if same_steps and (not tokens or max(tokens) <= 1.1 * min(tokens)):
        return []
    facts = {i: {"length": value} for i, value in length.items()}
    setting = [f.name for f in design.factors if f.name != SWEEP and repro.follows(design, list(length), facts, "length", [f.name])]
    thousands = bool(tokens) and max(tokens) >= 10_000  # one unit for both ends: 7.0 k to 56.8 k
    span = f"{steps[0]} optimizer steps each" if same_steps else f"{min(steps)} to {max(steps)} optimizer steps"
    if tokens:
        span += ", " + " to ".join(f"{t / 1000:,.1f} k" if thousands else f"{int(t):,}" for t in (min(tokens), max(tokens)))
        span += " tokens"
    line = [f"The ok runs trained for different lengths ({span})", *_set_by(setting, "; ", " it", "")]
    line.append(f": a difference in {metric} is partly one of training length. The loss curves compare the runs at "
                + ("equal tokens seen." if same_steps else "equal steps and tokens seen; "))
    if not same_steps:
        line += [Code("optim.max_steps"), " trains every run for the same number of steps."]
    return [line]


def repeated_data(design: Design) -> list:
    """A data.n sweep at equal optimizer steps (optim.max_steps) trains every set as long, so the smaller sets are
    gone over more times: on the built-in data, 50 steps of 8 examples are 4 passes over data.n=100 and 0.4 over
    1000. The data-size curve then says what more distinct examples give at a fixed number of steps, not at a
    fixed number of epochs. Passes = steps x effective batch / data.n (dropped examples aside). Not said when the
    steps differ: training_length says that."""
    passes: dict[float, list[float]] = {}
    steps = set()
    for i, run in enumerate(design.runs):
        level = design.levels[i].get(DATA_SIZE)
        n, step, batch = (level.number if level else None, as_number(run.summary.get("steps")),
                          as_number(run.summary.get("effective_batch")))
        if run.ok and n and step and batch:
            passes.setdefault(n, []).append(step * batch / n)
            steps.add(step)
    if len(passes) < 2 or len(steps) > 1:
        return []
    mean = {n: sum(p) / len(p) for n, p in sorted(passes.items())}
    # Said when the smallest set was gone over more than once, and the sets' passes differ by half again or more
    # (not sets of about one size; not 0.08 and 0.008 passes, where nothing repeats).
    if mean[min(mean)] <= 1 or max(mean.values()) < 1.5 * min(mean.values()):
        return []
    first, *rest = mean.items()
    passes_text = f"{first[0]:g} examples {first[1]:.2g} passes, " + ", ".join(f"{n:g} examples {p:.2g}" for n, p in rest)
    return [["At equal optimizer steps (", f"{int(next(iter(steps)))} each", "), the smaller ", Code(DATA_SIZE),
             f" sets were gone over more times ({passes_text}; passes = steps × effective batch ÷ data.n): the "
             "data-size comparison is one at a fixed number of steps, with the small sets repeated. ",
             Code("optim.max_steps=-1"), " trains every set for ", Code("optim.epochs"), " instead."]]


def held_out_tokens(design: Design, metric: str) -> list:
    """When the runs scored the held-out examples as different tokens (another data.max_length, template, system
    prompt or tokenizer), their held-out loss is a mean over different tokens: said, with what to compare instead.
    The generation metrics score the same reference texts in every run."""
    if metric.startswith("test_") or not ("loss" in metric or "perplexity" in metric):
        return []  # a test-set number, or one per example or per text (accuracy, ROUGE): not a mean over tokens
    fact = next((f for f in repro.facts(design)[0] if f.name == repro.HELD_OUT and f.confounder), None)
    if fact is None:
        return []
    generated = [m for m in ("rougeL", "exact_match", "bleu") if m in available_metrics(design.runs)]
    line = ["The runs scored the held-out examples as different tokens", *_set_by(list(fact.setting), " (", " them", ")")]
    line.append(f": {metric} averages over other tokens in each, so it compares those runs only roughly.")
    if generated:
        line += [" The generation metrics score the same reference texts in every run: ", Code(f"--metric {generated[0]}"),
                 " ranks by one."]
    return [line]


def _set_by(names: list[str], before: str, what: str, after: str) -> list:
    """The swept parameters that determine a difference, if any: '; `data.n` sets it', ' (`a`, `b` set them)'."""
    if not names:
        return []
    return [before, *join_code(names), " sets" if len(names) == 1 else " set", what, after]


# PEFT methods whose update is scaled by alpha / r (rsLoRA's alpha / sqrt(r) is meant to change with the rank).
ALPHA_OVER_R = ("lora", "loha", "lokr")


def _scaled_adapters(design: Design) -> list[tuple[float, float, bool]]:
    """(r, alpha, use_rslora) of each ok run whose PEFT method scales its update by alpha over the rank."""
    out = []
    for run in design.runs:
        lora = run.config().get("lora") if run.ok else None
        if not isinstance(lora, dict) or lora.get("method") not in ALPHA_OVER_R:
            continue
        r, alpha = as_number(lora.get("r")), as_number(lora.get("alpha"))
        if r and alpha:
            out.append((float(r), float(alpha), bool(lora.get("use_rslora"))))
    return out


def rank_scale(design: Design) -> list:
    """A rank sweep at one lora.alpha also sweeps the update scale alpha / r (PEFT multiplies B @ A by it): at
    alpha 16, 2 at r=8 and 1 at r=16. Part of what the rank did is then a step-size change; said, with the sweep
    that holds the scale (alpha = r, an interpolation Hydra resolves per cell)."""
    if "lora.r" not in {f.name for f in design.factors}:
        return []
    shapes = {(int(r), alpha) for r, alpha, rslora in _scaled_adapters(design) if not rslora}
    ranks, alphas = sorted({r for r, _ in shapes}), {a for _, a in shapes}
    if len(ranks) < 2 or len(alphas) != 1:
        return []
    (alpha,) = alphas
    scales = " to ".join(f"{alpha / r:g}" for r in (ranks[0], ranks[-1]))
    return [[Code("lora.alpha"), f" stayed {alpha:g} while ", Code("lora.r"), f" went from {ranks[0]} to {ranks[-1]}, so "
             f"the update scale alpha/r went from {scales}: part of what the rank did is a change of step size. "
             "To compare ranks at one scale, add ", Code("'lora.alpha=${lora.r}'"), " to the sweep (alpha/r = 1 at every rank)."]]


def variant_scale(design: Design) -> list:
    """Runs at one lora.r and lora.alpha, some with rsLoRA: it multiplies B @ A by alpha / sqrt(r), the others by
    alpha / r (5.66 against 2 at r=8, alpha 16). Adam's steps do not grow with the gradient, so a k times larger
    scale moves the product about as a k times larger learning rate would. On the built-in data at lr 3e-4,
    rsLoRA beat LoRA by 0.42 (4.325 against 4.745); LoRA at 2.83 x 3e-4 beat rsLoRA (4.266). Said, with how to
    compare at a matched step."""
    formulas: dict[tuple[float, float], set[bool]] = {}
    for r, alpha, rslora in _scaled_adapters(design):
        formulas.setdefault((r, alpha), set()).add(rslora)
    mixed = sorted(shape for shape, rs in formulas.items() if len(rs) > 1)
    if not mixed:
        return []
    r, alpha = mixed[0]
    line = ["At the same ", Code("lora.r"), " and ", Code("lora.alpha"), f", rsLoRA scales its update by alpha/√r "
            f"({alpha / math.sqrt(r):.3g} at r={r:g}, alpha {alpha:g}) and the other variants by alpha/r "
            f"({alpha / r:.3g}): with Adam a larger scale acts much like a larger learning rate, so part of what the "
            "variant did is a change of step size. "]
    if "optim.lr" in {f.name for f in design.factors}:
        return [line + [Code("optim.lr"), " is swept too: compare each variant at its best learning rate (the runs "
                        "table) rather than by its mean over the learning rates."]]
    return [line + ["Sweep ", Code("optim.lr"), " with the variants and compare each at its best learning rate."]]


def duplicates(design: Design) -> list:
    """Held-out (or test) examples that are training examples too, token for token: those numbers partly measure
    recall of them."""
    out = []
    for key, which, numbers in (("held_out_in_train", "held out", "held-out"), ("tested_in_train", "tested on", "test")):
        leaky = [run for run in design.runs if run.ok and (as_number(run.summary.get(key)) or 0) > 0]
        if leaky:
            worst = max(int(run.summary[key]) for run in leaky)
            out.append([f"{len(leaky)} of the ok runs {which} examples that were also training examples, token for "
                        f"token (up to {worst}; ", Code(key), f" in {SUMMARY}): the data has duplicate records, and "
                        f"those {numbers} numbers partly measure recall."])
    return out


def one_answer(design: Design, best: list[int] = ()) -> list:
    """Runs whose held-out predictions are nearly all one answer (evaluation.gives_one_answer: a tiny model that
    repeats a word, a classifier that always says the majority class). Their ROUGE or accuracy is that answer's
    overlap with every reference, which always answering the most frequent reference would match or beat. Said
    first when the best configuration is one of them: at lr 0.5 the demo's lowest held-out loss (4.99 against
    5.11) came with an empty answer to all 32 prompts."""
    found = [i for i, run in enumerate(design.runs) if run.ok and gives_one_answer(run.summary.get("answer_spread"))]
    if not found:
        return []
    found.sort(key=lambda i: i not in best)  # the best configuration's runs first: named, and its answer shown
    runs = [design.runs[i] for i in found]
    spread = runs[0].summary["answer_spread"]
    top = spread["top"]
    if isinstance(top, int):
        shown = f"class {top}"
    else:
        shown = repr(top if len(top) <= 40 else top[:40] + "…") if top else "an empty answer"
    names = join_code([run.name for run in runs[:3]]) + ([f" and {len(runs) - 3} more"] if len(runs) > 3 else [])
    which = [*names, "; ", Code(runs[0].name), ": "] if len(runs) > 1 else [Code(runs[0].name), ": "]
    among = bool(set(best) & set(found))
    who = ("The best configuration's run" if among and len(runs) == 1 else
           f"{len(runs)} of the ok runs, the best configuration's included," if among else f"{len(runs)} of the ok runs")
    their = "its" if len(runs) == 1 else "their"
    return [[f"{who} gave one answer to nearly every held-out example (", *which,
             f"{shown} for {spread['top_count']} of {spread['n']}): {their} task metrics score that "
             "answer against every reference, not what each run learned; always giving the most frequent reference "
             f"would be right for {spread['reference_top_count']} of {spread['n']}. {their.capitalize()} ",
             Code(SAMPLES), " shows the answers."]]


# 1 %: above the wobble of a held-out loss between evaluations while the learning rate decays. On the built-in data
# no run ended above its lowest at all (the default run's last two evaluations: 4.7558, then 4.7445; 16 records for
# 40 epochs at lr 3e-3 still ended at its lowest), so the line is for real data that a run learns by heart.
OVERFIT = 0.01


def overfitting(design: Design) -> list:
    """Runs whose final held-out loss is more than OVERFIT above the lowest of their evaluations: they got worse
    after that step, and what they saved (adapter/, the report's ranking) is the last step's."""
    ended_above = []
    for run in design.runs:
        final, best, step = (as_number(run.summary.get(k)) for k in ("eval_loss", "best_eval_loss", "best_step"))
        if run.ok and final is not None and best is not None and step is not None and final > best * (1 + OVERFIT):
            ended_above.append((final / best, run, final, best, int(step)))
    if not ended_above:
        return []
    _, run, final, best, step = max(ended_above, key=lambda found: found[0])
    return [[f"{len(ended_above)} of the ok runs ended with a held-out loss more than {OVERFIT:.0%} above their lowest (",
             Code(run.name), f": {final:.4f} at the end against {best:.4f} at step {step}): they got worse after that "
             "point, and their adapter is the last step's, as ranked here. Fewer steps (", Code(f"optim.max_steps={step}"),
             ") or a lower learning rate keep the better one."]]
