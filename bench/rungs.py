"""The rungs the benchmarks measure, in the order every table shows them: one list for bench/runners.py, which runs
them (those this machine runs: bench/runners.py `on_this_machine`), and bench/report.py, which reads a run's JSON."""

TIMED_RUNGS = ("bare loop", "vanilla", "fabric", "lightning (barebones)", "lightning (as configured)",
               "lightning (tuned)", "hf_trainer")
# counted per step too (bench/test_counts.py): Lightning with its defaults besides
COUNTED_RUNGS = (*TIMED_RUNGS[:4], "lightning (defaults)", *TIMED_RUNGS[4:])
