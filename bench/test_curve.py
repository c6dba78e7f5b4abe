"""When Lightning's overhead matters: its share of the step time against the step time, across model sizes (tiny,
small and a bart-base-sized BART) and batch sizes, with the bare loop as the floor.

At each point the bare loop, the hand-written trainer, the Fabric trainer, Lightning as configured and Lightning
tuned run interleaved, as in test_overhead.py. A trainer's overhead is the median over rounds of (its ms per step -
the bare loop's), and its share that overhead / its median ms per step. A cost that is fixed per step falls in share
as steps get longer: the report gives what that cost would be, were it fixed, and the step time below which it would
be more than 1%.
"""

from __future__ import annotations

import statistics

import pytest

from bench.conftest import CUDA, run_args
from bench.runners import bare_loop, fabric_trainer, interleaved, lightning_trainer, tuned_settings, vanilla_trainer
from shared.cli import parse_args

# (model size, batch size, steps, rounds): two batch sizes for the tiny and the default model; the base model's
# steps take most of a second on a CPU (and its checkpoints over a gigabyte), so it gets one batch size and fewer
# steps (16, of which 12 are timed)
POINTS = [("tiny", 8, 40, 3), ("tiny", 32, 40, 3), ("small", 8, 30, 3), ("small", 32, 30, 3), ("base", 4, 16, 3)]
if CUDA:  # a GPU's steps are shorter: the same points with the batch sizes of a GPU run
    POINTS = [(size, batch * 8, steps, rounds) for size, batch, steps, rounds in POINTS]
VARIANTS = ("bare loop", "vanilla", "fabric", "lightning (as configured)", "lightning (tuned)")


def curve_point(per_round: dict[str, list[float]]) -> dict:
    """From each variant's ms per step in each round: the bare loop's median, and per trainer its median, its
    overhead (the median over rounds of its difference from the bare loop within a round) and that overhead's share
    of its median step (one quotient of the two medians shown, so that share and overhead agree in sign)."""
    floor = per_round["bare loop"]
    point = {"bare_ms": statistics.median(floor)}
    for variant, times in per_round.items():
        if variant != "bare loop":
            ms = statistics.median(times)
            overhead = statistics.median(t - f for t, f in zip(times, floor, strict=True))
            point[variant] = {"ms": ms, "overhead_ms": overhead, "share": overhead / ms}
    return point


@pytest.mark.parametrize("model_size, batch_size, steps, rounds", POINTS,
                         ids=[f"{size}-batch{batch}" for size, batch, _, _ in POINTS])
def test_overhead_curve(benchmark, bench_data, tmp_path, model_size, batch_size, steps, rounds):
    argv = [*run_args(bench_data, tmp_path / "run", model_size, steps), "--batch-size", str(batch_size)]
    args = parse_args("bench", "unused", argv)
    runs = {"bare loop": lambda: bare_loop(args, steps),
            "vanilla": lambda: vanilla_trainer(argv),
            "fabric": lambda: fabric_trainer(argv),
            "lightning (as configured)": lambda: lightning_trainer(argv),
            "lightning (tuned)": lambda: lightning_trainer(argv, tuned_settings())}
    logs, one_round = interleaved(runs)

    benchmark.group = f"overhead curve: {model_size} model, batch {batch_size}"
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=0)
    per_round = {v: [1000 * statistics.median(log.intervals()) for log in logs[v]] for v in VARIANTS}
    benchmark.extra_info.update(model_size=model_size, batch_size=batch_size, steps=steps,
                                point=curve_point(per_round))
    assert all(len(log.times) == steps for variant_logs in logs.values() for log in variant_logs)
