"""The checkpoint dict as the hand-written trainer and the Fabric trainer build and restore it themselves, in
Lightning's layout (the Trainer builds its own): the layout's version key, the weights under `state_dict`, and the
one-line errors of a restore. Reading a checkpoint file, and a failed write's one line, are `checkpoint_file.py`,
which every trainer uses."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from shared.checkpoint_file import PREFIX, CheckpointError, check_weights_fit

LIGHTNING_LAYOUT = "2.6.6"  # the checkpoint layout the dict follows (Lightning reads no checkpoint without the key)


def load_model_weights(model: torch.nn.Module, checkpoint: dict, path: str | Path) -> None:
    """The checkpoint's `model.*` weights into `model`, once they are known to fit it."""
    check_weights_fit(model, checkpoint, path)
    model.load_state_dict({name.removeprefix(PREFIX): tensor for name, tensor in checkpoint["state_dict"].items()
                           if name.startswith(PREFIX)})


@contextmanager
def resuming_from(path: str | Path) -> Iterator[None]:
    """A checkpoint that lacks what resuming reads, or holds it in another shape: one line naming the file."""
    try:
        yield
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot resume from it ({type(error).__name__}: {error})") from None


def check_same_world_size(path: str | Path, written_by_processes: int, world_size: int) -> None:
    """Each rank resumes its own RNG states and its share of the data: as many processes as wrote the file."""
    if written_by_processes != world_size:
        raise CheckpointError(f"{path}: was written by {written_by_processes} process(es); resume it with the same "
                              f"--devices")
