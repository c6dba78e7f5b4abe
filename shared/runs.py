"""The runs one has made, side by side: `python -m shared.runs [DIR]`, from the repository root (DIR defaults
to runs/).

Every run under DIR -- `DIR/<trainer or --name>/version_N` as the trainers make them, or any directory holding a
run's files -- in one line: its trainer, version, when it was last written, how it ended (running, finished,
stopped early, interrupted and resumable, failed, empty), its epochs, best dev_loss, test BLEU-4 and ROUGE-L, and the
settings that differ between the listed runs. All of it is read from the files the runs leave (hparams.yaml,
metrics.csv, test_metrics.json, checkpoints/last.ckpt or transformers' checkpoint-N/, .lock); a run whose lock
is held is still running. A directory that cannot be read, or holds only part of a run, is listed with the reason:
the listing never stops at one.
"""

from __future__ import annotations

import argparse
import csv
import fcntl
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from shared.checkpoint_file import written_by
from shared.cli import build_parser
from shared.entry_point import exit_on_user_error
from shared.errors import UserError
from shared.run_dir import VERSION

SETTINGS = {action.dest for action in build_parser("", "")._actions} - {"help"}  # what hparams.yaml records
RUN_FILES = ("hparams.yaml", "metrics.csv", "checkpoints", "test_metrics.json", ".lock")
RUN_FOLDERS = {"checkpoints", "export", "tokenizer", "tensorboard", "data"}
BOOKKEEPING = {"output_dir", "name", "resume", "overwrite"}  # where a run went, not how it trained


@dataclass
class Run:
    path: Path
    trainer: str = "?"
    when: str = ""
    status: str = ""
    epochs: str = ""
    best_dev_loss: str = ""
    bleu_4: str = ""
    rouge_l: str = ""
    hparams: dict = field(default_factory=dict)
    settings: str = ""


def _is_run(path: Path) -> bool:
    return bool(VERSION.fullmatch(path.name)) or any((path / name).exists() for name in RUN_FILES)


def _subdirectories(path: Path) -> list[Path]:
    try:
        return sorted((child for child in path.iterdir() if child.is_dir() and not child.name.startswith(".")),
                      key=_version_order)
    except OSError:
        return []


def find_runs(root: Path, depth: int = 3) -> list[Path]:
    """Run directories under `root` (holding a run's files, or named version_N), `depth` levels deep at most;
    a run's own folders (checkpoints, export, ...) are not searched, other folders are (runs/vanilla may hold
    a run of its own and its versions)."""
    found = []
    for child in _subdirectories(root):
        try:
            is_run = _is_run(child)
        except OSError:
            is_run = True  # listed, with the reason it cannot be read
        if is_run:
            found.append(child)
        if depth > 1 and not VERSION.fullmatch(child.name):
            found += [path for path in find_runs(child, depth - 1)
                      if path.parent.name not in RUN_FOLDERS and not (is_run and path.name in RUN_FOLDERS)]
    return found


def _version_order(path: Path) -> tuple:
    match = VERSION.fullmatch(path.name)
    return (0, int(match.group(1)), "") if match else (1, 0, path.name)


def _lock_held(run: Path) -> bool:
    lock = run / ".lock"
    if not lock.is_file():
        return False
    with open(lock) as handle:
        try:
            fcntl.lockf(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:  # EAGAIN or EACCES: a run holds the lock
            return True
        fcntl.lockf(handle, fcntl.LOCK_UN)
    return False


def read_run(path: Path) -> Run:
    """What the run's files say; whatever cannot be read becomes the reason in its status."""
    try:
        return _read_run(path)
    except OSError as error:
        return Run(path, status=f"unreadable: {_first_line(error)}")


def _read_run(path: Path) -> Run:
    run, problems = Run(path), []
    files = [p for p in (path / name for name in RUN_FILES) if p.exists()]
    files += list((path / "checkpoints").glob("*.ckpt")) if (path / "checkpoints").is_dir() else []
    # transformers' Trainer (hf_trainer/) saves checkpoint-N/ folders, each with its trainer_state.json
    steps = {int(state.parent.name.removeprefix("checkpoint-")): state
             for state in (path / "checkpoints").glob("checkpoint-*/trainer_state.json")
             if state.parent.name.removeprefix("checkpoint-").isdigit()}
    trainer_states = [steps[step] for step in sorted(steps)]
    files += trainer_states
    times = [p.stat().st_mtime for p in files if p.exists()]  # a broken link is passed over
    if times:
        run.when = time.strftime("%Y-%m-%d %H:%M", time.localtime(max(times)))
    try:
        hparams = yaml.safe_load((path / "hparams.yaml").read_text())
        if not isinstance(hparams, dict) or not SETTINGS & set(hparams):
            raise ValueError("not a run's settings")
        run.hparams = {key: value for key, value in hparams.items() if key in SETTINGS}
    except FileNotFoundError:
        problems.append("no hparams.yaml")
    except (OSError, yaml.YAMLError, UnicodeDecodeError, ValueError) as error:
        problems.append(f"unreadable hparams.yaml ({_first_line(error)})")
    dev = []
    try:
        with open(path / "metrics.csv", newline="") as handle:
            dev = [(int(row["epoch"]), float(row["dev_loss"])) for row in csv.DictReader(handle) if row.get("dev_loss")]
        run.epochs = str(len({epoch for epoch, _ in dev}))
        run.best_dev_loss = f"{min(loss for _, loss in dev):.4f}" if dev else ""
    except FileNotFoundError:
        if files:
            problems.append("no metrics.csv")
    except (OSError, KeyError, ValueError, TypeError, csv.Error) as error:
        problems.append(f"unreadable metrics.csv ({_first_line(error)})")
    last = None
    if (path / "checkpoints" / "last.ckpt").is_file():
        try:
            last = torch.load(path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
            run.trainer = written_by(last) or "?"
        except Exception as error:  # noqa: BLE001 -- a bad file is listed, whatever torch.load raised
            problems.append(f"unreadable last.ckpt ({_first_line(error)})")
    tested = None
    if (path / "test_metrics.json").is_file():
        try:
            tested = json.loads((path / "test_metrics.json").read_text())
            run.bleu_4, run.rouge_l = f"{tested['bleu_4']:.4f}", f"{tested['rouge_l']:.4f}"
        except (OSError, ValueError, KeyError, TypeError) as error:
            problems.append(f"unreadable test_metrics.json ({_first_line(error)})")
            tested = None
    if trainer_states:
        run.trainer = "hf_trainer"
    if run.trainer == "?" and path.parent.name in ("vanilla", "fabric", "lightning", "hf_trainer"):
        run.trainer = path.parent.name
    run.status = _status(path, run, tested, last, dev, problems, trainer_states[-1].parent if trainer_states else None)
    return run


def _status(path: Path, run: Run, tested, last, dev, problems: list[str], trainer_checkpoint: Path | None) -> str:
    if _lock_held(path):
        return "running"
    if not any(path.iterdir()):
        return "empty: the run ended before writing anything"
    if tested is not None:
        max_epochs = run.hparams.get("max_epochs")
        ran = len({epoch for epoch, _ in dev})
        early = dev and max_epochs and ran < max_epochs
        ended = f"stopped early after {ran} of {max_epochs} epochs" if early else "finished"
    elif last is not None:
        ended = f"interrupted at epoch {last.get('epoch')}, step {last.get('global_step')}: resumable"
        # (or failed after a checkpoint: the files do not tell the two apart)
    elif (path / "checkpoints" / "last.ckpt").exists():
        ended = "failed"  # the problems say what is wrong with its checkpoint
    elif trainer_checkpoint is not None:
        ended = f"interrupted after {trainer_checkpoint.name}"
    else:
        ended = "failed: no checkpoint"
    return "; ".join([ended, *problems])


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:80]


def differing_settings(runs: list[Run]) -> None:
    """Fill each run's `settings` with the hyperparameters whose values differ between the listed runs."""
    read = [run for run in runs if run.hparams]
    keys = sorted({key for run in read for key in run.hparams} - BOOKKEEPING)
    differing = [key for key in keys if len({repr(run.hparams.get(key)) for run in read}) > 1]
    for run in read:
        run.settings = " ".join(f"{key}={run.hparams.get(key)}" for key in differing)


def table(runs: list[Run], root: Path) -> str:
    header = ("run", "trainer", "last written", "status", "epochs", "best dev_loss", "bleu_4", "rouge_l",
              "settings that differ")
    rows = [header] + [(run.path.relative_to(root).as_posix(), run.trainer, run.when, run.status, run.epochs,
                        run.best_dev_loss, run.bleu_4, run.rouge_l, run.settings) for run in runs]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shared.runs", description=__doc__.splitlines()[0])
    parser.add_argument("dir", nargs="?", default="runs", help="where the runs are (default: runs)")
    args = parser.parse_args(argv)
    root = Path(args.dir)
    if not root.is_dir():
        raise UserError(f"{root}: no such directory (the trainers write their runs under runs/)")
    runs = [read_run(path) for path in find_runs(root)]
    differing_settings(runs)
    print(table(runs, root) if runs else f"no runs under {root}")


if __name__ == "__main__":
    exit_on_user_error(main)()
