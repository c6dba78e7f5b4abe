"""A scheduler's SIGTERM under DDP, in every phase of a run, to rank 0 alone and to every process: no process is
left behind, and the exit status says what happened.

Each run is `--strategy ddp --devices 2`, started in a session of its own so that every process it starts can be
found afterwards (and "every process" is its process group, as a scheduler signals a job). The signal comes from
rank 0 at a chosen point (tests/helpers/signal_at_phase.py), or from outside during start-up, once rank 0 has
started the other rank. What each phase gives:
- start-up (before the trainers handle signals): the process ends at once (killed by SIGTERM) and so does every
  rank; nothing was trained, no checkpoint;
- sanity check, training, validation: every rank stops at the same batch, after the next optimizer step, with a
  resumable last.ckpt; rank 0 says how to continue and exits 143;
- test phase, export: training is over and saved; the processes end at once, and `--resume last` tests again.
Exact resume after a SIGTERM under DDP is in tests/test_parity.py, for each trainer.

The matrix: every trainer, every phase; the target alternates between rank 0 alone and every process from phase
to phase and from trainer to trainer, so that each phase meets both targets, and each trainer both targets.
Start-up goes to rank 0 alone in every trainer (where a rank was left orphaned), and to every process once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, TRAINERS, tiny_args

pytestmark = [pytest.mark.slow, pytest.mark.ddp, pytest.mark.fault]
ENV = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
PHASES = ("startup", "sanity", "train", "validation", "test", "export")
ARGS = ("--strategy", "ddp", "--devices", "2", "--max-epochs", "2", "--limit-train-batches", "3")


def cases() -> list[tuple[str, str, str]]:
    found = []
    for i, trainer in enumerate(TRAINERS):
        for j, phase in enumerate(PHASES):
            if phase == "startup":  # rank 0 alone: where a rank was left orphaned; every process: once
                targets = ("rank0", "all") if trainer == "vanilla" else ("rank0",)
            else:
                targets = (("rank0", "all")[(i + j) % 2],)
            found += [(trainer, phase, target) for target in targets]
    return found


def processes_in_session(session: int) -> list[int]:
    """Live processes whose session is `session` (zombies have ended; they wait only to be reaped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                state, _ppid, _pgrp, sid = (entry / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            except (OSError, ValueError):
                continue
            if int(sid) == session and state != "Z":
                found.append(int(entry.name))
    return found


def left_behind(session: int, grace: float = 12.0) -> list[int]:
    """What is still running of the run `grace` seconds after rank 0 ended (killed, so that no test leaks it)."""
    deadline = time.monotonic() + grace
    while (alive := processes_in_session(session)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    return alive


def start(command: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, *command], cwd=REPO, env=ENV, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def run_until_signalled(trainer: str, phase: str, target: str, args: list[str]) -> subprocess.Popen:
    if phase != "startup":
        return start(["tests/helpers/signal_at_phase.py", trainer, phase, target, *args])
    run = start([f"{trainer}/train.py", *args])
    deadline = time.monotonic() + 60
    while len(processes_in_session(run.pid)) < 2 and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until rank 0 has started rank 1 (vanilla at once, the frameworks when fit begins)
    time.sleep(0.3)
    (os.killpg if target == "all" else os.kill)(run.pid, signal.SIGTERM)
    return run


@pytest.mark.parametrize("trainer, phase, target", cases())
def test_sigterm_in_every_phase_leaves_no_process_behind(tiny_data, tmp_path, trainer, phase, target):
    out = tmp_path / "run"
    run = run_until_signalled(trainer, phase, target, tiny_args(tiny_data, out, *ARGS))
    try:
        stdout, stderr = run.communicate(timeout=240)
    finally:
        remaining = left_behind(run.pid)
    assert not remaining, f"processes left behind: {remaining}\n{stderr[-3000:]}"
    last = out / "checkpoints" / "last.ckpt"
    if phase in ("sanity", "train", "validation"):  # stopped cleanly at a batch, with a checkpoint to resume
        assert run.returncode == 143, stdout[-2000:] + stderr[-3000:]
        assert stdout.count("interrupted by SIGTERM") == 1 and "continue with --resume last" in stdout
        assert last.is_file()
        assert "Traceback" not in stderr, stderr[-3000:]
    else:  # ended at once by the signal
        assert run.returncode == -signal.SIGTERM, stdout[-2000:] + stderr[-3000:]
        assert last.is_file() == (phase in ("test", "export"))


def test_a_trainer_killed_with_loader_workers_leaves_none_of_them_behind(tiny_data, tmp_path):
    """Not DDP, the same promise: with --num-workers the loader's workers start from a fork server
    (shared/loader_workers.py), not from the trainer. Killed (os._exit after step 2, as kill -9 leaves it), the
    trainer takes the server with it, and the workers, the server's children, notice and end."""
    process = start(["tests/helpers/interrupted_train.py", "vanilla", "2",
                     *tiny_args(tiny_data, tmp_path / "run", "--num-workers", "1", "--max-epochs", "1")])
    process.wait(timeout=240)
    leftovers = left_behind(process.pid)  # before reading: a worker left behind would hold the pipes open
    assert process.returncode == 3, process.stderr.read()[-3000:]  # interrupted_train's os._exit(3)
    assert not leftovers
