"""Who started this process, and where the other ranks are (Lightning: the cluster environment plugins,
`TorchElasticEnvironment` and `SLURMEnvironment`, which the Trainer detects on its own).

- Under `torchrun` (one machine or several): the launcher has set RANK, LOCAL_RANK, WORLD_SIZE, MASTER_ADDR and
  MASTER_PORT.
- Under SLURM (`srun` in an `sbatch` script): one task per device on every node, described by SLURM's own
  variables; the rendezvous is MASTER_ADDR/MASTER_PORT if set, else the first host of the node list and a port
  made from the job id, as Lightning makes it, so every trainer of the same job meets at the same place.
- Otherwise nothing started this process: the trainer starts the ranks of this one machine itself.
Either launcher's world must be `--num-nodes` x `--devices` processes, `--devices` on each node; anything else is
one line naming the numbers.
"""

from __future__ import annotations

import os
import re

from shared.errors import UserError
from shared.launcher import check_launcher_world

TORCHRUN_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def launched_by_torchrun() -> bool:
    return all(key in os.environ for key in TORCHRUN_KEYS)


def launched_by_slurm() -> bool:
    """`srun` sets SLURM_NTASKS; an interactive allocation (job name bash or interactive) starts no tasks itself."""
    return "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive")


def started_externally() -> bool:
    """Every rank was started by a launcher (torchrun first: it may run inside a SLURM allocation)."""
    return launched_by_torchrun() or launched_by_slurm()


def first_slurm_host(nodelist: str) -> str:
    """'node[3-5,9]' -> 'node3'; 'a,b' -> 'a'; 'a b' -> 'a'."""
    first = re.split(r"[ ,](?![^\[]*\])", nodelist.strip())[0]
    return re.sub(r"\[(\d+).*\]", r"\1", first)


def read_slurm_environment(num_nodes: int, devices: int) -> None:
    """Translate SLURM's variables into the ones the process group reads (RANK, ... MASTER_PORT)."""
    tasks, per_node = int(os.environ["SLURM_NTASKS"]), os.environ.get("SLURM_NTASKS_PER_NODE")
    nodes = int(os.environ.get("SLURM_NNODES", "1"))
    if per_node is None and tasks > 1:
        raise UserError(f"SLURM started {tasks} tasks without --ntasks-per-node: give sbatch --ntasks-per-node "
                        f"(= --devices) and --nodes (= --num-nodes)")
    if nodes != num_nodes:
        raise UserError(f"--num-nodes {num_nodes}: SLURM allocated {nodes} node(s) (--nodes); give the same number "
                        f"to both")
    job_id = os.environ.get("SLURM_JOB_ID")
    os.environ.setdefault("MASTER_ADDR", first_slurm_host(os.environ.get("SLURM_NODELIST", "127.0.0.1")))
    os.environ.setdefault("MASTER_PORT", str(15000 + int(job_id[-4:]) if job_id else 12910))
    os.environ.update(RANK=os.environ["SLURM_PROCID"], LOCAL_RANK=os.environ["SLURM_LOCALID"],
                      WORLD_SIZE=str(tasks))


def detect(num_nodes: int, devices: int) -> None:
    """Check the launcher's world against `--num-nodes` x `--devices` (processes per node) and export its ranks."""
    if launched_by_slurm() and not launched_by_torchrun():
        read_slurm_environment(num_nodes, devices)
    if launched_by_torchrun():
        check_launcher_world(num_nodes, devices, int(os.environ["WORLD_SIZE"]))
