"""The Lightning trainer's own behaviour on tiny data: the same artifacts as the hand-written trainer, plain Lightning
(lightning/plain_lightning.py) training the same run but resuming mid-epoch on other batches, exact resume
through Lightning's hooks, the dp -> ddp mapping, the Tuner's batch-size search under a simulated out-of-memory
threshold, DDP on two CPU processes, and the side-by-side summary of `make demo`."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import yaml
from pytorch_lightning.strategies import DDPStrategy

from shared.cli import parse_args
from shared.errors import UserError
from tests.conftest import REPO, load_lightning_train, run_tree, tiny_args

pytestmark = pytest.mark.slow
# Subprocesses keep this process's thread count: a different one changes float sums in the last bit.
ENV = dict(os.environ, PYTHONWARNINGS="ignore")
DDP_ENV = dict(ENV, OMP_NUM_THREADS="1")  # two ranks on two cores
lightning_train = load_lightning_train()
plain_lightning = sys.modules["plain_lightning"]  # lightning/plain_lightning.py, as lightning/train.py imported it


def run(tiny_data, out, *extra):
    return lightning_train.main(tiny_args(tiny_data, out, *extra))


def run_script(*command, env=ENV, timeout=240):
    return subprocess.run([sys.executable, *command], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # Lightning's checkpoints load safely too


def assert_same_weights(a: Path, b: Path) -> None:
    x, y = load(a)["state_dict"], load(b)["state_dict"]
    model_keys = [k for k in x if k.startswith("model.")]
    assert model_keys == [k for k in y if k.startswith("model.")] and model_keys
    for key in model_keys:
        assert torch.equal(x[key], y[key]), (a, b, key)


def test_same_artifact_tree_as_the_vanilla_trainer(trained_runs):
    """Same files and folders; their contents are compared in test_parity.py."""
    v, pl = trained_runs["vanilla"], trained_runs["lightning"]
    assert run_tree(pl) == run_tree(v)
    assert {"checkpoints/last.ckpt", "metrics.csv", "hparams.yaml", "tensorboard/events", "tensorboard/hparams.yaml",
            "predictions.jsonl", "test_metrics.json", "export/model.safetensors",
            "tokenizer/tokenizer.json"} <= set(run_tree(pl))
    hparams = [yaml.safe_load((out / "hparams.yaml").read_text()) for out in (v, pl)]
    assert hparams[0].pop("output_dir") != hparams[1].pop("output_dir") and hparams[0] == hparams[1]
    names = sorted(p.name for p in (pl / "checkpoints").iterdir())
    assert len(names) == 3 and "last.ckpt" in names


@pytest.mark.parametrize("stop_at, every_n", [(17, "5"), (14, "0")], ids=["mid-epoch", "between-epochs"])
def test_resume_after_a_kill_is_exact(tiny_data, tmp_path, stop_at, every_n):
    """13 batches per epoch. Killed after step 17 with step saves every 5: last.ckpt is step 15, two batches
    into epoch 1. Killed after step 14 without step saves: last.ckpt is the end of epoch 0. Resumed, the run
    ends bit for bit where an uninterrupted one does: weights, metrics.csv, checkpoints, test results."""
    extra = ("--checkpoint-every-n-steps", every_n)
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    run(tiny_data, straight, *extra)
    killed = run_script("tests/helpers/interrupted_train.py", "lightning", str(stop_at),
                        *tiny_args(tiny_data, resumed, *extra))
    assert killed.returncode == 3, killed.stderr[-2000:]
    last = load(resumed / "checkpoints" / "last.ckpt")
    state = last["callbacks"]["ExactResume"]
    if every_n == "5":
        assert (last["global_step"], last["epoch"], state["mid_epoch"]) == (15, 1, True)
        assert last["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches_trained"] == 2
    else:
        assert (last["global_step"], last["epoch"], state["mid_epoch"]) == (13, 0, False)
    assert len(state["rng_states"]) == 1
    run(tiny_data, resumed, *extra, "--resume", "last")
    assert sorted(p.name for p in (straight / "checkpoints").iterdir()) == \
        sorted(p.name for p in (resumed / "checkpoints").iterdir())
    for path in (straight / "checkpoints").iterdir():
        assert_same_weights(path, resumed / "checkpoints" / path.name)
    for name in ("metrics.csv", "predictions.jsonl", "test_metrics.json"):
        assert (straight / name).read_text() == (resumed / name).read_text(), name


class BatchRecorder:
    """Which examples each training batch of a plain-Lightning run holds: (epoch, batch index, the batch's
    token ids), recorded from the LightningModule's own hook."""

    def __init__(self, monkeypatch):
        self.batches: list[tuple[int, int, list]] = []
        recorder = self

        def on_train_batch_start(module, batch, batch_idx):
            recorder.batches.append((module.current_epoch, batch_idx, batch["input_ids"].tolist()))

        monkeypatch.setattr(plain_lightning.QGModule, "on_train_batch_start", on_train_batch_start)

    def epoch(self, epoch: int) -> dict[int, list]:
        return {batch_idx: ids for e, batch_idx, ids in self.batches if e == epoch}


def test_plain_lightning_trains_the_uninterrupted_run_bit_for_bit_as_the_other_rungs(trained_runs, tiny_data,
                                                                                      tmp_path):
    """lightning/plain_lightning.py, the job as Lightning's documentation writes it with none of the project's
    additions, trains the same run as every trainer here: the same checkpoints, weights, metrics and predictions."""
    plain = tmp_path / "plain"
    plain_lightning.main(tiny_args(tiny_data, plain, "--save-top-k", "2"))
    for trainer, run_dir in trained_runs.items():
        names = sorted(path.name for path in (run_dir / "checkpoints").iterdir())
        assert sorted(path.name for path in (plain / "checkpoints").iterdir()) == names, trainer
        for name in names:
            assert_same_weights(plain / "checkpoints" / name, run_dir / "checkpoints" / name)
        for name in ("metrics.csv", "predictions.jsonl", "test_metrics.json"):
            assert (plain / name).read_text() == (run_dir / name).read_text(), (trainer, name)
    assert "ExactResume" not in load(plain / "checkpoints" / "last.ckpt")["callbacks"]


def test_plain_lightning_killed_and_resumed_mid_epoch_trains_other_batches(tiny_data, tmp_path, monkeypatch):
    """Why plain Lightning's resume is not exact. 13 batches an epoch, a step checkpoint every 5 steps: killed
    after step 17, the run's latest checkpoint is step 15, two batches into epoch 1. Resumed from it, Lightning
    skips the two trained batches but draws a fresh shuffle for the epoch (it saves no loader state and no random
    generators), so the rest of epoch 1 trains other batches than the uninterrupted run did there, and the run
    ends with other weights."""
    extra = ("--checkpoint-every-n-steps", "5")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    uninterrupted = BatchRecorder(monkeypatch)
    plain_lightning.main(tiny_args(tiny_data, straight, *extra))
    killed = run_script("tests/helpers/interrupted_train.py", "lightning/plain_lightning.py", "17",
                        *tiny_args(tiny_data, resumed, *extra))
    assert killed.returncode == 3, killed.stderr[-2000:]
    step_checkpoint = resumed / "checkpoints" / "epoch=1-step=15.ckpt"
    assert (load(step_checkpoint)["global_step"], load(step_checkpoint)["epoch"]) == (15, 1)

    after_resume = BatchRecorder(monkeypatch)
    plain_lightning.main(tiny_args(tiny_data, resumed, *extra, "--resume", str(step_checkpoint)))
    straight_epoch, resumed_epoch = uninterrupted.epoch(1), after_resume.epoch(1)
    assert sorted(resumed_epoch) == list(range(2, 13))  # the two trained batches skipped, the rest trained
    differing = [batch_idx for batch_idx in resumed_epoch if resumed_epoch[batch_idx] != straight_epoch[batch_idx]]
    assert len(differing) >= 9, differing  # a fresh shuffle: hardly a batch where it was
    x = load(straight / "checkpoints" / "last.ckpt")["state_dict"]
    y = load(resumed / "checkpoints" / "last.ckpt")["state_dict"]
    assert load(resumed / "checkpoints" / "last.ckpt")["global_step"] == load(straight / "checkpoints" / "last.ckpt")[
        "global_step"] == 39
    assert not all(torch.equal(x[k], y[k]) for k in x if k.startswith("model."))


def test_dp_maps_to_ddp_with_a_notice_and_needs_a_gpu(capsys):
    from run_guard import RunGuard

    RunGuard._check_data_parallel("auto", cuda=False)
    assert capsys.readouterr().out == ""
    with pytest.raises(UserError, match="--strategy dp: .* CUDA GPUs"):
        RunGuard._check_data_parallel("dp", cuda=False)  # no GPU in use
    RunGuard._check_data_parallel("dp", cuda=True)
    notice = capsys.readouterr().out.strip().splitlines()
    assert len(notice) == 1 and "removed in 2.0" in notice[0] and "strategy='ddp'" in notice[0]
    guard = RunGuard.__new__(RunGuard)  # the strategy the Trainer gets: DDP, with the run's --ddp-timeout
    guard.cuda = False
    guard.args = parse_args("t", "lightning", ["--strategy", "dp", "--ddp-timeout", "90"])
    assert isinstance(guard.strategy, DDPStrategy) and guard.strategy._timeout == timedelta(seconds=90)
    guard.args = parse_args("t", "lightning", [])
    assert guard.strategy == "auto"


def test_dp_on_the_command_line_is_one_line(tiny_data, tmp_path):
    result = run_script("lightning/train.py", *tiny_args(tiny_data, tmp_path / "run", "--strategy", "dp"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [line for line in result.stderr.strip().splitlines()
                                                  if line.startswith("error: --strategy dp:")]


class Recorder:
    """Out of memory above 40 examples per batch, and the batch sizes the search tried."""

    def __init__(self, monkeypatch):
        self.searching, self.tried = False, []
        original_loss = plain_lightning.seq2seq_loss  # the LightningModule's, in lightning/plain_lightning.py

        def loss(model, batch):
            size = batch["input_ids"].size(0)
            if self.searching and (not self.tried or self.tried[-1] != size):
                self.tried.append(size)
            if size > 40:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
            return original_loss(model, batch)

        recorder = self

        class Tuner(lightning_train.Tuner):
            def scale_batch_size(self, *args, **kwargs):
                recorder.searching = True
                try:
                    return super().scale_batch_size(*args, **kwargs)
                finally:
                    recorder.searching = False

        monkeypatch.setattr(plain_lightning, "seq2seq_loss", loss)
        monkeypatch.setattr(lightning_train, "Tuner", Tuner)


def test_tuner_batch_size_search_under_a_simulated_oom(tiny_data, tmp_path, monkeypatch, capsys):
    """The Tuner's quirks included: the first trial runs at the starting batch size (16), not init_val (2).
    The searched run then trains exactly as a run started at the found size: weights restored by the Tuner,
    random generators by isolate_rng."""
    recorder = Recorder(monkeypatch)
    searched = tmp_path / "searched"
    run(tiny_data, searched, "--auto-batch-size", "power", "--max-epochs", "2")
    assert recorder.tried == [16, 4, 8, 16, 32, 64]
    assert "batch-size search (power) -> batch size 32" in capsys.readouterr().out
    assert yaml.safe_load((searched / "hparams.yaml").read_text())["batch_size"] == 32
    assert not list(searched.glob(".scale_batch_size_*.ckpt"))  # the Tuner's temporary checkpoint is gone
    direct = tmp_path / "direct"
    run(tiny_data, direct, "--batch-size", "32", "--max-epochs", "2")
    assert (searched / "metrics.csv").read_text() == (direct / "metrics.csv").read_text()
    assert_same_weights(searched / "checkpoints" / "last.ckpt", direct / "checkpoints" / "last.ckpt")

    recorder.tried = []
    run(tiny_data, tmp_path / "bin", "--auto-batch-size", "binsearch", "--max-epochs", "1")
    assert recorder.tried == [16, 4, 8, 16, 32, 64, 48, 40, 44, 42, 41]
    assert "batch-size search (binsearch) -> batch size 38" in capsys.readouterr().out


def test_tuner_refuses_ddp_in_one_line(tiny_data, tmp_path):
    with pytest.raises(UserError, match="--auto-batch-size: .* not supported with distributed strategies"):
        run(tiny_data, tmp_path / "run", "--auto-batch-size", "power", "--strategy", "ddp", "--devices", "2",
            "--accelerator", "cpu")


def test_demo_summary_shows_the_four_trainers_agreeing(tiny_data, tmp_path):
    """`make demo`: the four trainers, each in a new version directory, then the table; --compare reads the
    latest version of each again without training."""
    args = tiny_args(tiny_data, tmp_path / "unused")
    result = run_script("scripts/compare_runs.py", "--runs-root", str(tmp_path / "runs"), *args[:2], *args[4:])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    table = result.stdout[result.stdout.index("same\n") - 100:]
    for field in ("wall time", "epochs run", "final dev_loss", "best dev_loss", "best checkpoint", "bleu_4",
                  "rouge_l"):
        assert field in table
    assert "final weights" in table and "tested weights" in table and "DIFFER" not in table and "NO" not in table
    assert result.stdout.rstrip().endswith("the 4 trainers agree")
    assert f"fabric: {tmp_path / 'runs' / 'fabric' / 'version_0'}" in result.stdout
    again = run_script("scripts/compare_runs.py", "--runs-root", str(tmp_path / "runs"), "--compare")
    assert again.returncode == 0 and again.stdout.rstrip().endswith("the 4 trainers agree"), again.stdout
    assert f"hf_trainer: {tmp_path / 'runs' / 'hf_trainer' / 'version_0'}" in again.stdout
    assert f"lightning: {tmp_path / 'runs' / 'lightning' / 'version_0'}" in again.stdout
