"""Per-step overhead and throughput: the same model, data and number of steps trained by
(a) a bare loop -- forward, backward, optimizer step, nothing else: the floor;
(b) the hand-written trainer with all its features on (the run's defaults: progress bar, logging, gradient
    clipping, warm-up schedule, early stopping, top-k checkpointing, sanity check);
(c) the Fabric trainer, with the same features;
(d) Lightning's Trainer with its own defaults;
(e) Lightning as lightning/train.py configures it;
(f) Lightning tuned: the same, with the Trainer settings a user can change without giving up anything this job
    uses (bench/runners.py `tuned_settings`; bench/test_anatomy.py measures what each part costs).

This machine's speed drifts by several per cent from one minute to the next, as much as the overheads being
measured. So the six variants run interleaved, round after round (the order rotating), and each ratio is the
median over rounds of the ratio within a round (the lowest and highest round show the noise). Reported per
variant: ms per step (median of all timed steps), the ratio to the floor and to the hand-written trainer,
training samples/s and target tokens/s, and for the trainers the validation throughput.
"""

from __future__ import annotations

import statistics

import pytest

from bench.conftest import quick_or_full, run_args
from bench.runners import (
    StepLog,
    bare_loop,
    fabric_trainer,
    interleaved,
    lightning_defaults,
    lightning_trainer,
    tuned_settings,
    vanilla_trainer,
)
from shared.cli import parse_args

STEPS = {"small": 40, "tiny": 60}
# full rounds (--bench-full) and quick ones: 4 default-model rounds once spread from 0.99x to 1.11x; the answer's
# verdicts come from the runs in turns (test_fixed_cost.py, test_curve.py), these whole runs are its wall-clock view
ROUNDS = {"small": 6, "tiny": 4}
QUICK_ROUNDS = {"small": 2, "tiny": 2}
VARIANTS = ("bare loop", "vanilla", "fabric", "lightning (defaults)", "lightning (as configured)", "lightning (tuned)")


def summarise(logs: dict[str, list[StepLog]]) -> dict[str, dict]:
    rounds = len(logs["bare loop"])
    per_round = {v: [statistics.median(log.intervals()) for log in logs[v]] for v in VARIANTS}
    result = {}
    for variant in VARIANTS:
        summaries = [log.summary() for log in logs[variant]]
        info = {"ms_per_step": 1000 * statistics.median([dt for log in logs[variant] for dt in log.intervals()]),
                "ratio_to_bare_loop": statistics.median(per_round[variant][r] / per_round["bare loop"][r]
                                                        for r in range(rounds)),
                "ratio_to_vanilla": statistics.median(per_round[variant][r] / per_round["vanilla"][r]
                                                      for r in range(rounds)),
                # the spread between rounds is the measurement's noise, reported beside the median
                "ratio_to_vanilla_by_round": [per_round[variant][r] / per_round["vanilla"][r] for r in range(rounds)],
                "steps_timed": sum(s["steps_timed"] for s in summaries), "rounds": rounds}
        for key in ("samples_per_s", "target_tokens_per_s", "validation_samples_per_s"):
            if all(key in s for s in summaries):
                info[key] = statistics.median(s[key] for s in summaries)
        result[variant] = info
    return result


def model_parameters(args) -> int:
    from pathlib import Path

    from shared.model import count_parameters
    from shared.pipeline import make_model, prepare_data

    return count_parameters(make_model(args, prepare_data(args, Path(args.output_dir), save_tokenizer=False).tokenizer))


@pytest.mark.parametrize("model_size", ["small", "tiny"])
def test_per_step(benchmark, bench_data, tmp_path, full, model_size):
    steps = STEPS[model_size]
    argv = run_args(bench_data, tmp_path / "run", model_size, steps)
    args = parse_args("bench", "unused", argv)
    runs = {"bare loop": lambda: bare_loop(args, steps),
            "vanilla": lambda: vanilla_trainer(argv),
            "fabric": lambda: fabric_trainer(argv),
            "lightning (defaults)": lambda: lightning_defaults(args, steps),
            "lightning (as configured)": lambda: lightning_trainer(argv),
            "lightning (tuned)": lambda: lightning_trainer(argv, tuned_settings())}
    logs, one_round = interleaved(runs)

    benchmark.group = f"per-step overhead: one round = the {len(VARIANTS)} variants x {steps} steps, {model_size} model"
    benchmark.pedantic(one_round, rounds=quick_or_full(full, QUICK_ROUNDS, ROUNDS)[model_size], iterations=1,
                       warmup_rounds=0)
    benchmark.extra_info.update(model_size=model_size, steps=steps, variants=summarise(logs),
                                parameters=model_parameters(args))
    assert all(len(log.times) == steps for variant_logs in logs.values() for log in variant_logs)
