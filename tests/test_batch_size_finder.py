"""Batch-size search: the sequences of Lightning's algorithm under a simulated out-of-memory threshold."""

from __future__ import annotations

import pytest
import torch

from vanilla import batch_size_finder
from vanilla.batch_size_finder import is_oom_error, scale_batch_size


@pytest.fixture(autouse=True)
def no_garbage_collection(monkeypatch):
    """The search frees memory after every trial with gc.collect(), a fifth of a second with torch loaded; these
    tests check the sizes tried, not the collection (the trainers' searches run it, tests/test_parity.py)."""
    monkeypatch.setattr(batch_size_finder, "free_memory", lambda: None)


def oom_above(threshold):
    def trial(batch_size):
        if batch_size > threshold:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    return trial


@pytest.mark.parametrize("mode, start, threshold, length, tried, result", [
    # Lightning's documented behaviour: the first trial runs at the starting batch size, not init_val (2).
    ("power", 16, 40, 10_000, [16, 4, 8, 16, 32, 64], 32),
    ("binsearch", 16, 40, 10_000, [16, 4, 8, 16, 32, 64, 48, 40, 44, 42, 41], 38),  # 41 less a 5% margin
    # out of memory at the very first trial: go down to init_val / 2 and climb again
    ("power", 64, 40, 10_000, [64, 1, 2, 4, 8, 16, 32, 64], 32),
    # binsearch takes the failed trial to be init_val (2): bisecting [1, 2] ends the search at once at 1
    ("binsearch", 64, 40, 10_000, [64], 1),
    # a data set smaller than the batch: doubling stops once the size reaches the data set's length
    ("power", 16, 10_000, 20, [16, 4, 8, 16, 32], 32),
    ("power", 32, 10_000, 20, [32], 32),
    ("binsearch", 16, 10_000, 20, [16, 4, 8, 16, 32], 30),
])
def test_search_sequences(mode, start, threshold, length, tried, result):
    found = scale_batch_size(oom_above(threshold), start, length, mode=mode)
    assert found.tried == tried
    assert found.batch_size == result


@pytest.mark.parametrize("mode", ["power", "binsearch"])
def test_out_of_memory_at_the_data_sets_length_returns_the_last_size_that_worked(mode):
    # 600 examples: 512 works, the next trial (1024, i.e. one batch of all 600) fails. Lightning would return
    # 1024 (power) or retry it forever (binsearch).
    found = scale_batch_size(oom_above(1000), 5, 600, mode=mode)
    assert found.tried == [5, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert found.batch_size == (512 if mode == "power" else int(512 * 0.95))


def test_max_trials_bounds_the_search():
    found = scale_batch_size(oom_above(10**9), 2, 10**9, mode="power", max_trials=4)
    assert found.tried == [2, 4, 8, 16] and found.batch_size == 16


def test_other_errors_propagate():
    def broken(batch_size):
        raise RuntimeError("shape mismatch")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        scale_batch_size(broken, 8, 100)


def test_what_counts_as_out_of_memory():
    assert is_oom_error(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB"))
    assert is_oom_error(RuntimeError("CUDA error: out of memory"))
    assert is_oom_error(RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED. This error may appear if..."))
    assert is_oom_error(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried"))
    assert not is_oom_error(RuntimeError("out of memory"))  # no "CUDA": not recognised, as in Lightning
    assert not is_oom_error(RuntimeError("CUDA out of memory", "second argument"))
    assert not is_oom_error(ValueError("CUDA out of memory"))


def test_same_sequences_as_lightning_power_and_binsearch():
    """Run Lightning's own search functions on a stand-in trainer and compare the sizes they try."""
    from unittest import mock

    from pytorch_lightning.tuner import batch_size_scaling as lightning_scaling

    for mode, start, threshold, length in (("power", 16, 40, 10_000), ("binsearch", 16, 40, 10_000),
                                           ("power", 64, 40, 10_000), ("binsearch", 64, 23, 10_000),
                                           ("power", 16, 10_000, 20), ("binsearch", 5, 1_000, 2_000)):
        model = mock.MagicMock()
        model.batch_size = start
        loader_size = {"value": start}
        tried = []
        trainer = mock.MagicMock()
        trainer.lightning_module = model
        trainer.fast_dev_run = False
        trainer._active_loop._combined_loader._dataset_length.return_value = length

        def reset(_trainer, loader_size=loader_size, model=model):
            loader_size["value"] = model.batch_size

        def try_run(_trainer, _params, loader_size=loader_size, tried=tried, threshold=threshold):
            tried.append(loader_size["value"])
            oom_above(threshold)(loader_size["value"])

        with mock.patch.object(lightning_scaling, "lightning_getattr", lambda m, name: m.batch_size), \
                mock.patch.object(lightning_scaling, "lightning_setattr",
                                  lambda m, name, value: setattr(m, "batch_size", value)), \
                mock.patch.object(lightning_scaling, "_reset_dataloaders", reset), \
                mock.patch.object(lightning_scaling, "_try_loop_run", try_run), \
                mock.patch.object(lightning_scaling, "_reset_progress", lambda t: None), \
                mock.patch.object(lightning_scaling, "garbage_collection_cuda", lambda: None):  # gc.collect: seconds
            new_size, _ = lightning_scaling._adjust_batch_size(trainer, value=2)
            run = lightning_scaling._run_power_scaling if mode == "power" else lightning_scaling._run_binsearch_scaling
            extra = () if mode == "power" else (0.05,)
            theirs = run(trainer, new_size, "batch_size", 25, {}, *extra)
        mine = scale_batch_size(oom_above(threshold), start, length, mode=mode)
        assert mine.tried == tried, (mode, start, threshold)
        assert mine.batch_size == theirs, (mode, start, threshold)
