"""A DataLoader that resumes part-way through an epoch, in the same order (exact resume), which a plain one cannot.

Resumed mid-epoch, a plain shuffled DataLoader starts a fresh shuffle, repeating or skipping samples (the Lightning
tracker's #17543 and #18780). It draws its order from the global torch generator when its epoch starts (the
`RandomSampler` seed, and a base seed for workers), so this loader keeps the generator's state of that moment. Its
`state_dict` holds that state and the batches already trained (`batches_trained`, kept current by the trainer; 0
between epochs); given it back, the loader's next epoch draws the same order and skips the batches trained.

An epoch starts at its first batch, not when the iterator is made: a DistributedSampler's epoch is set by then
(Lightning makes a resumed epoch's iterator before it sets it, and with workers a DataLoader iterator reads the
sampler as soon as it is made). A trainer therefore restores the interrupted run's generator states after the
first batch is fetched. Unresumed, the loader draws what a plain DataLoader draws, at the first batch.

This is Lightning's stateful-dataloader interface: Lightning saves the train loader's `state_dict()` in every
checkpoint and calls `load_state_dict` before the resumed epoch's iterator is made. torchdata's `StatefulDataLoader`
has it too, but is not a pinned requirement, and shuffles with its own generator, not in plain Lightning's order.
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
        return self._epoch(resume)

    def _epoch(self, resume: dict | None):
        """A generator: nothing is drawn or fetched until the first batch is asked for."""
        if resume is not None:
            torch.set_rng_state(resume["epoch_start_rng"])
        self._epoch_start_rng = torch.get_rng_state()
        batches = super().__iter__()
        for _ in range(resume["batches_trained"] if resume is not None else 0):
            next(batches)  # fetched and dropped: the interrupted run trained them
        yield from batches

    def state_dict(self) -> dict:
        return {"epoch_start_rng": self._epoch_start_rng, "batches_trained": self.batches_trained}

    def load_state_dict(self, state: dict) -> None:
        self.batches_trained = state["batches_trained"]
        self._resume = state if self.batches_trained else None
