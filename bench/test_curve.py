"""When a trainer's overhead matters: its host time per step over the bare loop across model sizes (tiny, small and
a bart-base-sized BART) and batch sizes, against the fixed cost measured where the step is nothing
(test_fixed_cost.py).

At each point the rungs (bench/runners.py RUNGS) run in turns of one step each, in CPU time (bench/step_by_step.py),
as in test_fixed_cost.py: a rung's overhead is the mean over steps of its i-th step minus the bare loop's, with a
95% interval. Where that overhead is not told apart from the fixed cost within the two intervals, nothing here shows
a cost that grows with the model; where it differs, bench/report.py marks the point (what grows is then to be found
in the appendix's anatomy and profiles).
"""

from __future__ import annotations

import pytest

from bench.conftest import CUDA, quick_or_full, run_args
from bench.runners import RUNGS, rung_runs
from bench.step_by_step import in_turns, overheads, step_ms

# (model size, batch size, steps quick, steps full); the default model at batch 32 is the answer's second column
# (bench/report.py); the base model's steps take over a second on one CPU thread, and its start-up, test phase and
# export most of a minute per rung: it is measured in the full rounds only
POINTS = [("tiny", 8, 40, 150), ("tiny", 32, 30, 100), ("small", 8, 30, 100), ("small", 32, 20, 100),
          ("base", 4, 0, 16)]
if CUDA:  # a GPU's steps are shorter: the same points with the batch sizes of a GPU run
    POINTS = [(size, batch * 8, quick, full) for size, batch, quick, full in POINTS]
WARMUP = 3


@pytest.mark.parametrize("model_size, batch_size, quick_steps, full_steps", POINTS,
                         ids=[f"{size}-batch{batch}" for size, batch, _, _ in POINTS])
def test_overhead_curve(benchmark, turns_data, tmp_path, full, model_size, batch_size, quick_steps, full_steps):
    steps = quick_or_full(full, quick_steps, full_steps)
    if not steps:
        pytest.skip("measured with --bench-full (make bench) only")

    def argv_for(rung: str) -> list[str]:
        return [*run_args(turns_data, tmp_path / rung.replace(" ", "_"), model_size, steps),
                "--batch-size", str(batch_size)]

    logs = {}
    benchmark.group = f"overhead curve: {model_size} model, batch {batch_size}, the {len(RUNGS)} rungs in turns"
    benchmark.pedantic(lambda: logs.update(in_turns(rung_runs(argv_for, steps), steps)), rounds=1, iterations=1,
                       warmup_rounds=0)
    benchmark.extra_info.update(model_size=model_size, batch_size=batch_size, steps=steps - 1 - WARMUP,
                                rungs=overheads(logs, "bare loop", WARMUP),
                                step_ms=step_ms(logs, WARMUP))
    assert all(len(log.step_cpu) == steps - 1 for log in logs.values())
