"""The fixed cost per training step: each rung's host time per step over the bare loop where a step's arithmetic is
nearly nothing (the tiny model, batch 1, 16 source and 8 target tokens): what a trainer costs whatever the model.

The rungs (the bare loop, the hand-written trainer, Fabric, Lightning's floor `Trainer(barebones=True)`,
Lightning as configured and tuned, and on the CPU the transformers Trainer: bench/runners.py RUNGS) run in turns of
one step each, in CPU time (bench/step_by_step.py); a rung's overhead is the mean over steps of its i-th step minus
the bare loop's, with a 95% interval (Student's t over the steps). On a GPU this host time is what the device must
outlast for the trainer to cost nothing (bench/report.py states it per rung with the sync counts of test_counts.py).
"""

from __future__ import annotations

from bench.conftest import quick_or_full, run_args
from bench.runners import RUNGS, rung_runs
from bench.step_by_step import in_turns, overheads, step_ms

TINY_STEP = ("--model-size", "tiny", "--batch-size", "1", "--max-source-length", "16", "--max-target-length", "8")
WARMUP = 5  # of the timed steps: allocator growth, lazy initialisation


def tiny_step_argv(data, directory, steps: int) -> list[str]:
    return [*run_args(data, directory, "tiny", steps), *TINY_STEP]


def test_fixed_cost(benchmark, turns_data, tmp_path, full):
    steps = quick_or_full(full, 300, 800)
    runs = rung_runs(lambda rung: tiny_step_argv(turns_data, tmp_path / rung.replace(" ", "_"), steps), steps)
    logs = {}

    benchmark.group = f"fixed cost per step: the {len(RUNGS)} rungs in turns, {steps} steps each"
    benchmark.pedantic(lambda: logs.update(in_turns(runs, steps)), rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(configuration="tiny model, batch 1, 16 source and 8 target tokens",
                                steps=steps - 1 - WARMUP, rungs=overheads(logs, "bare loop", WARMUP),
                                step_ms=step_ms(logs, WARMUP))
    assert all(len(log.step_cpu) == steps - 1 for log in logs.values())
