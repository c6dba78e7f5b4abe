"""One-line errors for the user, and the wrapper that turns them (and an interrupted run) into an exit status
instead of a traceback."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable


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


def exit_on_user_error(main: Callable[[], object]) -> Callable[[], None]:
    """Run `main`; a UserError becomes `error: <message>` on stderr and exit status 2, never a traceback (and a
    version directory the run made but never wrote to is removed); an interruption prints how to go on and exits
    128 + signal number (130 for Ctrl-C, 143 for SIGTERM; 0 in the ranks rank 0 started, `shared.process_tree`).
    A DDP process ends its process group on the way out, whichever way it leaves."""

    def wrapped() -> None:
        from shared.process_tree import interrupted_exit_status, leave_process_group

        try:
            main()
        except UserError as error:
            from shared.run_dir import discard_if_unused  # here, not at the top: run_dir needs this module

            discard_if_unused()
            message = " ".join(str(error).split())  # one line, whatever the message held
            print_error(message)
            leave_process_group(2)
            sys.exit(2)
        except Interrupted as stop:
            if stop.announce:
                print(stop, flush=True)
            leave_process_group(interrupted_exit_status(stop.signum))
            sys.exit(interrupted_exit_status(stop.signum))
        leave_process_group(0)

    wrapped.__name__ = getattr(main, "__name__", "main")
    wrapped.__doc__ = main.__doc__
    return wrapped


def out_of_memory_error(batch_size: int) -> UserError:
    """Out of memory during ordinary training (not during the batch-size search): what to do about it."""
    smaller = max(1, batch_size // 2)
    return UserError(f"out of memory while training at --batch-size {batch_size}: let --auto-batch-size power find "
                     f"a size that fits, or give a smaller --batch-size (e.g. {smaller})")


def no_training_batches_error(limit: float, num_batches: int) -> UserError:
    """`--limit-train-batches` as a fraction so small that an epoch would train no batch at all."""
    return UserError(f"--limit-train-batches {limit}: {limit} of {num_batches} training batches is less than one "
                     f"batch; give a fraction of at least {1 / num_batches:.4g}, or a number of batches")
