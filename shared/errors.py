"""The errors a run reports to its user in one line (`shared/entry_point.py` turns them into an exit status), and
the interruption that ends a run with a resumable checkpoint."""

from __future__ import annotations

import signal
import sys


class UserError(Exception):
    """A problem with the user's input (a flag, a file, a record): reported in one line, exit status 2."""


class DataError(UserError):
    """A data file that cannot be read as SQuAD; the message names the file and, where known, the record."""


class Interrupted(Exception):
    """Training stopped on Ctrl-C or SIGTERM after saving a resumable checkpoint: exit status 128 + the signal."""

    def __init__(self, signum: int, epoch: int, step: int, path: str, announce: bool = True):
        self.signum = signum
        self.announce = announce  # False on the DDP ranks other than 0: one message per run
        super().__init__(f"interrupted by {signal.Signals(signum).name} at epoch {epoch}, step {step}: saved {path}; "
                         f"continue with --resume last")


def print_error(message: str) -> None:
    """`error: <message>` on stderr in one write, newline included: the ranks under torchrun share this stderr, and
    print's two writes (the text, then the newline) let two ranks' lines run into one."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()


def out_of_memory_error(batch_size: int) -> UserError:
    """Out of memory during ordinary training (not during the batch-size search): what to do about it."""
    smaller = max(1, batch_size // 2)
    return UserError(f"out of memory while training at --batch-size {batch_size}: let --auto-batch-size power find "
                     f"a size that fits, or give a smaller --batch-size (e.g. {smaller})")


def no_training_batches_error(limit: float, num_batches: int) -> UserError:
    """`--limit-train-batches` as a fraction so small that an epoch would train no batch at all."""
    return UserError(f"--limit-train-batches {limit}: {limit} of {num_batches} training batches is less than one "
                     f"batch; give a fraction of at least {1 / num_batches:.4g}, or a number of batches")
