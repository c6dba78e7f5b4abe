"""Writing checkpoint files atomically (Lightning: `TorchCheckpointIO` and `_atomic_save`).

A checkpoint is written to a temporary file in the same directory, flushed to disk, then renamed over the
target: a crash or a full disk mid-write leaves the previous file as it was, never a truncated one. Reading is
`shared.checkpoint_file.read_checkpoint` (`weights_only=True`: a checkpoint cannot run code when it is read).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch

from shared.checkpoint_file import cannot_write


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
        raise cannot_write(path, error) from None
    try:  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
