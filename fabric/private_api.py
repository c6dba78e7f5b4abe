"""The three places where the Fabric trainer reaches past Fabric's public API (Lightning Fabric 2.6).

No public API exists for any of them, so they are here together, one function each, and nowhere else:
- `loader_fabric_iterates`: under DDP `fabric.setup_dataloaders` makes a new DataLoader with a DistributedSampler
  in place of the one it is given, reachable only as its wrapper's `_dataloader`; exact resume reads and sets
  that loader's state (`shared/resumable_loader.py`).
- `continue_sampler_epochs`: Fabric sets a DistributedSampler's epoch to the number of times its wrapper was
  iterated (`_num_iter_calls`, once an epoch here); a resumed run continues that count.
- `processes_fabric_started`: the processes Fabric's launcher started (`launcher.procs`), which rank 0 stops when
  it fails alone (the Trainer does the same; Fabric leaves them waiting in a collective).
"""

from __future__ import annotations

from torch.utils.data import DataLoader


def loader_fabric_iterates(fabric_loader) -> DataLoader:
    return fabric_loader._dataloader


def continue_sampler_epochs(fabric_loader, epochs_done: int) -> None:
    fabric_loader._num_iter_calls = epochs_done


def processes_fabric_started(fabric) -> list:
    return getattr(fabric.strategy.launcher, "procs", [])  # none when torchrun or srun started them
