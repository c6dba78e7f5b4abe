"""One-line errors for the user, and the wrapper that turns them into an exit status instead of a traceback."""

from __future__ import annotations

import sys
from typing import Callable


class UserError(Exception):
    """A problem with the user's input (a flag, a file, a record): reported in one line, exit status 2."""


class DataError(UserError):
    """A data file that cannot be read as SQuAD; the message names the file and, where known, the record."""


def exit_on_user_error(main: Callable[[], object]) -> Callable[[], None]:
    """Run `main`; a UserError becomes `error: <message>` on stderr and exit status 2, never a traceback."""

    def wrapped() -> None:
        try:
            main()
        except UserError as error:
            message = " ".join(str(error).split())  # one line, whatever the message held
            print(f"error: {message}", file=sys.stderr)
            sys.exit(2)

    wrapped.__name__ = getattr(main, "__name__", "main")
    wrapped.__doc__ = main.__doc__
    return wrapped


def out_of_memory_error(batch_size: int) -> UserError:
    """Out of memory during ordinary training (not during the batch-size search): what to do about it."""
    smaller = max(1, batch_size // 2)
    return UserError(f"out of memory while training at --batch-size {batch_size}: let --auto-batch-size power find "
                     f"a size that fits, or give a smaller --batch-size (e.g. {smaller})")
