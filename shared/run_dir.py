"""Where a run goes, and what its directory holds.

With no `--output-dir`, each run gets its own directory, as Lightning's loggers version theirs:
`runs/<trainer>/version_N` (or `runs/<--name>/version_N`) with the next free N, created with one `mkdir`, so two
runs started at the same moment never take the same version. `--resume last` continues the latest version that
has a checkpoint.
Rank 0 decides; the other ranks of a DDP run learn its choice (from the environment of the process that
started them, or, under torchrun or srun, from a key-value store at the rendezvous address). A directory is
locked by the run writing to it, and a finished run is never replaced without `--overwrite`.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
from datetime import timedelta
from pathlib import Path

from shared.errors import UserError
from shared.launcher import launcher, launcher_world_size

_HELD: dict[Path, object] = {}  # output directories this process holds the lock of, for its whole life

# Everything a run writes, in every trainer (the same artifact tree).
ARTIFACTS = ("checkpoints", "metrics.csv", "hparams.yaml", "tensorboard", "predictions.jsonl",
             "test_metrics.json", "export", "tokenizer", "data", ".metrics.csv.before-resume")


def holds_run(output_dir: Path) -> bool:
    return any((output_dir / name).exists() for name in ("checkpoints", "metrics.csv"))


def lock_output_dir(output_dir: Path) -> None:
    """Two runs never write into one directory at once: an exclusive lock on <output-dir>/.lock, held until
    this process ends (the kernel drops it however the process ends, kill -9 included). A POSIX record lock, not
    flock: the processes a run forks (DataLoader workers) do not inherit it, so it ends with the run itself."""
    key = output_dir.resolve()
    if key in _HELD:
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    handle = open(output_dir / ".lock", "a+")
    for _ in range(5):  # `python -m shared.runs` takes the lock for an instant to see if a run holds it
        try:
            fcntl.lockf(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError:  # EAGAIN or EACCES: held
            time.sleep(0.1)
    else:
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
CHOSEN_ENV = "QG_RUN_DIR"  # "<pid>:<dir>": rank 0's choice, for the ranks it starts itself (they inherit it)
_STORE_KEY = "qg_run_directory"
_store = None  # the torchrun store rank 0 shares its choice through; kept for the process group to reuse
_new: list[Path] = []  # the version directory this process made, removed if the run fails before using it


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


def has_checkpoint(run: Path) -> bool:
    """A run to continue: its last.ckpt, or a checkpoint-N/ folder of transformers' Trainer (hf_trainer/)."""
    checkpoints = run / "checkpoints"
    return (checkpoints / "last.ckpt").is_file() or any(checkpoints.glob("checkpoint-*/trainer_state.json"))


def choose_run_directory(args, trainer: str, rank: int, say=print) -> Path:
    """The run's directory, created when new: --output-dir when given; else under runs/<--name or trainer>/ the
    latest version with a checkpoint for --resume last, the run whose last.ckpt --resume PATH names, or else a new
    version. Rank 0 chooses; the other ranks of a DDP run take its choice."""
    if args.output_dir is not None:
        return Path(args.output_dir)
    root = RUNS / (args.name or trainer)
    if rank > 0:
        return _rank_zero_choice(root, rank, _store_timeout(args))
    resume = Path(args.resume) if args.resume not in (None, "last") else None
    if resume is not None and not resume.is_file():
        raise UserError(f"--resume {args.resume}: no checkpoint at {resume}")
    if args.resume == "last":
        resumable = [path for path in versions(root) if has_checkpoint(path)]
        if not resumable:
            raise UserError(f"--resume last: no run under {root} has a checkpoint to continue")
        chosen = resumable[-1]
        say(f"resuming {chosen}, the latest version under {root} with a checkpoint")
    elif resume is not None and resume.name == "last.ckpt" and resume.parent.name == "checkpoints":
        chosen = resume.parent.parent  # the run the checkpoint is the last of: continue it
    else:  # a fresh run, or one that starts from an earlier checkpoint: the run it came from stays as it was
        chosen = new_version(root)
        _new.append(chosen)
        say(f"run directory: {chosen}")
    os.environ[CHOSEN_ENV] = f"{os.getpid()}:{chosen}"
    if launcher() is not None and launcher_world_size() > 1:
        _launcher_store(rank, _store_timeout(args)).set(_store_key(), str(chosen))
    return chosen


def discard_if_unused() -> None:
    """A run that failed before writing anything (a bad data file, say) leaves no empty version behind."""
    for path in _new:
        if path.is_dir() and not any((path / name).exists() for name in ("hparams.yaml", "metrics.csv",
                                                                        "checkpoints")):
            shutil.rmtree(path, ignore_errors=True)
    _new.clear()


def _store_timeout(args) -> timedelta:
    """As long as the ranks wait for each other anywhere (--ddp-timeout): nodes may start minutes apart."""
    return timedelta(seconds=getattr(args, "ddp_timeout", 1800.0))


def _store_key() -> str:
    return f"{_STORE_KEY}/{os.environ.get('TORCHELASTIC_RESTART_COUNT', os.environ.get('SLURM_RESTART_COUNT', '0'))}"


def _launcher_store(rank: int, timeout: timedelta):
    """The key-value store the ranks meet at: torchrun's agent's, or one rank 0 hosts on MASTER_ADDR:MASTER_PORT
    (a multi-tenant store, which the process group shares when it starts)."""
    global _store
    if _store is None:
        from torch.distributed import TCPStore

        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise UserError("under srun without MASTER_ADDR and MASTER_PORT the ranks cannot agree on a new version "
                            "directory: export both (docs/multi-node.md), or give --output-dir")
        host, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
            _store = TCPStore(host, port, is_master=False, timeout=timeout)
        else:
            _store = TCPStore(host, port, launcher_world_size(), is_master=rank == 0, timeout=timeout,
                              wait_for_workers=False, multi_tenant=True)
    return _store


def _rank_zero_choice(root: Path, rank: int, timeout: timedelta) -> Path:
    if launcher() is not None:  # torchrun or srun started every rank: rank 0 shares its choice in the store
        try:
            return Path(_launcher_store(rank, timeout).get(_store_key()).decode())
        except RuntimeError as error:
            raise UserError(f"rank {rank}: rank 0 chose no run directory under {root} "
                            f"({str(error).splitlines()[0]})") from None
    pid, _, chosen = os.environ.get(CHOSEN_ENV, "").partition(":")
    if pid != str(os.getppid()):  # not set by the process that started this one
        raise UserError(f"rank {rank}: started by another launcher than the trainer's own or torchrun, the ranks "
                        f"cannot agree on a new version directory: give --output-dir")
    return Path(chosen)
