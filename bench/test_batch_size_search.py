"""Batch-size search: the hand-written search (vanilla/, and fabric/ reusing it with Fabric's training steps) and
Lightning's `Tuner.scale_batch_size`, all under the same simulated out-of-memory threshold (a
`torch.OutOfMemoryError` above 40 examples per batch, raised by the loss before any work), tiny model, starting at
batch 32. Reported: wall time of the search alone and the number of trials; the tried sizes are the same in all
three (tests/test_parity.py checks that)."""

from __future__ import annotations

import time

import pytest
import torch

from bench.conftest import run_args
from bench.runners import patched

LIMIT = 40


def oom_above_limit(trials: list[int], searching):
    def wrap(original):
        def loss(model, batch):
            size = batch["input_ids"].size(0)
            if searching() and model.training and (not trials or trials[-1] != size):
                trials.append(size)
            if size > LIMIT:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return original(model, batch)
        return loss
    return wrap


def timed(seconds: list[float], trials: list[int] | None = None):
    """Wraps a search function: its duration into `seconds`, the sizes it tried into `trials`."""
    def wrap(original):
        def search(*args, **kwargs):
            started = time.perf_counter()
            result = original(*args, **kwargs)
            seconds.append(time.perf_counter() - started)
            if trials is not None:
                trials.extend(result.tried)
            return result
        return search
    return wrap


def vanilla_search(argv) -> tuple[float, int]:
    from vanilla import train

    seconds, trials = [], []
    with patched(train, "search_with_optimization", timed(seconds, trials)), \
            patched(train, "seq2seq_loss", oom_above_limit([], lambda: False)):
        train.main(argv)
    return seconds[0], len(trials)


def fabric_search(argv) -> tuple[float, int]:
    from tests.conftest import load_train

    train = load_train("fabric")
    seconds, trials = [], []
    # the whole search (Fabric's trial steps included) is timed; the sizes come from the algorithm it reuses
    with patched(train, "search_batch_size", timed(seconds)), patched(train, "scale_batch_size", timed([], trials)), \
            patched(train, "seq2seq_loss", oom_above_limit([], lambda: False)):
        train.main(argv)
    return seconds[0], len(trials)


def lightning_search(argv) -> tuple[float, int]:
    from tests.conftest import load_lightning_train, loss_home

    train = load_lightning_train()
    seconds, trials, state = [], [], {"searching": False}

    def timed_tuner(tuner_class):
        class Tuner(tuner_class):
            def scale_batch_size(self, *args, **kwargs):
                state["searching"], started = True, time.perf_counter()
                try:
                    return super().scale_batch_size(*args, **kwargs)
                finally:
                    seconds.append(time.perf_counter() - started)
                    state["searching"] = False
        return Tuner

    with patched(train, "Tuner", timed_tuner), \
            patched(loss_home("lightning"), "seq2seq_loss", oom_above_limit(trials, lambda: state["searching"])):
        train.main(argv)
    return seconds[0], len(trials)


@pytest.mark.parametrize("mode", ["power", "binsearch"])
@pytest.mark.parametrize("trainer", ["vanilla", "fabric", "lightning"])
def test_batch_size_search(benchmark, bench_data, tmp_path, trainer, mode):
    argv = run_args(bench_data, tmp_path / "run", "tiny", 2, "--auto-batch-size", mode, "--batch-size", "32")
    results = []
    search = {"vanilla": vanilla_search, "fabric": fabric_search, "lightning": lightning_search}[trainer]
    benchmark.group = f"batch-size search ({mode}): whole run, the search timed inside"
    benchmark.pedantic(lambda: results.append(search(argv)), rounds=2, iterations=1, warmup_rounds=0)
    seconds = sorted(r[0] for r in results)
    benchmark.extra_info.update(trainer=trainer, mode=mode, search_seconds=seconds[0], trials=results[0][1])
    assert len({r[1] for r in results}) == 1
