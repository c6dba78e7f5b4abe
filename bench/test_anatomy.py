"""Where each trainer's per-step time goes beyond the bare loop, and how much of Lightning's a user can switch off.

Every part of a trainer that can be taken away is switched off in turn: a variant of the trainer without that one
part. All variants run interleaved with the bare loop, round after round (the order of the trainers rotating),
as in test_overhead.py. Each trainer runs whole before and after its variants (whose order rotates too), and its
time is the mean of the two; a part's cost is the median over rounds of (trainer - trainer without it), per step.
With every part off at once, what is left over the bare loop cannot be switched off: for Lightning, its loop (the
hook calls, the optimizer closure, the precision and strategy plugins, the result collection).

The parts are chosen not to overlap, so that their costs, switched off one at a time, add up to the cost of
switching them all off at once: Lightning's progress bar redraws the logged train_loss (prog_bar=True), computing
the metric at every redraw, so the bar and the train_loss logging are one part (apart, that computation would be
counted in both). Whether they add up is checked round by round: the sum of the parts minus all at once, its
mean over rounds against the 95% confidence interval of that mean (the report states both).

"Lightning, tuned" is lightning/train.py with the Trainer settings a user can change without giving up anything
this job uses (bench/runners.py `tuned_settings`); they turn the progress bar off and touch nothing else, so its
other parts are Lightning's as configured, from the same runs, and what is left of its part "progress bar and
train_loss logging" (the logging) is timed against the same variant without it.
Two profilers attribute what switching off cannot reach, each in a run of its own: Lightning's SimpleProfiler,
the per-step time of its hooks and actions; and cProfile over the timed steps of every trainer, the time spent in
the frameworks' and this repository's own Python code, by package area (pytorch_lightning/loops/optimization:
the automatic-optimization closure; pytorch_lightning/trainer/call.py: the hook calls; the logger connector:
the result collection; ...). Both include their profiler's own cost: their split is what they tell.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import torch

from bench.conftest import quick_or_full, run_args
from bench.intervals import t_95
from bench.runners import (
    TUNED_SETTINGS,
    StepLog,
    bare_loop,
    fabric_trainer,
    lightning_trainer,
    patched,
    profiled_lightning,
    profiled_own_time,
    tuned_settings,
    vanilla_trainer,
)
from shared.cli import parse_args
from shared.model import seq2seq_loss

STEPS = {"small": 40, "tiny": 100}
# The default model's runs differ from one another by several ms on this machine, and the add-up check sums the
# noise of every part's runs: in a pilot of 16 rounds of Lightning's runs alone (not kept), its per-round
# discrepancy had a mean of -0.5 ms and a standard deviation of 5.5 ms (95% interval -3.4 to +2.4 ms), where a
# 4-round bench had found +3.0 +- 2.1 ms. Five rounds make the check's noise near 6 ms at that spread (the machine's
# own noise varies: 4 to 10 ms in two 10-round runs): it cannot see an overlap between parts smaller. The anatomy
# explains where the time goes; the verdicts come from the runs in turns (test_fixed_cost.py, test_curve.py), which
# is why it has fewer rounds than it once had (10 and 6: 25 of make bench's 46 minutes).
ROUNDS = {"small": 5, "tiny": 4}
QUICK_ROUNDS = {"small": 0, "tiny": 0}  # the quick rounds leave the anatomy out (over 6 minutes for the tiny model)
NO_CLIPPING = ("--gradient-clip-val", "0")
TUNED = "lightning (tuned)"
TUNED_PART = "progress bar and train_loss logging"  # the one part the tuned settings change
PROFILED = ("bare loop", "vanilla", "fabric", "lightning", TUNED)  # under cProfile, a run each


@contextmanager
def no_progress_bar_updates(train):
    """vanilla/ and fabric/: the tqdm bar's per-step update (the loss is still read with .item())."""
    from vanilla.progress_bar import ProgressBar

    with patched(ProgressBar, "advance", lambda original: lambda self, loss: None):
        yield


@contextmanager
def no_scheduler_steps(train):
    """Every trainer: the warm-up schedule's per-step update (the bare loop has no schedule)."""
    def step(original):
        def maybe(self, *args, **kwargs):
            if not hasattr(self, "_last_lr"):  # the step the scheduler takes when it is built
                original(self, *args, **kwargs)
        return maybe

    with patched(torch.optim.lr_scheduler.LambdaLR, "step", step):
        yield


@contextmanager
def no_train_loss_logging(train):
    """lightning/: `self.log("train_loss", MeanMetric)` and the metric's update, per step (switched off with the
    progress bar that shows it)."""
    def training_step(original):
        return lambda self, batch, batch_idx: seq2seq_loss(self.model, batch)

    with patched(train.QGModule, "training_step", training_step):
        yield


@contextmanager
def no_project_callbacks(train):
    """lightning/: this project's exact-resume and signal callbacks (lightning/exact_resume.py)."""
    with patched(train, "exact_resume_callbacks", lambda original: lambda *args, **kwargs: []):
        yield


@dataclass(frozen=True)
class Variant:
    trainer: str  # "bare loop", "vanilla", "fabric", "lightning"
    argv: tuple[str, ...] = ()
    switched_off: tuple = ()
    settings: dict | Callable[[], dict] = field(default_factory=dict)  # a callable: new callbacks for each run


PARTS = {  # trainer: {part: (argv, switches, Trainer settings)} -- what switching the part off means
    "vanilla": {"progress bar": ((), (no_progress_bar_updates,), {}),
                "gradient clipping": (NO_CLIPPING, (), {}),
                "LR scheduler step": ((), (no_scheduler_steps,), {})},
    "fabric": {"progress bar": ((), (no_progress_bar_updates,), {}),
               "gradient clipping": (NO_CLIPPING, (), {}),
               "LR scheduler step": ((), (no_scheduler_steps,), {})},
    "lightning": {"progress bar and train_loss logging": ((), (no_train_loss_logging,),
                                                          {"enable_progress_bar": False}),
                  "exact-resume and signal callbacks": ((), (no_project_callbacks,), {}),
                  "gradient clipping": (NO_CLIPPING, (), {}),
                  "LR scheduler step": ((), (no_scheduler_steps,), {})},
}


def variants() -> dict[str, Variant]:
    found = {"bare loop": Variant("bare loop")}
    for trainer, parts in PARTS.items():
        found[trainer] = Variant(trainer)
        for part, (argv, switches, settings) in parts.items():
            found[f"{trainer} - {part}"] = Variant(trainer, argv, switches, settings)
        found[f"{trainer} - all of them"] = Variant(
            trainer, tuple(a for argv, _, _ in parts.values() for a in argv),
            tuple(s for _, switches, _ in parts.values() for s in switches),
            {k: v for _, _, settings in parts.values() for k, v in settings.items()})
    found[TUNED] = Variant("lightning", settings=tuned_settings)
    return found


def run_variant(variant: Variant, args, argv: list[str], steps: int, log: StepLog | None = None) -> StepLog:
    if variant.trainer == "bare loop":
        return bare_loop(args, steps, log=log)
    argv = [*argv, *variant.argv]
    if variant.trainer == "vanilla":
        return vanilla_trainer(argv, variant.switched_off, log)
    if variant.trainer == "fabric":
        return fabric_trainer(argv, variant.switched_off, log)
    settings = variant.settings() if callable(variant.settings) else variant.settings
    return lightning_trainer(argv, settings, variant.switched_off, log)


def groups(found: dict[str, Variant]) -> list[list[str]]:
    """The runs of one round, a group per trainer: the whole trainer first and again last, its variants between
    (each part's cost is taken against the mean of the two, which cancels a drift of the machine's speed).
    Lightning tuned is bracketed in Lightning's group the same way."""
    by_trainer: dict[str, list[str]] = {}
    for name, variant in found.items():
        if name != TUNED:
            by_trainer.setdefault(variant.trainer, []).append(name)
    by_trainer["lightning"][1:1] = [TUNED]
    by_trainer["lightning"].append(f"{TUNED} (again)")
    return [names if trainer == "bare loop" else [*names, f"{trainer} (again)"]
            for trainer, names in by_trainer.items()]


def rotate_variants(group: list[str]) -> None:
    """Between a trainer's brackets, its variants change places from round to round, so that none always runs
    in the same place (a place's own bias, if any, becomes noise the rounds show)."""
    places = [i for i, name in enumerate(group) if " - " in name]
    for place, name in zip(places, [group[i] for i in places[1:] + places[:1]], strict=True):
        group[place] = name


def adds_up(parts: list[list[float]], all_at_once: list[float]) -> dict:
    """Per round, the parts' costs summed minus the cost of all at once: its mean over rounds and the half-width of
    its 95% confidence interval (Student's t over the rounds): the noise it is held against."""
    discrepancy = [sum(values) - together for *values, together in zip(*parts, all_at_once, strict=True)]
    rounds = len(discrepancy)
    noise = t_95(rounds - 1) * statistics.stdev(discrepancy) / math.sqrt(rounds) if rounds > 1 else math.inf
    return {"ms": statistics.mean(discrepancy), "lowest": min(discrepancy), "highest": max(discrepancy),
            "noise": noise}


def summarise(logs: dict[str, list[StepLog]]) -> dict:
    """Per trainer: its overhead over the bare loop, each part's cost, all parts at once, what remains, whether
    the parts add up; in ms per step, each the median over rounds of a difference within a round, with the lowest
    and highest round."""
    per_round = {name: [1000 * statistics.median(log.intervals()) for log in runs] for name, runs in logs.items()}
    rounds = range(len(per_round["bare loop"]))
    for trainer in (*PARTS, TUNED):  # the whole trainer: the mean of its runs before and after its variants
        per_round[trainer] = [(a + b) / 2 for a, b in zip(per_round[trainer], per_round.pop(f"{trainer} (again)"),
                                                          strict=True)]

    def within_rounds(a: str, b: str) -> list[float]:
        return [per_round[a][r] - per_round[b][r] for r in rounds]

    def difference(values: list[float]) -> dict:
        return {"ms": statistics.median(values), "lowest": min(values), "highest": max(values)}

    result = {"ms_per_step": {name: statistics.median(values) for name, values in per_round.items()}}
    for trainer, parts in PARTS.items():
        costs = {part: within_rounds(trainer, f"{trainer} - {part}") for part in parts}
        all_at_once = within_rounds(trainer, f"{trainer} - all of them")
        result[trainer] = {"overhead": difference(within_rounds(trainer, "bare loop")),
                           "parts": {part: difference(values) for part, values in costs.items()},
                           "all parts": difference(all_at_once),
                           "remaining": difference(within_rounds(f"{trainer} - all of them", "bare loop")),
                           "adds up": adds_up(list(costs.values()), all_at_once)}
    # Lightning tuned: its own progress bar against the same variant without it; its other parts are Lightning's
    costs = {part: within_rounds("lightning", f"lightning - {part}") for part in PARTS["lightning"]}
    costs[TUNED_PART] = within_rounds(TUNED, f"lightning - {TUNED_PART}")
    all_at_once = within_rounds(TUNED, "lightning - all of them")
    result[TUNED] = {"overhead": difference(within_rounds(TUNED, "bare loop")),
                     "parts": {part: difference(values) for part, values in costs.items()},
                     "all parts": difference(all_at_once),
                     "remaining": result["lightning"]["remaining"],
                     "adds up": adds_up(list(costs.values()), all_at_once), "own part": TUNED_PART}
    result["tuned saves"] = difference(within_rounds("lightning", TUNED))
    return result


@pytest.mark.parametrize("model_size", ["small", "tiny"])
def test_anatomy(benchmark, bench_data, tmp_path, full, model_size):
    rounds = quick_or_full(full, QUICK_ROUNDS, ROUNDS)[model_size]
    if not rounds:
        pytest.skip("measured with --bench-full (make bench) only")
    steps = STEPS[model_size]
    argv = run_args(bench_data, tmp_path / "run", model_size, steps)
    args = parse_args("bench", "unused", argv)
    found = variants()
    order = groups(found)
    logs: dict[str, list[StepLog]] = {name: [] for group in order for name in group}

    def one_round():
        for group in order:
            for name in group:
                logs[name].append(run_variant(found[name.removesuffix(" (again)")], args, argv, steps))
        order.append(order.pop(0))  # rotate the groups, so that none always runs first or last
        for group in order:
            rotate_variants(group)

    benchmark.group = f"anatomy: one round = {len(logs)} runs x {steps} steps, {model_size} model"
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    profile = profiled_lightning(argv, steps)
    own_time = {name: profiled_own_time(lambda log, name=name: run_variant(found[name], args, argv, steps, log), steps)
                for name in PROFILED}
    benchmark.extra_info.update(model_size=model_size, steps=steps, anatomy=summarise(logs), profile=profile,
                                own_time=own_time, tuned_settings=TUNED_SETTINGS)
    assert all(len(log.times) == steps for runs in logs.values() for log in runs)
