"""Run vanilla/ or lightning/train.py (argv[1]) but kill the process right after optimizer step N (argv[2]),
as a crash or `kill -9` would: no clean-up, no final checkpoint. The rest of argv is the trainer's."""

import importlib.util
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[0] = str(REPO)
TRAINER, STOP_AFTER, ARGV = sys.argv[1], int(sys.argv[2]), sys.argv[3:]


def die() -> None:
    sys.stdout.flush()
    os._exit(3)


if TRAINER == "vanilla":
    from vanilla import train
    from vanilla.fit_loop import FitLoop

    original = FitLoop.optimizer_step

    def optimizer_step(self, *args, **kwargs):
        original(self, *args, **kwargs)  # includes the step checkpoint, if one is due
        if self.position.global_step == STOP_AFTER:
            die()

    FitLoop.optimizer_step = optimizer_step
else:
    spec = importlib.util.spec_from_file_location("lightning_train", REPO / "lightning" / "train.py")
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)

    def on_train_batch_end(self, outputs, batch, batch_idx):  # after the callbacks, so after any checkpoint
        if self.trainer.global_step == STOP_AFTER:
            die()

    train.QGModule.on_train_batch_end = on_train_batch_end
train.main(ARGV)
