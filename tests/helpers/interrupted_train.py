"""Run vanilla/, lightning/, fabric/ or hf_trainer/train.py (hf_trainer: step kills and signals), or
lightning/plain_lightning.py (argv[1]), and interrupt it at a chosen point (argv[2]); the rest of argv is the
trainer's. The kills are `os._exit`: no clean-up, no final checkpoint, as `kill -9` would leave the run.

    N               kill right after optimizer step N (a bare number, as the older tests write it)
    step:N          the same
    val:K           kill during the K-th validation batch (the sanity check's two batches count)
    save:K          kill half-way through writing the K-th checkpoint file (its temporary file) to disk
    full:K          the K-th checkpoint file cannot be written: No space left on device (under DDP rank 0 alone
                    writes checkpoints, so it alone fails)
    signal:NAME:N   send SIGNAME (TERM or INT) to this process at optimizer step N, and let the trainer react
"""

import builtins
import errno
import importlib.util
import os
import signal
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[0] = str(REPO)


def die() -> None:
    sys.stdout.flush()
    os._exit(3)


def patched_trainer(trainer: str, point: str):
    """The trainer's module (its train.py, or the file named), patched to stop at `point`."""
    kind, _, value = point.rpartition(":") if ":" in point else ("step", "", point)
    if kind.startswith("signal:"):
        kind, signum = "signal", getattr(signal, "SIG" + kind.split(":")[1])
    at = int(value)
    if trainer == "vanilla":
        from vanilla import train
    else:
        # a trainer's folder (its train.py), or a trainer's file: lightning/plain_lightning.py
        path = REPO / trainer if trainer.endswith(".py") else REPO / trainer / "train.py"
        spec = importlib.util.spec_from_file_location(path.stem if path.stem != "train" else f"{trainer}_train", path)
        train = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(train)

    if kind in ("step", "signal"):
        action = die if kind == "step" else (lambda: os.kill(os.getpid(), signum))
        if trainer == "vanilla":
            from vanilla.fit_loop import FitLoop

            original_step = FitLoop.training_step

            def training_step(self, *args, **kwargs):
                before = self.position.global_step
                loss = original_step(self, *args, **kwargs)  # includes the step checkpoint, if one is due
                if before < at == self.position.global_step:
                    action()
                return loss

            FitLoop.training_step = training_step
        elif trainer == "fabric":
            original_step, steps, due = train.training_step, [0], [False]

            def training_step(job, *args, **kwargs):
                if due[0]:  # the step before, and its step checkpoint if one was due, are done
                    die()
                loss, stepped = original_step(job, *args, **kwargs)
                steps[0] += stepped
                if stepped and steps[0] == at:
                    if kind == "step":
                        due[0] = True
                    else:
                        action()  # the signal arrives during step at, as in the other trainers
                return loss, stepped

            original_validate = train.validate

            def validate(job, *args, **kwargs):  # after an epoch's last step, validation comes next
                if due[0]:
                    die()
                return original_validate(job, *args, **kwargs)

            train.training_step, train.validate = training_step, validate
        elif trainer == "hf_trainer":
            from transformers import TrainerCallback

            class DieAfterStep(TrainerCallback):
                def on_step_begin(self, args, state, control, **kwargs):  # the signal arrives during step `at`
                    if kind == "signal" and state.global_step + 1 == at:
                        action()

                def on_step_end(self, args, state, control, **kwargs):  # before the Trainer saves this step
                    if kind == "step" and state.global_step == at:
                        die()

            original_init = train.QGTrainer.__init__

            def __init__(self, *args, **kwargs):
                original_init(self, *args, **kwargs)
                self.add_callback(DieAfterStep())

            train.QGTrainer.__init__ = __init__
        elif kind == "step":
            def on_train_batch_end(self, outputs, batch, batch_idx):  # after the callbacks, so after any checkpoint
                if self.trainer.global_step == at:
                    die()

            train.QGModule.on_train_batch_end = on_train_batch_end
        else:
            original_training_step = train.QGModule.training_step

            def training_step(self, batch, batch_idx):  # the signal arrives during step at, as in the vanilla case
                loss = original_training_step(self, batch, batch_idx)
                if self.trainer.global_step + 1 == at:
                    action()
                return loss

            train.QGModule.training_step = training_step
    elif kind == "val":
        # the module whose code calls the loss: Lightning's LightningModule is in lightning/plain_lightning.py
        loss_home = sys.modules[train.QGModule.__module__] if hasattr(train, "QGModule") else train
        original_loss, eval_calls = loss_home.seq2seq_loss, [0]

        def loss(model, batch):
            if not model.training:
                eval_calls[0] += 1
                if eval_calls[0] == at:
                    die()
            return original_loss(model, batch)

        loss_home.seq2seq_loss = loss
    elif kind in ("save", "full"):
        real_open, writes = builtins.open, [0]

        class HalfWriter:
            """Writes half of what it is given, then the process dies."""

            def __init__(self, handle):
                self.handle = handle

            def write(self, data):
                self.handle.write(bytes(data)[: len(data) // 2])
                self.handle.flush()
                die()

            def __getattr__(self, name):
                return getattr(self.handle, name)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.handle.close()

        def is_checkpoint_write(file) -> bool:
            """vanilla writes a temporary file beside the checkpoint; Lightning (fsspec) one in the system's temporary
            directory, moved into place afterwards."""
            parent = Path(str(file)).parent
            return parent.name == "checkpoints" or parent == Path(tempfile.gettempdir())

        def open_(file, mode="r", *args, **kwargs):
            handle = real_open(file, mode, *args, **kwargs)
            if "w" in mode and "b" in mode and is_checkpoint_write(file):
                writes[0] += 1
                if writes[0] == at:
                    if kind == "full":
                        handle.close()
                        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
                    return HalfWriter(handle)
            return handle

        builtins.open = open_
    return train


if __name__ == "__main__":  # not when a DataLoader worker's fork server imports this file (shared.loader_workers)
    from shared.entry_point import exit_on_user_error

    exit_on_user_error(lambda: patched_trainer(sys.argv[1], sys.argv[2]).main(sys.argv[3:]))()
