"""DataLoader workers start from a fork server, never by forking the trainer itself.

A trainer runs threads (a loader's queue feeder, a progress bar's refresher, a process observer). On Python 3.11 a
process forked while another of its threads starts or ends can wait for ever inside `os.fork()` (CPython issue
#112275, fixed in 3.12: the child inherits the interpreter's thread-list lock held). Seen here, once in many runs:
a DDP rank's test loader forked its worker as an earlier loader's thread ended; the worker never started, its rank
waited for the batch, rank 0 in the gather after the test. The fork server (the default on Linux since Python
3.14) is one single-threaded process per trainer process, started with the trainer's script imported, so a worker
is still a cheap fork, of it.

The server also dies with its trainer (`shared.fork_server_dies_with_its_trainer`): a worker holds the server's
liveness pipe open and watches for its own parent, the server, so a trainer killed with -9 would otherwise leave
the server and its idle workers behind for ever.
"""

from __future__ import annotations

import multiprocessing


def start_loader_workers_from_a_fork_server() -> None:
    """For every DataLoader with num_workers > 0 this process builds from now on (each rung's, and the one
    transformers' Trainer builds, which takes no multiprocessing context)."""
    multiprocessing.set_start_method("forkserver", force=True)
    multiprocessing.set_forkserver_preload(["__main__", "shared.fork_server_dies_with_its_trainer"])
