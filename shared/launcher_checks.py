"""The checks Fabric and the Trainer leave out when torchrun or srun started the processes, for both framework
trainers (vanilla/cluster_environment.py makes them by hand).

Lightning detects the launcher itself (`TorchElasticEnvironment`, `SLURMEnvironment`) but compares its world with
`num_nodes` x `devices` only when its DDP launcher runs, which it does not for a one-device strategy: two torchrun
processes with `--devices 1` would each train alone as rank 0, into the same directory. And srun's rendezvous is
set only once fit starts, after the ranks have to agree on a run directory.
"""

from __future__ import annotations

import os

from shared.cli import check_launcher_world, check_num_nodes, processes_per_node
from shared.errors import UserError


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
    os.environ.update(MASTER_ADDR=environment.main_address, MASTER_PORT=str(environment.main_port))
    return environment
