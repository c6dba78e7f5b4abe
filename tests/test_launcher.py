"""shared/launcher.py: which launcher started the processes, and the checks the Fabric and Lightning trainers make
before their framework would (with stand-ins for the framework's cluster environments)."""

from __future__ import annotations

import argparse
import os

import pytest

from shared.errors import UserError
from shared.launcher import check_launcher, launcher

LAUNCHER_VARIABLES = ("TORCHELASTIC_RUN_ID", "SLURM_NTASKS", "SLURM_NNODES", "SLURM_NTASKS_PER_NODE",
                      "SLURM_JOB_NAME", "LOCAL_WORLD_SIZE", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def environment_kind(world_size: int, detected: bool = True):
    class Environment:
        main_address, main_port = "10.0.0.1", 29512

        @staticmethod
        def detect() -> bool:
            return detected

        def world_size(self) -> int:
            return world_size

    return Environment


def args(num_nodes: int, devices: int) -> argparse.Namespace:
    return argparse.Namespace(num_nodes=num_nodes, devices=devices, strategy="ddp")


@pytest.fixture
def no_launcher(monkeypatch):
    """None of the launchers' variables; whatever check_launcher sets (MASTER_ADDR, ...) is undone afterwards."""
    for name in LAUNCHER_VARIABLES:
        monkeypatch.setenv(name, "")  # recorded, so that the test's changes are undone
        monkeypatch.delenv(name)
    return monkeypatch


def srun(monkeypatch, tasks: int, nodes: int, per_node: int) -> None:
    monkeypatch.setenv("SLURM_NTASKS", str(tasks))
    monkeypatch.setenv("SLURM_NNODES", str(nodes))
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", str(per_node))
    monkeypatch.setenv("SLURM_JOB_NAME", "train")


def test_which_launcher(no_launcher):
    assert launcher() is None
    no_launcher.setenv("SLURM_NTASKS", "2")
    no_launcher.setenv("SLURM_JOB_NAME", "interactive")  # an allocation's shell, not srun's tasks
    assert launcher() is None
    no_launcher.setenv("SLURM_JOB_NAME", "train")
    assert launcher() == "srun"
    no_launcher.setenv("TORCHELASTIC_RUN_ID", "x")
    assert launcher() == "torchrun"


def test_no_launcher_and_one_node_is_no_environment(no_launcher):
    assert check_launcher(args(1, 2), False, (environment_kind(2, detected=False),)) is None
    with pytest.raises(UserError, match="--num-nodes 2: start the processes of every node with torchrun or srun"):
        check_launcher(args(2, 1), False, (environment_kind(2, detected=False),))


def test_srun_as_asked_gives_its_rendezvous(no_launcher):
    srun(no_launcher, tasks=4, nodes=2, per_node=2)
    environment = check_launcher(args(2, 2), False, (environment_kind(4),))
    assert environment is not None
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("10.0.0.1", "29512")


def test_a_world_other_than_nodes_times_devices_is_refused(no_launcher):
    srun(no_launcher, tasks=4, nodes=2, per_node=2)
    with pytest.raises(UserError, match=r"--num-nodes 1 x --devices 2 = 2 processes, but the launcher started 4"):
        check_launcher(args(1, 2), False, (environment_kind(4),))


def test_a_slurm_node_count_other_than_num_nodes_is_refused(no_launcher):
    """One task in all, on an allocation of two nodes: the world (1) is --num-nodes x --devices, but the node
    count is not --num-nodes; Lightning would refuse it only once fit starts, in a traceback."""
    srun(no_launcher, tasks=1, nodes=2, per_node=1)
    with pytest.raises(UserError, match=r"--num-nodes 1: SLURM allocated 2 node\(s\) \(--nodes\)"):
        check_launcher(args(1, 1), False, (environment_kind(1),))
