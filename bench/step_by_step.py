"""Runs in turn, one training step each: every variant in a thread of its own, one running at a time, each handing
over to the next at its next batch's arrival; each step timed in its thread's CPU time.

This machine's speed drifts from one tenth of a second to the next by as much as the overheads being measured
(whole runs of the same loop differ by 2x). Alternating at every step puts each variant's step beside the others'
taken within a few milliseconds, so the drift is common to a step and its neighbours, and the difference of two
variants' i-th steps cancels it. A thread's CPU time leaves out the time the thread was not running (another
process on the machine; the other variants waiting their turn). Torch runs on one intra-op thread meanwhile, so
that a step's arithmetic is in that thread's time too; work in the frameworks' background threads (TensorBoard's
writer, a progress bar's refresh) is not.

Each variant keeps its turn from its start to its first batch (start-up runs one at a time) and after its last
(validation, test and export too): only the training steps alternate.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch

from bench.intervals import paired
from bench.runners import StepLog


class Baton:
    """Whose turn it is: the variants in a fixed order, each handing over to the next one still running."""

    def __init__(self, names: list[str]):
        self.order = list(names)
        self.turns = {name: threading.Event() for name in names}
        self.lock = threading.Lock()

    def wait_turn(self, name: str) -> None:
        self.turns[name].wait()
        self.turns[name].clear()

    def pass_on(self, name: str) -> None:
        with self.lock:
            self.turns[self.order[(self.order.index(name) + 1) % len(self.order)]].set()

    def leave(self, name: str) -> None:
        with self.lock:
            place = self.order.index(name)
            self.order.remove(name)
            if self.order:
                self.turns[self.order[place % len(self.order)]].set()


class TurnLog(StepLog):
    """A StepLog that hands over at each batch's arrival but the last, and records each step's thread CPU time and
    wall time: from taking its turn back to the next batch's arrival (on a GPU the wall time holds the waits for
    the device too)."""

    def __init__(self, baton: Baton, name: str, steps: int, between: Callable[[], None] | None = None):
        super().__init__()
        self.baton, self.name, self.last, self.between = baton, name, steps, between
        self.step_cpu: list[float] = []
        self.step_wall: list[float] = []
        self._resumed: tuple[float, float] | None = None

    def step(self, batch: dict, model=None) -> None:
        arrived = time.thread_time(), time.perf_counter()
        if self._resumed is not None:
            self.step_cpu.append(arrived[0] - self._resumed[0])
            self.step_wall.append(arrived[1] - self._resumed[1])
        super().step(batch, model)
        if len(self.times) < self.last:
            if self.between is not None:  # outside the timed window (on a GPU: let the device finish this step)
                self.between()
            self.baton.pass_on(self.name)
            self.baton.wait_turn(self.name)
        self._resumed = time.thread_time(), time.perf_counter()


@contextmanager
def one_intra_op_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def in_turns(runs: dict[str, Callable[[StepLog], StepLog]], steps: int,
             between: Callable[[], None] | None = None) -> dict[str, TurnLog]:
    """Each `run(log)` (a runner given its log) in a thread, in turns of one step, `steps` steps each; their logs,
    whose `step_cpu` are the CPU seconds of their steps, the i-th of each taken within one turn of all; `between`,
    called at each hand-over outside the timed steps (`torch.cuda.synchronize` on a GPU, so that no rung waits for
    another's kernels)."""
    baton = Baton(list(runs))
    logs = {name: TurnLog(baton, name, steps, between) for name in runs}
    errors: dict[str, BaseException] = {}

    def run_in_turn(name: str) -> None:
        baton.wait_turn(name)
        try:
            runs[name](logs[name])
        except BaseException as error:  # raised again in the caller's thread
            errors[name] = error
        finally:
            baton.leave(name)

    threads = [threading.Thread(target=run_in_turn, args=(name,), name=f"bench: {name}") for name in runs]
    with one_intra_op_thread():
        for thread in threads:
            thread.start()
        baton.turns[next(iter(runs))].set()
        for thread in threads:
            thread.join()
    if errors:
        name, error = next(iter(errors.items()))
        raise RuntimeError(f"{', '.join(errors)} failed while running in turns (the first one's error below)") \
            from error
    return logs



def step_ms(logs: dict[str, TurnLog], warmup: int, clock: str = "step_cpu") -> dict[str, list[float]]:
    """Each variant's steps after `warmup`, in ms of CPU time (or of `clock`: "step_wall"), the i-th of each taken
    within one turn of all."""
    return {name: [round(1000 * t, 4) for t in getattr(log, clock)[warmup:]] for name, log in logs.items()}


def overheads(logs: dict[str, TurnLog], floor: str, warmup: int) -> dict[str, dict]:
    """Per variant: its host ms per step (the mean over its steps after `warmup`), and its overhead over `floor`:
    the mean of the differences of their i-th steps, with its 95% interval."""
    steps = step_ms(logs, warmup)
    return {name: {"host_ms": statistics.mean(values),
                   "overhead": paired(values, steps[floor]) if name != floor else None}
            for name, values in steps.items()}
