"""Which launcher started the processes (torchrun, SLURM's srun, or none: the trainer starts its own), and the checks
Fabric and the Trainer leave out when a launcher did (vanilla/cluster_environment.py makes them by hand).

Lightning detects the launcher itself (`TorchElasticEnvironment`, `SLURMEnvironment`) but compares its world with
`num_nodes` x `devices` only when its DDP launcher runs, which it does not for a one-device strategy: two torchrun
processes with `--devices 1` would each train alone as rank 0, into the same directory. And srun's rendezvous is
set only once fit starts, after the ranks have to agree on a run directory.
"""

from __future__ import annotations

import os

from shared.devices import processes_per_node
from shared.errors import UserError


def launcher() -> str | None:
    """Which launcher started every rank: "torchrun", "srun" (SLURM's tasks, not an interactive allocation), or
    None (the trainer started the other ranks itself)."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        return "torchrun"
    if "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "srun"
    return None


def launcher_world_size() -> int:
    """How many processes the launcher started, over every node."""
    return int(os.environ.get("WORLD_SIZE", os.environ.get("SLURM_NTASKS", "1")))


def check_launcher_world(num_nodes: int, devices: int, world_size: int) -> None:
    """A launcher (torchrun, srun) must have started --num-nodes x --devices processes, --devices on each node."""
    per_node = os.environ.get("LOCAL_WORLD_SIZE") or os.environ.get("SLURM_NTASKS_PER_NODE")
    per_node = int(per_node.split("(")[0]) if per_node else None  # srun may write "2(x3)": 2 on each of 3 nodes
    if world_size != num_nodes * devices or per_node not in (None, devices):
        on_each = f", {per_node} on each node" if per_node is not None else ""
        raise UserError(f"--num-nodes {num_nodes} x --devices {devices} = {num_nodes * devices} processes, but the "
                        f"launcher started {world_size}{on_each}; give the numbers the launcher was given")


def check_num_nodes(num_nodes: int, started_by_launcher: bool) -> None:
    """A trainer starts the processes of its own machine only: the ranks of several machines come from a launcher
    run on each (Lightning's third way, NODE_RANK set by hand on every node, is not used here)."""
    if num_nodes > 1 and not started_by_launcher:
        raise UserError(f"--num-nodes {num_nodes}: start the processes of every node with torchrun or srun "
                        f"(docs/multi-node.md); a trainer alone starts those of its own machine only")


def check_launcher(args, cuda: bool, environment_kinds):
    """The launcher's cluster environment (None without one), its world checked against --num-nodes and
    --devices, and its rendezvous in MASTER_ADDR and MASTER_PORT, where Lightning will read it (torchrun's is there
    already; srun's would not be until fit starts). `environment_kinds`: the framework's TorchElasticEnvironment
    and SLURMEnvironment, in Lightning's order of detection (shared/ imports no framework)."""
    try:
        environment = next((kind() for kind in environment_kinds if kind.detect()), None)
    except RuntimeError as error:  # srun's tasks not described per node: SLURMEnvironment refuses them
        raise UserError(f"SLURM: {error}") from None
    check_num_nodes(args.num_nodes, environment is not None)
    if environment is None:
        return None
    check_launcher_world(args.num_nodes, processes_per_node(args, cuda), environment.world_size())
    nodes = os.environ.get("SLURM_NNODES") if launcher() == "srun" else None
    if nodes is not None and int(nodes) != args.num_nodes:  # Lightning would refuse it only once fit starts
        raise UserError(f"--num-nodes {args.num_nodes}: SLURM allocated {nodes} node(s) (--nodes); give the same "
                        f"number to both")
    os.environ.update(MASTER_ADDR=environment.main_address, MASTER_PORT=str(environment.main_port))
    return environment
