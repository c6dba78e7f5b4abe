"""No rank left behind: the ranks a trainer starts itself end when the rank that started them ends.

A DDP run started as `python <trainer>/train.py --strategy ddp --devices N` is one process (rank 0) that starts the
others (vanilla by hand, Fabric and Lightning through their launchers). If rank 0 ends abruptly -- SIGTERM before
it handles signals, kill -9, a crash -- the others would wait at the rendezvous or in a collective until the
process group's timeout, orphaned. So each of them asks the kernel (Linux `prctl(PR_SET_PDEATHSIG)`) to SIGKILL it
the moment its parent ends. Ranks started by torchrun or srun are left to their launcher, which ends them itself.

Such a rank also ends with status 0 after a clean interruption: rank 0 reports the interruption and its status
for the run, and Lightning's and Fabric's launchers would otherwise take a non-zero status of a rank for a failure
and SIGKILL rank 0 while it still writes its checkpoint.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from typing import NoReturn

from shared.launcher import launcher

RANK_ZERO_PID = "QG_RANK_ZERO_PID"  # set by rank 0 for the ranks it starts (they inherit its environment)
_PR_SET_PDEATHSIG = 1
_started_by_rank_zero = False


def die_with_parent() -> None:
    """The kernel SIGKILLs this process when the thread that started it ends (Linux `PR_SET_PDEATHSIG`)."""
    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def end_with_rank_zero() -> None:
    """First thing in every trainer process. In a rank its trainer started (LOCAL_RANK > 0, rank 0's pid inherited,
    not torchrun's): die with the parent, or at once if the parent is already gone. In any other process: be the
    rank 0 of the ranks it may start."""
    global _started_by_rank_zero
    rank_zero = os.environ.get(RANK_ZERO_PID)
    started_by_rank_zero = (rank_zero is not None and int(os.environ.get("LOCAL_RANK", "0")) > 0
                            and launcher() != "torchrun")
    if not started_by_rank_zero:
        os.environ[RANK_ZERO_PID] = str(os.getpid())
        return
    die_with_parent()
    if os.getppid() != int(rank_zero):  # rank 0 ended before the request above took effect
        os._exit(1)
    _started_by_rank_zero = True


def started_by_rank_zero() -> bool:
    return _started_by_rank_zero


def interrupted_exit_status(signum: int) -> int:
    """128 + the signal (143 for SIGTERM) in rank 0 and under torchrun or srun; 0 in a rank rank 0 started (see
    the module's docstring)."""
    return 0 if _started_by_rank_zero else 128 + signum


def leave_process_group(status: int) -> None:
    """At the end of a DDP process, whatever it ends with (`status`): end the process group, as torch asks of
    every program, and in a rank other than 0 leave at once. Left to the interpreter's teardown, gloo's threads
    now and then abort it in C++ ("terminate called without an active exception", SIGABRT; pytorch/pytorch#190489):
    seen here in a rank under torchrun and under srun, and in about one run in twenty even with the group ended."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    rank = dist.get_rank()
    dist.destroy_process_group()  # local under gloo: no rank waits for another
    if rank > 0:
        exit_now(status)


def exit_now(status: int) -> NoReturn:
    """Leave without the interpreter's teardown (see `leave_process_group`): a rank whose work is done."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
