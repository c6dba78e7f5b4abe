"""Where a run goes, and what its directory holds.

With no `--output-dir`, each run gets its own directory, as Lightning's loggers version theirs:
`runs/<trainer>/version_N` (or `runs/<--name>/version_N`) with the next free N, created with one `mkdir`, so two
runs started at the same moment never take the same version. `--resume last` continues the latest version that
has a checkpoint.
Rank 0 decides; the other ranks of a DDP run learn its choice (from the environment of the process that
started them, or, under torchrun, from a marker file rank 0 leaves in the run directory). A directory is
locked by the run writing to it, and a finished run is never replaced without `--overwrite`.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
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
    """The checkpoint --resume names: 'last' is the run directory's last.ckpt."""
    path = output_dir / "checkpoints" / "last.ckpt" if resume == "last" else Path(resume)
    if not path.is_file():
        raise UserError(f"--resume {resume}: no checkpoint at {path}")
    return path


RUNS = Path("runs")
VERSION = re.compile(r"version_(\d+)")
CHOSEN_ENV = "QG_RUN_DIR"  # rank 0's choice, for the ranks its launcher starts (they inherit the environment)
TORCHRUN_MARKER = ".torchrun-"  # + TORCHELASTIC_RUN_ID: rank 0's choice, for ranks torchrun started beside it


def versions(root: Path) -> list[Path]:
    """The version directories under `root`, in order of N."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), path) for path in root.iterdir()
             if (m := VERSION.fullmatch(path.name)) and path.is_dir()]
    return [path for _, path in sorted(found)]


def new_version(root: Path) -> Path:
    """Create and return root/version_N with the next free N; `mkdir` is atomic, so a concurrent run that took N
    first makes this one try N+1."""
    root.mkdir(parents=True, exist_ok=True)
    existing = versions(root)
    number = int(VERSION.fullmatch(existing[-1].name).group(1)) + 1 if existing else 0
    while True:
        path = root / f"version_{number}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1


def run_directory(args, trainer: str, rank: int, say=print) -> Path:
    """The run's directory: --output-dir when given; else a version under runs/<--name or trainer>/ -- the latest
    one for --resume last, the one a --resume PATH checkpoint belongs to, else a new one. Rank 0 decides."""
    if args.output_dir is not None:
        return Path(args.output_dir)
    root = RUNS / (args.name or trainer)
    if rank > 0:
        return _rank_zero_choice(root, rank)
    if args.resume == "last":
        resumable = [path for path in versions(root) if (path / "checkpoints" / "last.ckpt").is_file()]
        if not resumable:
            raise UserError(f"--resume last: no run under {root} has a checkpoint to continue")
        chosen = resumable[-1]
        say(f"resuming {chosen}, the latest version under {root} with a checkpoint")
    elif args.resume is not None and Path(args.resume).parent.name == "checkpoints":
        chosen = Path(args.resume).parent.parent  # continue in the run the checkpoint belongs to
    else:
        chosen = new_version(root)
        say(f"run directory: {chosen}")
    os.environ[CHOSEN_ENV] = str(chosen)
    if "TORCHELASTIC_RUN_ID" in os.environ:
        chosen.mkdir(parents=True, exist_ok=True)
        (chosen / f"{TORCHRUN_MARKER}{os.environ['TORCHELASTIC_RUN_ID']}").touch()
    return chosen


def _rank_zero_choice(root: Path, rank: int, timeout: float = 120.0) -> Path:
    run_id = os.environ.get("TORCHELASTIC_RUN_ID")
    if run_id is None:  # started by rank 0's own launcher, after it chose
        if CHOSEN_ENV not in os.environ:
            raise UserError(f"rank {rank}: the run directory rank 0 chose was not passed on ({CHOSEN_ENV} is unset)")
        return Path(os.environ[CHOSEN_ENV])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        marked = [path for path in versions(root) if (path / f"{TORCHRUN_MARKER}{run_id}").exists()]
        if marked:
            return marked[-1]
        time.sleep(0.2)
    raise UserError(f"rank {rank}: rank 0 chose no run directory under {root} within {timeout:.0f} s")
