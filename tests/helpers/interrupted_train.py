"""Run vanilla/train.py but crash right after optimizer step N (argv[1]): a stand-in for a killed run."""

import sys
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parents[2])

from vanilla import train  # noqa: E402
from vanilla.fit_loop import FitLoop  # noqa: E402

STOP_AFTER = int(sys.argv[1])
original = FitLoop.optimizer_step


def optimizer_step(self):
    original(self)
    if self.position.global_step == STOP_AFTER:
        raise SystemExit(f"simulated crash after step {STOP_AFTER}")


FitLoop.optimizer_step = optimizer_step
train.main(sys.argv[2:])
