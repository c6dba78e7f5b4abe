"""`--strategy ddp`: DistributedDataParallel, one process per device (Lightning: `strategies.DDPStrategy` and
its subprocess launcher).

Launched two ways, as Lightning is:
- `python vanilla/train.py --strategy ddp --devices N`: this process becomes rank 0 and starts ranks 1..N-1 as
  copies of the same command, with the rendezvous in environment variables;
- under `torchrun` or SLURM's `srun` (one machine or several): the launcher started every rank, and
  `cluster_environment.py` reads where each one stands; nothing is started here.
Backend gloo on the CPU, nccl on CUDA. Each rank sees its own shard of the data through a DistributedSampler
seeded with the run's seed and re-shuffled per epoch with `set_epoch`, as Lightning does. Only rank 0 writes
files; reductions keep every rank's early-stopping and checkpoint decisions identical.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import torch
import torch.distributed as dist

from shared.errors import Interrupted, print_error
from shared.process_tree import exit_now, interrupted_exit_status
from vanilla.cluster_environment import started_externally

T = TypeVar("T")

@dataclass(frozen=True)
class ProcessInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_global_zero(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_local_ranks(script: str, argv: list[str], world_size: int) -> list[subprocess.Popen]:
    """Start ranks 1..world_size-1 as copies of this command; this process takes rank 0."""
    rendezvous = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": str(world_size)}
    children = []
    for rank in range(1, world_size):
        env = dict(os.environ, **rendezvous, RANK=str(rank), LOCAL_RANK=str(rank))
        children.append(subprocess.Popen([sys.executable, script, *argv], env=env))
    os.environ.update(rendezvous, RANK="0", LOCAL_RANK="0")
    return children


class RankObserver(threading.Thread):
    """While rank 0 works, it watches the ranks it started (Lightning: `_ChildProcessObserver`): when one ends
    badly -- a crash, or a signal that ended it before it could stop cleanly -- it stops the others and ends rank 0,
    which would otherwise wait for the lost rank in a collective until the process group's timeout."""

    def __init__(self, children: list[subprocess.Popen]):
        super().__init__(daemon=True, name="rank-observer")
        self.children = children
        self.done = threading.Event()  # rank 0 ends the run itself from here on

    def run(self) -> None:
        while not self.done.wait(1.0):
            for rank, child in enumerate(self.children, start=1):
                status = child.poll()
                if status and not self.done.is_set():
                    self._end_run(rank, status)

    def _end_run(self, rank: int, status: int) -> None:
        """Rank 0 ends with the lost rank's status (128 + the signal that ended it)."""
        from shared.run_dir import discard_if_unused

        for child in self.children:
            if child.poll() is None:
                child.kill()
        how = f"was ended by {_signal_name(-status)}" if status < 0 else f"exited with status {status}"
        print_error(f"DDP rank {rank} {how}; the other ranks were stopped")
        discard_if_unused()
        exit_now(128 - status if status < 0 else status)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:  # a real-time signal has no name
        return f"signal {signum}"


def wait_for(children: list[subprocess.Popen], failed: bool) -> int:
    """Wait for the other ranks (killing them if this one failed: they may be blocked in a collective with it, and
    would take SIGTERM for a request to stop gracefully at the next batch); the worst exit status wins."""
    status = 0
    for child in children:
        if failed and child.poll() is None:
            child.kill()
        status = max(status, abs(child.wait()))
    return status


def run_ranks(script: str, argv: list[str], world_size: int, fit: Callable[[], T]) -> T:
    """Run `fit` in this process and in the other ranks (started here as copies of the command, or by torchrun),
    then leave together: wait for the other ranks (stopping them if this one failed) and end the process group."""
    children = [] if started_externally() else launch_local_ranks(script, argv, world_size)
    observer = RankObserver(children)
    observer.start()
    try:
        result = fit()
    except BaseException as error:
        observer.done.set()
        wait_for(children, failed=not isinstance(error, Interrupted))
        destroy_process_group()
        if isinstance(error, Interrupted) and int(os.environ["RANK"]) > 0:
            exit_now(interrupted_exit_status(error.signum))
        raise
    observer.done.set()
    status = wait_for(children, failed=False)
    destroy_process_group()
    if int(os.environ["RANK"]) > 0:
        exit_now(0)
    if status:
        raise SystemExit(f"error: another DDP rank exited with status {status}")
    return result


def init_process_group(device_type: str, timeout_seconds: float) -> ProcessInfo:
    info = ProcessInfo(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    if device_type == "cuda":
        torch.cuda.set_device(info.local_rank)
    backend = "nccl" if device_type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=info.rank, world_size=info.world_size,
                            timeout=timedelta(seconds=timeout_seconds))
    return info


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def reduce_any(flag: bool, device: torch.device) -> bool:
    """True on every rank if it is True on any (Lightning's `reduce_boolean_decision(..., all=False)`)."""
    if not dist.is_initialized():
        return flag
    value = torch.tensor(int(flag), device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        tensor = tensor.clone()
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def gather_objects(obj) -> list:
    """Every rank's `obj`, in rank order (one element when not distributed)."""
    if not dist.is_initialized():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()
