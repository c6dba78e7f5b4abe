"""The output directory of a run: what it holds, and refusing to overwrite a previous run by accident."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from shared.errors import UserError

_HELD: dict[Path, object] = {}  # output directories this process holds the lock of, for its whole life

# Everything a run writes, for both trainers (the same artifact tree).
ARTIFACTS = ("checkpoints", "metrics.csv", "hparams.yaml", "tensorboard", "predictions.jsonl",
             "test_metrics.json", "export", "tokenizer", "data")


def holds_run(output_dir: Path) -> bool:
    return any((output_dir / name).exists() for name in ("checkpoints", "metrics.csv"))


def lock_output_dir(output_dir: Path) -> None:
    """Two runs never write into one directory at once: an exclusive lock on <output-dir>/.lock, held until
    this process ends (the kernel drops it however the process ends, kill -9 included)."""
    key = output_dir.resolve()
    if key in _HELD:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    handle = open(output_dir / ".lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise UserError(f"--output-dir {output_dir}: another run{f' (pid {holder})' if holder else ''} is writing "
                        f"to it; wait for it to end, or choose another --output-dir") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    _HELD[key] = handle


def prepare_output_dir(output_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Fresh runs need an empty place: refuse a directory holding a run unless --overwrite says to replace it.
    Takes the directory's lock first, so that nothing is replaced under a run that is still writing."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output-dir {output_dir}: exists and is not a directory")
    lock_output_dir(output_dir)
    if resume is None and holds_run(output_dir):
        if not overwrite:
            raise UserError(f"--output-dir {output_dir} already holds a run: continue it with --resume last, "
                            f"or replace it with --overwrite")
        for name in ARTIFACTS:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()


def resolve_resume_path(output_dir: Path, resume: str) -> Path:
    path = output_dir / "checkpoints" / "last.ckpt" if resume == "last" else Path(resume)
    if not path.is_file():
        raise UserError(f"--resume {resume}: no checkpoint at {path}")
    return path
