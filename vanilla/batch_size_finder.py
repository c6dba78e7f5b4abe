"""Batch-size search (Lightning: `Tuner.scale_batch_size` / `callbacks.BatchSizeFinder`).

The same algorithm as Lightning 2.6, quirks included, so every trainer tries the same sizes:
- the search starts by setting the batch size to `init_val`, but the data loader is only rebuilt after the
  first trial, so the first trial runs at the batch size the run was started with;
- power: double after each success; on out-of-memory halve and stop if any trial had succeeded;
- binsearch: double until the first out-of-memory, then bisect between the last success and the failure until
  they are adjacent, and finally keep a safety margin: `max(1, int(size * (1 - margin)))`;
- the size never grows past the length of the training set nor past `max_val`;
- one deliberate difference: when a trial at or above the training set's length runs out of memory, the size
  cannot be adjusted any more and Lightning either returns the size that just failed (power) or retries it
  forever (binsearch); this search returns the last size that worked instead;
- out-of-memory means a RuntimeError whose single argument reads like CUDA's "out of memory", cuDNN's
  "CUDNN_STATUS_NOT_SUPPORTED." or the CPU allocator's "can't allocate memory"; anything else propagates.
The caller runs each trial (a few optimiser steps) and restores model, optimiser and RNG afterwards; a trial that
runs out of memory, wherever in its step, leaves no gradients and no half-done GradScaler step for the next one
(`cleaning_up_after_oom`).
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from shared.errors import UserError
from vanilla.optimization import Optimization
from vanilla.seed import isolate_rng


def is_oom_error(error: BaseException) -> bool:
    if not isinstance(error, RuntimeError) or len(error.args) != 1 or not isinstance(error.args[0], str):
        return False
    text = error.args[0]
    return (("CUDA" in text and "out of memory" in text)
            or "cuDNN error: CUDNN_STATUS_NOT_SUPPORTED." in text
            or "DefaultCPUAllocator: can't allocate memory" in text)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def end_failed_step(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler | None) -> None:
    """After an out-of-memory anywhere in a training step (forward, backward, unscale, clip, optimizer step).

    The step's gradients go (set to None), so that the next trial neither adds them to its own nor lacks their
    memory. A GradScaler stopped between `unscale_` and `update` still records the optimizer as unscaled (or
    stepped), and its next `unscale_` raises; `update(new_scale=...)` is its public way to end a step, here keeping
    the scale as it is. A scaler that has never scaled a loss has no step to end (and `update` refuses it)."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None or not scaler.is_enabled():
        return
    try:
        scaler.update(new_scale=scaler.get_scale())
    except AssertionError:  # "_scale is None": no loss scaled yet, so no step under way
        pass


def cleaning_up_after_oom(run_trial: Callable[[int], None], optimizer: torch.optim.Optimizer,
                          scaler: torch.amp.GradScaler | None) -> Callable[[int], None]:
    """`run_trial`, which on out-of-memory ends the failed step (`end_failed_step`) before the error goes on to
    the search."""

    def trial(batch_size: int) -> None:
        try:
            run_trial(batch_size)
        except RuntimeError as error:
            if is_oom_error(error):
                end_failed_step(optimizer, scaler)
            raise

    return trial


@dataclass
class _Sizes:
    """The two sizes Lightning keeps apart: the configured one and the one the data loader was built with."""

    configured: int
    loader: int
    dataset_length: int
    max_val: int
    tried: list[int] = field(default_factory=list)

    def adjust(self, factor: float = 1.0, value: int | None = None) -> tuple[int, bool]:
        if self.configured >= self.dataset_length:
            return self.configured, False
        new = value if value is not None else int(self.configured * factor)
        new = min(new, self.max_val)
        changed = new != self.configured
        self.configured = new
        return new, changed

    def rebuild_loader(self) -> None:
        if self.configured < 1:
            raise UserError("out of memory even at batch size 1: the model does not fit on this device")
        self.loader = self.configured


@dataclass
class SearchResult:
    batch_size: int
    tried: list[int]


def scale_batch_size(run_trial: Callable[[int], None], current_batch_size: int, dataset_length: int,
                     mode: str = "power", init_val: int = 2, max_trials: int = 25, margin: float = 0.05,
                     max_val: int = 8192) -> SearchResult:
    """Search a batch size; `run_trial(size)` runs a few training steps at `size` and raises on OOM."""
    if mode not in ("power", "binsearch"):
        raise ValueError(f"mode must be 'power' or 'binsearch', got {mode!r}")
    sizes = _Sizes(configured=current_batch_size, loader=current_batch_size, dataset_length=dataset_length,
                   max_val=max_val)

    def trial() -> None:
        sizes.tried.append(sizes.loader)
        run_trial(sizes.loader)

    new_size, _ = sizes.adjust(value=init_val)
    search = _power if mode == "power" else _binsearch
    new_size = search(trial, sizes, new_size, max_trials)
    if mode == "binsearch" and margin > 0:
        new_size = max(1, int(new_size * (1 - margin)))
    free_memory()
    return SearchResult(new_size, sizes.tried)


def _power(trial: Callable[[], None], sizes: _Sizes, new_size: int, max_trials: int) -> int:
    any_success = False
    last_successful = new_size
    for i in range(max_trials):
        free_memory()
        if new_size >= sizes.max_val:
            break
        try:
            trial()
            last_successful = new_size
            if i + 1 >= max_trials:
                new_size = last_successful
                break
            new_size, changed = sizes.adjust(factor=2.0)
            if not changed:
                break
            sizes.rebuild_loader()
            any_success = True
        except RuntimeError as error:
            if not is_oom_error(error):
                raise
            free_memory()
            new_size, changed = sizes.adjust(factor=0.5)
            if not changed and any_success:  # stuck at the data set's length (see the module docstring)
                return _fall_back(sizes, last_successful)
            sizes.rebuild_loader()
            if any_success:
                break
    return new_size


def _fall_back(sizes: _Sizes, size: int) -> int:
    sizes.configured = sizes.loader = size
    return size


def _binsearch(trial: Callable[[], None], sizes: _Sizes, new_size: int, max_trials: int) -> int:
    low, high, count = 1, None, 0
    while True:
        free_memory()
        if new_size >= sizes.max_val:
            break
        try:
            trial()
            last_successful = new_size
            count += 1
            if count >= max_trials:
                new_size = last_successful
                break
            low = new_size
            if high:
                if high - low <= 1:
                    break
                new_size, changed = sizes.adjust(value=(high + low) // 2)
            else:
                new_size, changed = sizes.adjust(factor=2.0)
            if not changed:
                break
            sizes.rebuild_loader()
        except RuntimeError as error:
            if not is_oom_error(error):
                raise
            free_memory()
            high = new_size
            new_size, changed = sizes.adjust(value=(high + low) // 2)
            if not changed:  # stuck at the data set's length (see the module docstring)
                return _fall_back(sizes, low)
            sizes.rebuild_loader()
            if high - low <= 1:
                break
    return new_size


def search_with_optimization(optimization: Optimization, make_loader: Callable[[int], DataLoader],
                             current_batch_size: int, dataset_length: int, mode: str,
                             steps_per_trial: int = 3) -> SearchResult:
    """Run the search with real training steps, then put back model, optimizer, scheduler, scaler and every RNG
    state as they were before it (Lightning restores the weights from a temporary checkpoint but not the RNG;
    this trainer restores both, so the search leaves no trace on the run)."""
    saved = {name: copy.deepcopy(getattr(optimization, name).state_dict())
             for name in ("model", "optimizer", "scheduler", "precision")}

    def run_trial(batch_size: int) -> None:
        loader, steps = make_loader(batch_size), 0
        optimization.model.train()
        while steps < steps_per_trial:
            for batch_idx, batch in enumerate(loader):
                steps += optimization.training_step(batch, batch_idx, len(loader))[1]
                if steps >= steps_per_trial:
                    break

    with isolate_rng():
        try:
            trial = cleaning_up_after_oom(run_trial, optimization.optimizer, optimization.precision.scaler)
            return scale_batch_size(trial, current_batch_size, dataset_length, mode=mode)
        finally:
            for name, state in saved.items():
                getattr(optimization, name).load_state_dict(state)
            optimization.optimizer.zero_grad(set_to_none=True)
