"""DDP with two CPU processes (gloo): launched by the trainer itself, and by torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.checkpoint_file import read_checkpoint as load_checkpoint
from tests.conftest import REPO, tiny_args

pytestmark = [pytest.mark.slow, pytest.mark.ddp]
# One thread per rank: two ranks share two cores, and torchrun would set it anyway.
ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


def run(command, timeout=180):
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result


def test_two_processes_self_launched_and_under_torchrun_agree(tiny_data, tmp_path):
    args = ["--strategy", "ddp", "--devices", "2", "--max-epochs", "2", "--checkpoint-every-n-steps", "4"]
    own = tmp_path / "own"
    result = run([sys.executable, "vanilla/train.py", *tiny_args(tiny_data, own, *args)])
    assert result.stdout.count("testing ") == 1  # only rank 0 reports and tests
    assert "ddp on 2 cpu device(s)" in result.stdout
    assert len(list((own / "tensorboard").glob("events.out.tfevents.*"))) == 1  # only rank 0 writes files
    last = load_checkpoint(own / "checkpoints" / "last.ckpt")
    assert last["loop_state"]["world_size"] == 2 and len(last["rng_states"]) == 2
    # each rank sees half of the 202 examples: 101 per rank, 7 batches of 16 per epoch
    assert last["global_step"] == 14

    launched = tmp_path / "torchrun"
    run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
         "vanilla/train.py", *tiny_args(tiny_data, launched, *args)])
    mine = load_checkpoint(own / "checkpoints" / "last.ckpt")
    theirs = load_checkpoint(launched / "checkpoints" / "last.ckpt")
    for key, tensor in mine["state_dict"].items():
        assert torch.equal(tensor, theirs["state_dict"][key]), key
    assert (own / "metrics.csv").read_text() == (launched / "metrics.csv").read_text()


def test_ddp_resume_mid_epoch(tiny_data, tmp_path):
    """Both ranks crash after step 11; last.ckpt is the step-9 save, two batches into epoch 1. Resuming it gives
    the weights of the uninterrupted two-rank run: every rank gets back its own RNG state and data shard."""
    args = ["--strategy", "ddp", "--devices", "2", "--max-epochs", "2", "--checkpoint-every-n-steps", "3"]
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run([sys.executable, "vanilla/train.py", *tiny_args(tiny_data, straight, *args)])
    crashed = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                              "--standalone", "tests/helpers/interrupted_train.py", "vanilla", "11",
                              *tiny_args(tiny_data, resumed, *args)],
                             cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert crashed.returncode != 0
    last = load_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert (last["global_step"], last["loop_state"]["epoch"], last["loop_state"]["batches_done"]) == (9, 1, 2)
    run([sys.executable, "vanilla/train.py", *tiny_args(tiny_data, resumed, *args, "--resume", "last")])
    a = load_checkpoint(straight / "checkpoints" / "last.ckpt")
    b = load_checkpoint(resumed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 14
    for key, tensor in a["state_dict"].items():
        assert torch.equal(tensor, b["state_dict"][key]), key
    assert (straight / "metrics.csv").read_text() == (resumed / "metrics.csv").read_text()


@pytest.fixture(scope="module")
def slow_test_phase_runs(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """Each trainer under torchrun, two ranks, a process-group timeout of 6 s and a test phase of 5 batches (25
    examples, 6 a batch) that take 2 s each: 10 s in one process; shared, 3 batches (6 s) for rank 0 and 2 for
    rank 1, which waits one batch (2 s) for rank 0 at the gather."""
    runs = {}
    for trainer in ("vanilla", "fabric", "lightning"):
        runs[trainer] = tmp_path_factory.mktemp(f"slow-test-{trainer}")
        run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
             "tests/helpers/slow_test_phase.py", trainer, "2",
             *tiny_args(tiny_data, runs[trainer], "--strategy", "ddp", "--devices", "2", "--ddp-timeout", "6",
                        "--batch-size", "6", "--max-epochs", "1", "--limit-train-batches", "2")])
    return runs


@pytest.mark.parametrize("trainer", ["vanilla", "fabric", "lightning"])
def test_a_test_phase_longer_than_the_process_group_timeout_ends_well(slow_test_phase_runs, trainer):
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
    args = parse_args("test", "test", tiny_args(tiny_data, out, "--batch-size", "6"))
    data = prepare_data(args, tmp_path, save_tokenizer=False)
    checkpoint = out / "checkpoints" / json.loads((out / "test_metrics.json").read_text())["checkpoint"]
    run_test(make_model(args, data.tokenizer), data.tokenizer, data.test, str(checkpoint), torch.device("cpu"),
             Precision("32-true", "cpu"), 6, args.num_beams, args.max_target_length, tmp_path)
    assert (tmp_path / "predictions.jsonl").read_text() == texts["vanilla"]


@pytest.mark.parametrize("trainer", ["vanilla", "fabric", "lightning"])
def test_a_rank_without_a_test_batch_of_its_own(tiny_data, tmp_path, trainer):
    """25 test examples in one batch of 32, two ranks: rank 1 has nothing to test, and still takes part."""
    out = tmp_path / "run"
    run([sys.executable, f"{trainer}/train.py", *tiny_args(tiny_data, out, "--strategy", "ddp", "--devices", "2",
                                                         "--batch-size", "32", "--max-epochs", "1",
                                                         "--limit-train-batches", "2")])
    assert json.loads((out / "test_metrics.json").read_text())["num_examples"] == 25
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 25
