"""Where a hand-written fit loop stands, and how many batches its epoch trains: the framework-free parts that the
hand-written loop (vanilla/fit_loop.py) and the Fabric trainer's loop both need (Lightning keeps the same in its
fit loop's progress counters and its `limit_train_batches`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from shared.errors import no_training_batches_error


@dataclass
class LoopPosition:
    """Where training stands; a checkpoint's `loop_state` holds it, so a resumed run continues the same batches."""

    epoch: int = 0
    global_step: int = 0
    batches_done: int = 0  # batches of `epoch` already trained
    epoch_finished: bool = False  # validation and epoch-end of `epoch` done
    should_stop: bool = False
    train_loss_sum: torch.Tensor = field(default_factory=lambda: torch.tensor(0.0))
    train_samples: int = 0

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, state[name])


def num_train_batches(loader_length: int, limit: float | int) -> int:
    """Lightning's `limit_train_batches`: a whole number is a count of batches, a fraction a share of the epoch."""
    if isinstance(limit, int):
        return min(loader_length, limit)
    batches = loader_length if limit == 1.0 else int(loader_length * limit)
    if batches == 0:
        raise no_training_batches_error(limit, loader_length)
    return batches
