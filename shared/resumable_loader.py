"""A DataLoader that resumes part-way through an epoch, in the same order (exact resume; no framework does it).

Resumed mid-epoch, a plain shuffled DataLoader starts a fresh shuffle: samples are repeated or skipped (the
Lightning tracker's #17543 and #18780). A shuffled loader draws its order from the global torch generator when
its iterator starts (the epoch's `RandomSampler` seed, and a base seed for workers), so this loader keeps the
generator's state of that moment. Its `state_dict` holds that state and the batches already trained (the trainer
keeps `batches_trained` current; 0 between epochs). Given that state back, its next iterator starts from the same
generator state, so it draws the same order, and skips the batches already trained. The order is drawn at the
first batch, so a trainer restores the interrupted run's generator states after fetching it. An unresumed run draws
exactly what a plain DataLoader draws.

This is Lightning's stateful-dataloader interface: Lightning saves the train loader's `state_dict()` in every
checkpoint and calls `load_state_dict` before the resumed epoch's iterator is made. Under DDP the order comes
from the DistributedSampler's seed and epoch instead; the skip is the same.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader


class ResumableDataLoader(DataLoader):
    batches_trained = 0
    _epoch_start_rng: torch.Tensor | None = None
    _resume: dict | None = None

    def __iter__(self):
        resume, self._resume = self._resume, None
        if resume is not None:
            torch.set_rng_state(resume["epoch_start_rng"])
        self._epoch_start_rng = torch.get_rng_state()
        batches = super().__iter__()
        return batches if resume is None else _skip(batches, resume["batches_trained"])

    def state_dict(self) -> dict:
        return {"epoch_start_rng": self._epoch_start_rng, "batches_trained": self.batches_trained}

    def load_state_dict(self, state: dict) -> None:
        self.batches_trained = state["batches_trained"]
        self._resume = state if self.batches_trained else None


def _skip(batches, count: int):
    """Lazily, as a DataLoader iterator is: the sampler's order is drawn at the first batch (a
    DistributedSampler's after the trainer's `set_epoch`)."""
    for _ in range(count):
        next(batches)  # fetched and dropped: the interrupted run trained them
    yield from batches
