"""The run's settings: the command line with what is decided before training filled in -- the run directory, and
the batch size (the one a resumed run had, or the one the search found) -- resolved once, into one read-only
object that the trainer reads and hparams.yaml records. Nothing assigns to it afterwards, so what a run records
does not depend on the order in which its steps ran.

The Lightning trainer resolves it before its search, which needs the Trainer: Lightning's Tuner then writes the
size it finds where Lightning keeps it (the DataModule's `batch_size` and the LightningModule's hparams, which
hparams.yaml records), and the trainer reads the batch size from there."""

from __future__ import annotations

import argparse
from pathlib import Path


class RunSettings(argparse.Namespace):
    """The parsed command line's attributes, read-only."""

    def __init__(self, **values):
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError(f"the run's settings are resolved once, before training: {name} cannot be set")

    def __delattr__(self, name):
        raise AttributeError(f"the run's settings are resolved once, before training: {name} cannot be removed")


def resolve_settings(args: argparse.Namespace, output_dir: Path, batch_size: int) -> RunSettings:
    """The command line `args`, with the run's directory and its batch size."""
    return RunSettings(**{**vars(args), "output_dir": str(output_dir), "batch_size": batch_size})


def batch_size_to_continue(resume: dict | None, args: argparse.Namespace) -> int:
    """A resumed run continues at the batch size it had (it may have come from the search); a new one starts at
    --batch-size."""
    if resume is None:
        return args.batch_size
    return resume["hyper_parameters"].get("batch_size", args.batch_size)
