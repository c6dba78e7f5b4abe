"""The entry point's wrapper: what a trainer's `main` raises for its user becomes one line and an exit status,
never a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable

from shared.errors import Interrupted, UserError, print_error
from shared.process_tree import interrupted_exit_status, leave_process_group
from shared.run_dir import discard_if_unused


def exit_on_user_error(main: Callable[[], object]) -> Callable[[], None]:
    """Run `main`; a UserError becomes `error: <message>` on stderr and exit status 2, never a traceback (and a
    version directory the run made but never wrote to is removed); an interruption prints how to go on and exits
    128 + signal number (130 for Ctrl-C, 143 for SIGTERM; 0 in the ranks rank 0 started, `shared.process_tree`).
    A DDP process ends its process group on the way out, whichever way it leaves."""

    def wrapped() -> None:
        try:
            main()
        except UserError as error:
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
