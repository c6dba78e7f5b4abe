"""Exact counts per training step, per rung: Python function calls, and host-device syncs by kind and by the code
that makes them (bench/step_counts.py), on the fixed-cost configuration of test_fixed_cost.py, over COUNTED steps
(Lightning's `log_every_n_steps`: a period of its logging). With --bench-full every rung is counted twice and the
two tables must be equal (tests/test_step_counts.py checks the same on the hand-written trainer, Lightning and the
transformers Trainer).

The transformers Trainer (hf_trainer, bench/runners.py `hf_trainer`) is counted here like the others, on the same
command line; it is left out on a GPU, which hf_trainer/train.py does not run on yet (bench/runners.py
`on_this_machine`).
"""

from __future__ import annotations

import pytest

from bench.rungs import COUNTED_RUNGS
from bench.runners import WARMUP_STEPS, lightning_defaults, on_this_machine, rung_runs
from bench.step_counts import count_calls, count_syncs
from bench.test_fixed_cost import tiny_step_argv
from shared.cli import parse_args

COUNTED = 50
STEPS = WARMUP_STEPS + COUNTED + 1  # the counted steps end at the next batch's arrival
VARIANTS = on_this_machine(COUNTED_RUNGS)


def runs(data, tmp_path) -> dict:
    def argv_for(rung: str) -> list[str]:
        return tiny_step_argv(data, tmp_path / rung.replace(" ", "_"), STEPS)

    found = rung_runs(argv_for, STEPS)
    found["lightning (defaults)"] = lambda log: lightning_defaults(
        parse_args("bench", "unused", argv_for("lightning (defaults)")), STEPS, log)
    return found


@pytest.mark.parametrize("variant", VARIANTS)
def test_counts(benchmark, turns_data, tmp_path, full, variant):
    run = runs(turns_data, tmp_path)[variant]
    counted = {}

    def count():
        counted["syncs"], counted["calls"] = count_syncs(run, COUNTED), count_calls(run, COUNTED)

    benchmark.group = f"counts per step over {COUNTED} steps"
    benchmark.pedantic(count, rounds=1, iterations=1, warmup_rounds=0)
    if full:
        assert count_syncs(run, COUNTED) == counted["syncs"], "the sync counts differ between two runs"
        assert count_calls(run, COUNTED) == counted["calls"], "the call counts differ between two runs"
    benchmark.extra_info.update(variant=variant, counted_steps=COUNTED, repeated=full, **counted)
