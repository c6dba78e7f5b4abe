"""Checkpoint files: atomic writes and safe loads (Lightning: `TorchCheckpointIO` and `_atomic_save`).

A checkpoint is written to a temporary file in the same directory, flushed to disk, then renamed over the
target: a crash or a full disk mid-write leaves the previous file as it was, never a truncated one. Loading uses
`weights_only=True`, so a checkpoint cannot run code when it is read.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from shared.errors import UserError


class CheckpointError(UserError):
    """A checkpoint that cannot be written or read; the message names the file."""


def atomic_save(checkpoint: dict, path: str | Path) -> None:
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)  # serialise first: a failure here touches no file
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(buffer.getbuffer())
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {error.strerror or error}; "
                              f"the previous checkpoint, if any, is intact") from None
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- torch.load fails in many ways on a bad file (even KeyError)
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first_line[:200]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a checkpoint of this project (no 'state_dict')")
    return checkpoint
