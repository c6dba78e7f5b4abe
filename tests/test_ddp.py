"""The test phase under DDP (gloo, CPU processes under torchrun): shared over the ranks, so that a test phase
longer than the process-group timeout ends well, with the one-process predictions. (The trainers' DDP training,
bit for bit, self-launched, under torchrun, on two "nodes" and killed and resumed, is in tests/test_parity.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, tiny_args

pytestmark = [pytest.mark.slow, pytest.mark.ddp]
# One thread per rank: the ranks share two cores, and torchrun would set it anyway.
ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def run(command, timeout=180):
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


@pytest.fixture(scope="module")
def slow_test_phase_runs(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """Each trainer under torchrun, three ranks, a process-group timeout of 10 s and a test phase of 2 batches (25
    examples, 13 a batch) that take 6 s each: 12 s in one process; shared, one batch for rank 0, one for rank 1,
    none for rank 2, which waits one batch (6 s and the batch's own generation) for them at the gather. The 4 s
    left of the timeout are for a slower machine, where the ranks reach the gather further apart."""
    runs = {}
    for trainer in ("vanilla", "fabric", "lightning"):
        runs[trainer] = tmp_path_factory.mktemp(f"slow-test-{trainer}")
        run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "3", "--standalone",
             "tests/helpers/slow_test_phase.py", trainer, "6",
             *tiny_args(tiny_data, runs[trainer], "--strategy", "ddp", "--devices", "3", "--ddp-timeout", "10",
                        "--batch-size", "13", "--max-epochs", "1", "--limit-train-batches", "2")])
    return runs


@pytest.mark.parametrize("trainer", ["vanilla", "fabric", "lightning"])
def test_a_test_phase_longer_than_the_process_group_timeout_ends_well(slow_test_phase_runs, trainer):
    """Also: rank 2 has no test batch of its own, and still takes part."""
    out = slow_test_phase_runs[trainer]
    report = json.loads((out / "test_metrics.json").read_text())
    assert report["num_examples"] == len((out / "predictions.jsonl").read_text().splitlines()) == 25


def test_the_ranks_shares_of_the_test_phase_give_the_one_process_predictions(slow_test_phase_runs, tiny_data,
                                                                             tmp_path):
    """The three trainers' two-rank predictions are equal, and equal to one process testing the same checkpoint."""
    from shared.cli import parse_args
    from shared.pipeline import make_model, prepare_data
    from vanilla.evaluation_loop import run_test
    from vanilla.precision import Precision

    texts = {trainer: (out / "predictions.jsonl").read_text() for trainer, out in slow_test_phase_runs.items()}
    assert texts["vanilla"] == texts["fabric"] == texts["lightning"]
    out = slow_test_phase_runs["vanilla"]
    args = parse_args("test", "test", tiny_args(tiny_data, out, "--batch-size", "13"))
    data = prepare_data(args, tmp_path, save_tokenizer=False)
    checkpoint = out / "checkpoints" / json.loads((out / "test_metrics.json").read_text())["checkpoint"]
    run_test(make_model(args, data.tokenizer), data.tokenizer, data.test, str(checkpoint), torch.device("cpu"),
             Precision("32-true", "cpu"), 13, args.num_beams, args.max_target_length, tmp_path)
    assert (tmp_path / "predictions.jsonl").read_text() == texts["vanilla"]



LEAVE = """
import sys
import torch.distributed as dist
sys.path.insert(0, {repo!r})
from shared.process_tree import leave_process_group
dist.init_process_group("gloo")
dist.barrier()
leave_process_group(7)
print("still here, process group initialized:", dist.is_initialized(), flush=True)
"""


def test_a_ddp_process_ends_its_process_group_and_other_ranks_leave_at_once():
    """How every trainer's process ends (shared.errors.exit_on_user_error): rank 0 goes on without a process group,
    the other ranks leave with the status given, before the interpreter's teardown."""
    from tests.test_parity import free_port

    code = LEAVE.format(repo=str(REPO))
    rendezvous = dict(ENV, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), WORLD_SIZE="2")
    ranks = [subprocess.Popen([sys.executable, "-c", code], env=dict(rendezvous, RANK=str(rank)), text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in (0, 1)]
    (out0, err0), (out1, err1) = (rank.communicate(timeout=60) for rank in ranks)
    assert (ranks[0].returncode, out0) == (0, "still here, process group initialized: False\n"), err0
    assert (ranks[1].returncode, out1) == (7, ""), err1
