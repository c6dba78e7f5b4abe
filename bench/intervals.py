"""The statistics of the runs in turns (bench/step_by_step.py), for the benchmarks and the report alike: a mean with
its 95% interval, and how many steps would decide a goal an interval leaves open. Standard library only: the report
runs without torch."""

from __future__ import annotations

import math
import statistics

# Student's t, two-sided 95%, by degrees of freedom; beyond 120 within 1% of the normal's 1.96
T_95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        12: 2.179, 15: 2.131, 20: 2.086, 30: 2.042, 40: 2.021, 60: 2.000, 120: 1.980}


def t_95(degrees: int) -> float:
    """The table's value at the nearest tabulated degrees of freedom at or below `degrees` (a wider interval)."""
    return T_95[max(d for d in T_95 if d <= degrees)]


def mean_interval(values: list[float]) -> dict:
    """The mean, the half-width of its 95% confidence interval (Student's t) and the number of values."""
    n = len(values)
    half_width = t_95(n - 1) * statistics.stdev(values) / math.sqrt(n) if n > 1 else math.inf
    return {"ms": statistics.mean(values), "half_width": half_width, "n": n}


def paired(a: list[float], b: list[float]) -> dict:
    """The mean of a's i-th value minus b's, with its interval: steps taken within one turn of every variant."""
    return mean_interval([x - y for x, y in zip(a, b, strict=True)])


def steps_to_decide(difference: dict, goal_ms: float) -> int | None:
    """Where the interval of `difference` holds `goal_ms`: about how many steps would shrink it (as 1/sqrt(n)) to
    lie wholly on one side, at the same mean and spread; None where it lies on one side already, or where the mean
    sits on the goal itself."""
    gap = abs(difference["ms"] - goal_ms)
    if gap > difference["half_width"] or gap == 0:
        return None
    return math.ceil(difference["n"] * (difference["half_width"] / gap) ** 2 - 1e-9)  # not up for a rounding error
