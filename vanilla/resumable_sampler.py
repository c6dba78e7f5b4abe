"""A shuffling sampler that can resume part-way through an epoch.

Lightning saves neither the shuffle nor the position inside an epoch (its tracker's issues #17543 and #18780):
a plain DataLoader resumed mid-epoch runs a fresh shuffle. This sampler draws each epoch's order exactly as
`torch.utils.data.RandomSampler` does -- one int64 seed from the global torch generator when iteration starts,
then `randperm` with a private generator -- so an uninterrupted run consumes the same random numbers as one
with a plain shuffled DataLoader. Its state is that seed; the position comes from the loop's batch count.
"""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class ResumableRandomSampler(Sampler[int]):
    def __init__(self, num_samples: int):
        self.num_samples = num_samples
        self.seed: int | None = None
        self._resume: tuple[int, int] | None = None

    def __len__(self) -> int:
        return self.num_samples

    def resume_epoch(self, seed: int, samples_done: int) -> None:
        """Make the next iteration repeat the epoch shuffled with `seed`, skipping `samples_done` indices."""
        self._resume = (seed, samples_done)

    def __iter__(self):
        if self._resume is not None:
            self.seed, start = self._resume
            self._resume = None
        else:
            self.seed, start = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        yield from torch.randperm(self.num_samples, generator=generator).tolist()[start:]
