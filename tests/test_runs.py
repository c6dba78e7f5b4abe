"""Versioned run directories and the table of runs, for every trainer (the code is shared): with no --output-dir a
run gets runs/<trainer>/version_N, two runs never collide, --resume last continues the latest, and
`python -m shared.runs` lists every run with how it ended."""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shared.errors import UserError
from shared.run_dir import new_version
from shared.runs import read_run
from tests.conftest import REPO, tiny_args

pytestmark = pytest.mark.slow
ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def versioned_args(tiny_data, *extra: str) -> list[str]:
    """The tiny run's command line without --output-dir: the run picks its own version directory."""
    args = tiny_args(tiny_data, Path("unused"), "--max-epochs", "2", *extra)
    return args[:2] + args[4:]


def start(command: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *command], cwd=cwd, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, status: int = 0) -> str:
    out, err = process.communicate(timeout=240)
    assert process.returncode == status, out[-2000:] + err[-2000:]
    return out


def trainer_command(trainer: str, *args: str) -> list[str]:
    return [str(REPO / trainer / "train.py"), *args]


def interrupted_command(trainer: str, *args: str) -> list[str]:
    return [str(REPO / "tests" / "helpers" / "interrupted_train.py"), trainer, "signal:TERM:5", *args]


def weights(run: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {name: tensor for name, tensor in state.items() if name.startswith("model.")}


def _take_version(root: str, barrier, results) -> None:
    barrier.wait()
    results.append(new_version(Path(root)).name)


def test_concurrent_runs_take_distinct_versions(tmp_path):
    """Six processes ask for a version at the same moment: each gets its own, none is lost."""
    context = multiprocessing.get_context("fork")
    barrier, results = context.Barrier(6), context.Manager().list()
    processes = [context.Process(target=_take_version, args=(str(tmp_path / "runs" / "vanilla"), barrier, results))
                 for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    assert sorted(results) == [f"version_{n}" for n in range(6)]


def test_where_a_run_goes(tmp_path, monkeypatch):
    from argparse import Namespace

    from shared.run_dir import CHOSEN_ENV, choose_run_directory

    def choose(output_dir=None, name=None, resume=None, rank=0, say=print):
        return choose_run_directory(Namespace(output_dir=output_dir, name=name, resume=resume), "vanilla", rank, say)

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    said = []
    assert choose(say=said.append) == Path("runs/vanilla/version_0")
    assert said == ["run directory: runs/vanilla/version_0"]
    assert choose(name="exp") == Path("runs/exp/version_0")
    assert choose(output_dir="somewhere") == Path("somewhere")
    # a run's last.ckpt: that run goes on; an earlier checkpoint: a new version starts from it, the run stays as it was
    checkpoints = Path("runs/vanilla/version_0/checkpoints")
    checkpoints.mkdir()
    for name in ("last.ckpt", "epoch=1.ckpt"):
        (checkpoints / name).write_bytes(b"")
    assert choose(resume=str(checkpoints / "last.ckpt")) == Path("runs/vanilla/version_0")
    assert choose(resume=str(checkpoints / "epoch=1.ckpt")) == Path("runs/vanilla/version_1")
    assert choose(resume="last", say=said.append) == Path("runs/vanilla/version_0")
    assert said[-1] == "resuming runs/vanilla/version_0, the latest version under runs/vanilla with a checkpoint"
    # a rank the trainer started takes rank 0's choice from the environment, if its parent set it
    monkeypatch.setenv(CHOSEN_ENV, f"{os.getppid()}:runs/vanilla/version_7")
    assert choose(rank=1) == Path("runs/vanilla/version_7")
    monkeypatch.setenv(CHOSEN_ENV, f"{os.getppid() + 1}:runs/vanilla/version_7")  # left over from another run
    with pytest.raises(UserError, match="give --output-dir"):
        choose(rank=1)
    with pytest.raises(UserError, match="--resume last: no run under runs/lightning has a checkpoint"):
        choose_run_directory(Namespace(output_dir=None, name=None, resume="last"), "lightning", 0)


@pytest.fixture(scope="module")
def runs_tree(tiny_data, tmp_path_factory) -> tuple[Path, str]:
    """A working directory whose runs/ holds what users leave there, and `python -m shared.runs` of it:
    vanilla/version_0, version_1  two runs of one command started at the same moment, finished
    vanilla/version_2             interrupted by SIGTERM at step 5, resumable
    vanilla/version_3             failed: --limit-train-batches 0.001 leaves no batch
    vanilla/version_4, version_5  unreadable settings; empty
    lightning/version_0           finished
    lightning/version_1           interrupted by SIGTERM at step 5, resumable
    lightning/version_2           running (its lock is held while the table is made)
    other/version_0               a run under --name other whose last.ckpt is corrupt"""
    cwd = tmp_path_factory.mktemp("runs-tree")
    together = [start(trainer_command("vanilla", *versioned_args(tiny_data)), cwd) for _ in range(2)]
    for process in together:
        finish(process)
    finish(start(interrupted_command("vanilla", *versioned_args(tiny_data)), cwd), status=143)
    finish(start(trainer_command("vanilla", *versioned_args(tiny_data, "--limit-train-batches", "0.001")), cwd),
           status=2)
    (cwd / "runs" / "vanilla" / "version_4").mkdir()
    (cwd / "runs" / "vanilla" / "version_4" / "hparams.yaml").write_text("[not, a, run's, settings")
    (cwd / "runs" / "vanilla" / "version_5").mkdir()
    finish(start(trainer_command("lightning", *versioned_args(tiny_data)), cwd))
    finish(start(interrupted_command("lightning", *versioned_args(tiny_data)), cwd), status=143)
    corrupt = cwd / "runs" / "other" / "version_0"
    shutil.copytree(cwd / "runs" / "vanilla" / "version_2", corrupt)
    (corrupt / "checkpoints" / "last.ckpt").write_bytes(b"not a checkpoint")
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, pathlib, time\n"
                               "run = pathlib.Path('runs/lightning/version_2'); run.mkdir()\n"
                               "handle = open(run / '.lock', 'a+'); fcntl.lockf(handle, fcntl.LOCK_EX)\n"
                               "print('locked', flush=True); time.sleep(60)"], cwd=cwd,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        result = subprocess.run([sys.executable, "-m", "shared.runs", str(cwd / "runs")], cwd=REPO, env=ENV,
                                capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    assert result.returncode == 0, result.stderr
    return cwd, result.stdout


def test_a_run_without_a_checkpoint_takes_its_trainer_from_its_folder(tmp_path):
    for trainer in ("vanilla", "fabric", "lightning"):
        run = tmp_path / "runs" / trainer / "version_0"
        run.mkdir(parents=True)
        (run / "hparams.yaml").write_text("lr: 0.001\n")
        assert read_run(run).trainer == trainer


def test_two_runs_of_one_command_started_together_keep_both(runs_tree):
    runs = runs_tree[0] / "runs" / "vanilla"
    for name in ("version_0", "version_1"):
        assert (runs / name / "test_metrics.json").is_file() and (runs / name / "metrics.csv").is_file()
    assert (runs / "version_0" / "predictions.jsonl").read_text() == \
        (runs / "version_1" / "predictions.jsonl").read_text()


def test_the_table_of_runs(runs_tree):
    cwd, printed = runs_tree
    lines = printed.splitlines()
    header, rows = lines[0], {line.split()[0]: line for line in lines[1:]}
    assert header.split()[:4] == ["run", "trainer", "last", "written"]
    assert list(rows) == ["lightning/version_0", "lightning/version_1", "lightning/version_2", "other/version_0",
                          *(f"vanilla/version_{n}" for n in range(6))]
    for run in ("vanilla/version_0", "vanilla/version_1", "lightning/version_0"):
        assert " finished " in rows[run] and rows[run].split()[1] == run.split("/")[0], rows[run]
    for run in ("vanilla/version_2", "lightning/version_1"):
        assert "interrupted at epoch 0, step 5: resumable" in rows[run], rows[run]
    assert " running" in rows["lightning/version_2"]
    assert "failed: no checkpoint" in rows["vanilla/version_3"]
    assert "limit_train_batches=0.001" in rows["vanilla/version_3"]
    assert "limit_train_batches=1.0" in rows["vanilla/version_0"]
    assert "unreadable hparams.yaml" in rows["vanilla/version_4"]
    assert "empty" in rows["vanilla/version_5"]
    assert "unreadable last.ckpt" in rows["other/version_0"] and "failed" in rows["other/version_0"]
    run = cwd / "runs" / "vanilla" / "version_0"
    scores = json.loads((run / "test_metrics.json").read_text())
    with open(run / "metrics.csv", newline="") as handle:
        dev = [float(row["dev_loss"]) for row in csv.DictReader(handle) if row["dev_loss"]]
    assert f"  2       {min(dev):.4f}" in rows["vanilla/version_0"]  # epochs, best dev_loss
    assert f"{scores['bleu_4']:.4f}  {scores['rouge_l']:.4f}" in rows["vanilla/version_0"]


@pytest.mark.parametrize("trainer", ["vanilla", "lightning"])
def test_resume_last_continues_the_latest_version_with_a_checkpoint(runs_tree, tiny_data, trainer):
    """--resume last passes over the newer versions without a checkpoint (failed, unreadable, empty, running),
    says which it continues, and finishes it bit for bit as the uninterrupted run of the same command."""
    cwd = runs_tree[0]
    runs = cwd / "runs" / trainer
    before = sorted(path.name for path in runs.iterdir())
    interrupted = {"vanilla": "version_2", "lightning": "version_1"}[trainer]
    out = finish(start(trainer_command(trainer, *versioned_args(tiny_data), "--resume", "last"), cwd))
    assert f"resuming runs/{trainer}/{interrupted}, the latest version under runs/{trainer} with a checkpoint" in out
    assert sorted(path.name for path in runs.iterdir()) == before  # no new version
    assert sorted(path.name for path in (runs / interrupted / "checkpoints").iterdir()) == \
        sorted(path.name for path in (runs / "version_0" / "checkpoints").iterdir())
    straight, resumed = weights(runs / "version_0"), weights(runs / interrupted)
    assert straight and all(torch.equal(straight[name], resumed[name]) for name in straight)
    for name in ("metrics.csv", "predictions.jsonl", "test_metrics.json"):
        assert (runs / interrupted / name).read_text() == (runs / "version_0" / name).read_text(), name


@pytest.mark.ddp
@pytest.mark.parametrize("trainer, launcher", [("vanilla", "torchrun"), ("lightning", "own")])
def test_ddp_ranks_take_rank_zeros_version(tiny_data, tmp_path, trainer, launcher):
    """Two ranks, no --output-dir: rank 0 makes the version, the other rank writes into the same one -- told by
    the launcher's store under torchrun, through the environment when the trainer starts it."""
    (tmp_path / "runs" / trainer / "version_0").mkdir(parents=True)  # taken by an earlier run
    ddp = [*versioned_args(tiny_data, "--max-epochs", "1"), "--strategy", "ddp", "--devices", "2"]
    command = trainer_command(trainer, *ddp)
    if launcher == "torchrun":
        command = ["-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone", *command]
    process = subprocess.Popen([sys.executable, *command], cwd=tmp_path, env=dict(ENV, OMP_NUM_THREADS="1"),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    finish(process)
    runs = tmp_path / "runs" / trainer
    assert sorted(path.name for path in runs.iterdir()) == ["version_0", "version_1"]
    assert (runs / "version_1" / "test_metrics.json").is_file()
    last = torch.load(runs / "version_1" / "checkpoints" / "last.ckpt", weights_only=True)
    rng_states = last["rng_states"] if trainer == "vanilla" else last["callbacks"]["ExactResume"]["rng_states"]
    assert len(rng_states) == 2  # both ranks wrote into this run


def test_tensorboard_sees_each_version_as_a_run(runs_tree):
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    multiplexer = EventMultiplexer().AddRunsFromDirectory(str(runs_tree[0] / "runs"))
    names = sorted(multiplexer.Runs())
    for run in ("vanilla/version_0", "vanilla/version_1", "lightning/version_0"):
        assert f"{run}/tensorboard" in names, names
