"""The data loaders of a run (Lightning: the DataModule's loaders, with the `DistributedSampler` that Lightning's
data connector puts in under DDP: shuffled with the run's seed for training, in order for evaluation)."""

from __future__ import annotations

from torch.utils.data import DataLoader, DistributedSampler

from shared.data import PadCollator
from shared.resumable_loader import ResumableDataLoader
from vanilla.ddp import ProcessInfo


class DataConnector:
    def __init__(self, data, num_workers: int, process: ProcessInfo, seed: int):
        self.data = data
        self.num_workers = num_workers
        self.process = process
        self.seed = seed
        self.collate = PadCollator(data.tokenizer.pad_token_id)

    def _sampler(self, dataset, shuffle: bool) -> DistributedSampler | None:
        if not self.process.distributed:
            return None
        return DistributedSampler(dataset, num_replicas=self.process.world_size, rank=self.process.rank,
                                  shuffle=shuffle, seed=self.seed)

    def train_loader(self, batch_size: int) -> ResumableDataLoader:
        """Built once and iterated every epoch, as Lightning does (each epoch's shuffle draws from the global
        generator then)."""
        sampler = self._sampler(self.data.train, shuffle=True)
        return ResumableDataLoader(self.data.train, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                                   collate_fn=self.collate, num_workers=self.num_workers)

    def val_loader(self, batch_size: int) -> DataLoader:
        return DataLoader(self.data.dev, batch_size=batch_size, sampler=self._sampler(self.data.dev, shuffle=False),
                          collate_fn=self.collate, num_workers=self.num_workers)
