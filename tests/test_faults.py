"""Faults, against all three trainers: nothing lost, every error one clear line.

Kills are `os._exit` at a chosen point (tests/helpers/interrupted_train.py): after an optimizer step, inside
validation, half-way through writing a checkpoint file. Signals are real (SIGTERM, SIGINT sent to the process).
A full disk and a read-only directory are simulated at the file-write level the trainers go through: the
temporary file a checkpoint is written to (vanilla: beside the checkpoint; Lightning, through fsspec: in the
system's temporary directory, moved into place afterwards) fails with ENOSPC on write, or EROFS on open.
Out-of-memory and NaN losses are injected into the loss.
"""

from __future__ import annotations

import builtins
import errno
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from shared.entry_point import exit_on_user_error
from shared.errors import UserError
from tests.conftest import HF_TRAINER, REPO, TRAINERS, load_train, loss_home, tiny_args

pytestmark = [pytest.mark.fault, pytest.mark.slow]
ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def module(trainer: str):
    return load_train(trainer)


def run(trainer: str, tiny_data, out: Path, *extra: str):
    return module(trainer).main(tiny_args(tiny_data, out, *extra))


def run_here(capsys, trainer: str, tiny_data, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """`python <trainer>/train.py ...` in this process, through the command's own wrapper (`exit_on_user_error`):
    its exit status and output, for the refusals that come before any training (a new interpreter costs
    seconds)."""
    with pytest.raises(SystemExit) as stop:
        exit_on_user_error(lambda: run(trainer, tiny_data, out, *extra))()
    stdout, stderr = capsys.readouterr()
    return subprocess.CompletedProcess([trainer], stop.value.code, stdout, stderr)


def run_process(*command: str, timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], cwd=REPO, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def last_weights(out: Path) -> dict[str, torch.Tensor]:
    state = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith("model.")}


def same_weights(a: Path, b: Path) -> bool:
    """Both last.ckpt hold the same model tensors, bit for bit (and there are some: an empty pair is no match)."""
    x, y = last_weights(a), last_weights(b)
    return bool(x) and bool(y) and x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout[-1000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def project_frames(stderr: str) -> list[str]:
    """The files of the project's own code that a traceback in `stderr` passes through (a launcher's is not)."""
    frames = []
    for name in re.findall(r'File "([^"]+)", line', stderr):
        path = (REPO / name).resolve()  # a relative name is relative to the run's directory, REPO
        if path.is_relative_to(REPO) and path.relative_to(REPO).parts[0] in (*TRAINERS, "shared", "tests"):
            frames.append(name)
    return frames


@pytest.fixture(scope="module")
def straight_runs(tiny_data, tmp_path_factory):
    """The uninterrupted 3-epoch run of each trainer, which every interrupted run must end up equal to."""
    runs = {}
    for trainer in TRAINERS:
        runs[trainer] = tmp_path_factory.mktemp(f"straight-{trainer}")
        run(trainer, tiny_data, runs[trainer])
    return runs


# ---------------------------------------------------------------- kill -9 at a random point
@pytest.mark.parametrize("point", ["val:7", "save:3"], ids=["mid-validation", "mid-checkpoint-write"])
@pytest.mark.parametrize("trainer", TRAINERS)
def test_kill_leaves_a_complete_checkpoint_and_resume_is_exact(tiny_data, tmp_path, straight_runs, trainer, point):
    """val:7 dies in the 2nd dev batch of epoch 1 (2 sanity + 3 of epoch 0 before it); save:3 dies half-way
    through writing epoch 1's checkpoint. Either way last.ckpt is epoch 0's, whole, and resuming it ends where
    the uninterrupted run does."""
    out = tmp_path / "run"
    killed = run_process("tests/helpers/interrupted_train.py", trainer, point, *tiny_args(tiny_data, out))
    assert killed.returncode == 3, killed.stderr[-2000:]
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 13 and last["epoch"] == 0
    run(trainer, tiny_data, out, "--resume", "last")
    assert same_weights(out, straight_runs[trainer])
    assert (out / "metrics.csv").read_text() == (straight_runs[trainer] / "metrics.csv").read_text()


# ---------------------------------------------------------------- Ctrl-C and SIGTERM
@pytest.mark.parametrize("name, status", [("TERM", 143), ("INT", 130)])
@pytest.mark.parametrize("trainer", TRAINERS)
def test_signal_saves_a_resumable_checkpoint_says_how_and_exits_non_zero(tiny_data, tmp_path, straight_runs,
                                                                          trainer, name, status):
    out = tmp_path / "run"
    result = run_process("tests/helpers/interrupted_train.py", trainer, f"signal:{name}:17", *tiny_args(tiny_data, out))
    assert result.returncode == status, result.stdout[-2000:] + result.stderr[-2000:]
    message = [line for line in (result.stdout + result.stderr).splitlines() if "--resume last" in line]
    assert len(message) == 1 and f"SIG{name}" in message[0], result.stdout[-2000:] + result.stderr[-2000:]
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 17  # saved at the batch boundary right after the signal
    assert not (out / "predictions.jsonl").exists()  # no test phase after an interruption
    run(trainer, tiny_data, out, "--resume", "last")
    assert same_weights(out, straight_runs[trainer])
    assert (out / "metrics.csv").read_text() == (straight_runs[trainer] / "metrics.csv").read_text()


@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_signal_in_the_first_epoch_resumes_into_the_same_files(tiny_data, tmp_path, straight_runs, trainer):
    """Before any epoch has ended, last.ckpt is the first checkpoint file; resumed, the run must adopt it, not
    write last-v1.ckpt beside it, and end as the uninterrupted run."""
    out = tmp_path / "run"
    result = run_process("tests/helpers/interrupted_train.py", trainer, "signal:TERM:5", *tiny_args(tiny_data, out))
    assert result.returncode == 143, result.stdout[-2000:] + result.stderr[-2000:]
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 5
    run(trainer, tiny_data, out, "--resume", "last")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        sorted(p.name for p in (straight_runs[trainer] / "checkpoints").iterdir())
    assert same_weights(out, straight_runs[trainer])
    assert (out / "metrics.csv").read_text() == (straight_runs[trainer] / "metrics.csv").read_text()


# ---------------------------------------------------------------- full disk, read-only directory
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS], ids=["full-disk", "read-only"])
@pytest.mark.parametrize("trainer", TRAINERS)
def test_failed_checkpoint_write_keeps_the_previous_one_and_is_one_line(tiny_data, tmp_path, monkeypatch,
                                                                         trainer, code):
    """The first two checkpoint files (epoch 0's top-1 and last.ckpt) are written; from the third on, the disk
    is full (the write fails) or the directory read-only (the open fails)."""
    real_open, opened = builtins.open, [0]

    class FullDisk:
        def __init__(self, handle):
            self.handle = handle

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()

    def open_(file, mode="r", *args, **kwargs):
        parent = Path(str(file)).parent  # vanilla's temporary file is beside the checkpoint, Lightning's in /tmp
        if "w" in mode and "b" in mode and (parent.name == "checkpoints" or parent == Path(tempfile.gettempdir())):
            opened[0] += 1
            if opened[0] > 2:
                if code == errno.EROFS:
                    raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
                return FullDisk(real_open(file, mode, *args, **kwargs))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", open_)
    out = tmp_path / "run"
    with pytest.raises(UserError) as error:
        run(trainer, tiny_data, out)
    message = str(error.value)
    assert os.strerror(code) in message and "checkpoint" in message and "\n" not in message
    monkeypatch.undo()
    last = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 13  # epoch 0's, whole
    leftovers = [p.name for p in (out / "checkpoints").iterdir() if not p.name.endswith(".ckpt")]
    assert not leftovers  # no half-written temporary file left behind


# ---------------------------------------------------------------- NaN loss
@pytest.mark.parametrize("bad", ["nan", "inf"])
@pytest.mark.parametrize("trainer", TRAINERS)
def test_nan_loss_stops_the_run_keeps_the_best_checkpoint_and_still_tests(tiny_data, tmp_path, monkeypatch, capsys,
                                                                           trainer, bad):
    home = loss_home(trainer)
    original = home.seq2seq_loss
    steps = [0]

    def loss(model, batch):
        value = original(model, batch)
        if model.training:
            steps[0] += 1
            if steps[0] > 13:  # from epoch 1 on
                return value * float(bad)
        return value

    monkeypatch.setattr(home, "seq2seq_loss", loss)
    out = tmp_path / "run"
    report = run(trainer, tiny_data, out, "--max-epochs", "5")
    printed = capsys.readouterr().out
    assert re.search(r"early stopping: Monitored metric dev_loss = (nan|inf) is not finite", printed), printed
    assert report["checkpoint"].startswith("epoch=0-")  # the best checkpoint, kept and tested
    assert (out / "predictions.jsonl").exists()


# ---------------------------------------------------------------- out of memory
@pytest.mark.parametrize("trainer", TRAINERS)
def test_out_of_memory_in_training_suggests_the_remedies(tiny_data, tmp_path, monkeypatch, trainer):
    home = loss_home(trainer)
    original = home.seq2seq_loss

    def loss(model, batch):
        if model.training:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return original(model, batch)

    monkeypatch.setattr(home, "seq2seq_loss", loss)
    with pytest.raises(UserError) as error:
        run(trainer, tiny_data, tmp_path / "run")
    message = str(error.value)
    assert "out of memory" in message and "--batch-size 16" in message and "--auto-batch-size" in message
    assert "\n" not in message


# ---------------------------------------------------------------- one run per directory
@pytest.mark.parametrize("trainer", [*TRAINERS, HF_TRAINER])
def test_two_runs_never_write_into_one_directory(tiny_data, tmp_path, capsys, trainer):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl, os, sys, time\n"
                               f"handle = open({str(out / '.lock')!r}, 'a+')\n"
                               "fcntl.lockf(handle, fcntl.LOCK_EX)\n"
                               "handle.truncate(0); handle.write(str(os.getpid())); handle.flush()\n"
                               "print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert_one_line_error(run_here(capsys, trainer, tiny_data, out), "another run", f"pid {holder.pid}",
                              str(out))
    finally:
        holder.kill()
        holder.wait()
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize("trainer", [*TRAINERS, HF_TRAINER])
def test_an_existing_run_is_refused_without_resume_or_overwrite(tiny_data, tmp_path, capsys, trainer):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"precious")
    result = run_process(f"{trainer}/train.py", *tiny_args(tiny_data, out)) if trainer == "vanilla" \
        else run_here(capsys, trainer, tiny_data, out)  # the command itself once, the others in this process
    assert_one_line_error(result, "already holds a run", "--overwrite")
    assert (out / "checkpoints" / "last.ckpt").read_bytes() == b"precious"


# ---------------------------------------------------------------- bad checkpoints
@pytest.fixture(scope="module")
def bad_checkpoints(straight_runs, tmp_path_factory) -> dict[str, Path]:
    directory = tmp_path_factory.mktemp("bad-checkpoints")
    good = (straight_runs["vanilla"] / "checkpoints" / "last.ckpt").read_bytes()
    files = {"truncated": good[: len(good) // 3], "corrupt": good[:200] + bytes(len(good) - 200),
             "not a checkpoint": b"just some text\n"}
    paths = {}
    for name, content in files.items():
        paths[name] = directory / f"{name.replace(' ', '-')}.ckpt"
        paths[name].write_bytes(content)
    for trainer in TRAINERS:  # a checkpoint of another model configuration: a wider embedding
        checkpoint = torch.load(straight_runs[trainer] / "checkpoints" / "last.ckpt", weights_only=True)
        key = next(k for k in checkpoint["state_dict"] if k.endswith("shared.weight"))
        checkpoint["state_dict"][key] = torch.zeros(checkpoint["state_dict"][key].shape[0] + 5, 8)
        paths[f"other model ({trainer})"] = directory / f"other-model-{trainer}.ckpt"
        torch.save(checkpoint, paths[f"other model ({trainer})"])
    return paths


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "not a checkpoint", "other model"])
@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_bad_checkpoint_is_one_line_naming_the_file(tiny_data, tmp_path, bad_checkpoints, trainer, kind):
    path = bad_checkpoints[f"{kind} ({trainer})" if kind == "other model" else kind]
    with pytest.raises(UserError) as error:
        run(trainer, tiny_data, tmp_path / "run", "--resume", str(path))
    message = str(error.value)
    assert str(path) in message and "\n" not in message
    if kind == "other model":
        assert "model configuration" in message


@pytest.mark.parametrize("trainer", TRAINERS)
def test_a_refused_resume_keeps_what_the_run_wrote(tiny_data, tmp_path, straight_runs, trainer):
    """Resumed with another model configuration (a smaller vocabulary), the run is refused in one line; its
    metrics.csv -- which Lightning's CSVLogger deletes when fit starts -- and checkpoints are as they were."""
    out = tmp_path / "run"
    shutil.copytree(straight_runs[trainer], out)
    before = {path.relative_to(out): path.read_bytes() for path in [out / "metrics.csv",
                                                                   *(out / "checkpoints").iterdir()]}
    with pytest.raises(UserError, match="weights do not fit this model configuration"):
        run(trainer, tiny_data, out, "--resume", "last", "--vocab-size", "300")
    assert {path: (out / path).read_bytes() for path in before} == before
    assert not list(out.glob(".metrics.csv.*"))  # no copy left behind


# ---------------------------------------------------------------- impossible flags, the same in all
IMPOSSIBLE_DEVICE_REQUESTS = [
    (["--strategy", "dp"], ["--strategy dp", "CUDA"]),
    (["--accelerator", "gpu"], ["--accelerator", "gpu"]),
    (["--devices", "0"], ["--devices"]),
    (["--devices", "-1"], ["--devices -1", "CUDA"]),
    (["--num-nodes", "2", "--strategy", "ddp"], ["--num-nodes 2", "torchrun or srun"]),
    (["--num-nodes", "2", "--strategy", "dp"], ["--strategy dp", "--num-nodes"]),
]


@pytest.mark.parametrize("trainer", TRAINERS)
def test_an_impossible_device_request_is_one_line_on_stderr(tiny_data, tmp_path, trainer):
    """As a user meets it: the command's whole stderr is the one line (Lightning prints nothing of its own first)."""
    flags, fragments = IMPOSSIBLE_DEVICE_REQUESTS[-1]
    assert_one_line_error(run_process(f"{trainer}/train.py", *tiny_args(tiny_data, tmp_path / "run", *flags)),
                          *fragments)


@pytest.mark.parametrize("flags, fragments", IMPOSSIBLE_DEVICE_REQUESTS)
@pytest.mark.parametrize("trainer", TRAINERS)
def test_impossible_device_requests_are_one_line_in_all(tiny_data, tmp_path, capsys, trainer, flags, fragments):
    """In this process, through the command's own wrapper (the test above runs the command itself)."""
    assert_one_line_error(run_here(capsys, trainer, tiny_data, tmp_path / "run", *flags), *fragments)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.ddp
@pytest.mark.parametrize("trainer", [*TRAINERS, HF_TRAINER])
def test_a_launcher_world_other_than_nodes_times_devices_is_one_line_naming_the_numbers(tiny_data, tmp_path,
                                                                                       trainer):
    """torchrun starts 2 processes; the command line asks for 1 node x 1 device: every rank refuses, in one line
    (torchrun itself then prints its own traceback, of the launcher's code). Which rank's line comes out is a race:
    torchrun ends the other rank (SIGTERM) as soon as one has exited, maybe before it has printed. What every run
    guarantees: one or two such lines, each whole, and no traceback through the project's code."""
    result = run_process("-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                         f"{trainer}/train.py", *tiny_args(tiny_data, tmp_path / "run", "--strategy", "ddp"))
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error: " in line]
    assert 1 <= len(errors) <= 2, result.stderr[-3000:]  # at most one a rank
    for line in errors:  # whole: one write each, so two ranks' lines never run into one
        assert line.startswith("error: ") and line.count("error: ") == 1, errors
        assert re.fullmatch(r"error: --num-nodes 1 x --devices 1 = 1 process(es)?, but the launcher started 2\b.*",
                            line), errors
    assert not project_frames(result.stderr), result.stderr[-3000:]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_limit_that_leaves_no_training_batch_is_refused_in_the_same_line_by_all(tiny_data, tmp_path, capsys):
    """0.001 of the 13 batches of an epoch is no batch: no trainer "trains" on nothing, and no checkpoint of
    untrained weights is written."""
    lines = {}
    for trainer in (*TRAINERS, HF_TRAINER):  # in this process; the command itself below, once
        out = tmp_path / trainer
        result = run_here(capsys, trainer, tiny_data, out, "--limit-train-batches", "0.001")
        assert_one_line_error(result)
        lines[trainer] = result.stderr.strip()
        assert not (out / "checkpoints").exists()
    assert lines["vanilla"] == lines["lightning"] == lines["fabric"] == lines[HF_TRAINER] == (
        "error: --limit-train-batches 0.001: 0.001 of 13 training batches is less than one batch; give a fraction "
        "of at least 0.07692, or a number of batches")
    result = run_process("vanilla/train.py", *tiny_args(tiny_data, tmp_path / "again", "--limit-train-batches",
                                                        "0.001"))
    assert_one_line_error(result)
    assert result.stderr.strip() == lines["vanilla"]


@pytest.mark.parametrize("trainer", [*TRAINERS, HF_TRAINER])
def test_16_mixed_on_the_cpu_falls_back_to_bf16_and_says_so_in_one_line(tiny_data, tmp_path, capsys, trainer):
    run(trainer, tiny_data, tmp_path / "run", "--precision", "16-mixed", "--max-epochs", "1")
    notices = [line for line in capsys.readouterr().out.splitlines() if "16-mixed" in line]
    assert notices == ["notice: --precision 16-mixed needs CUDA; using bf16-mixed on the CPU, as Lightning does"]
