"""Early stopping on dev_loss (Lightning: `callbacks.EarlyStopping`, mode "min").

Checked once per epoch after validation and before checkpointing. In order: a non-finite value stops at once;
an improvement (`current + min_delta < best`, strictly) resets the count; otherwise the count grows and
training stops when it reaches `patience`. The arithmetic is done on float32 tensors as Lightning does it, so
the trainers agree even where a value sits exactly on the threshold.
"""

from __future__ import annotations

from enum import Enum

import torch


class StoppingReason(Enum):
    """Why training stopped, with the values of Lightning's `EarlyStoppingReason` (saved in checkpoints)."""

    NOT_STOPPED = 0
    PATIENCE_EXHAUSTED = 3
    NON_FINITE_METRIC = 4


class EarlyStopping:
    def __init__(self, monitor: str = "dev_loss", patience: int = 3, min_delta: float = 0.0):
        self.monitor = monitor
        self.patience = patience
        self.min_delta = -abs(min_delta)  # mode "min": improvement means current - min_delta < best, min_delta <= 0
        self.wait_count = 0
        self.stopped_epoch = 0
        self.best_score = torch.tensor(torch.inf)
        self.stopping_reason = StoppingReason.NOT_STOPPED
        self.stopping_reason_message: str | None = None

    def check(self, current: torch.Tensor, epoch: int) -> tuple[bool, str]:
        """Update with this epoch's value; return (should_stop, a sentence saying why or what improved)."""
        current = current.squeeze()
        if not torch.isfinite(current):
            should_stop, self.stopping_reason = True, StoppingReason.NON_FINITE_METRIC
            reason = (f"Monitored metric {self.monitor} = {current} is not finite. "
                      f"Previous best value was {self.best_score:.3f}. Signaling Trainer to stop.")
        elif torch.lt(current - self.min_delta, self.best_score.to(current.device)):
            should_stop = False
            if torch.isfinite(self.best_score):
                reason = (f"Metric {self.monitor} improved by {abs(self.best_score - current):.3f} >= "
                          f"min_delta = {abs(self.min_delta)}. New best score: {current:.3f}")
            else:
                reason = f"Metric {self.monitor} improved. New best score: {current:.3f}"
            self.best_score = current
            self.wait_count = 0
        else:
            self.wait_count += 1
            should_stop = self.wait_count >= self.patience
            reason = f"Metric {self.monitor} did not improve ({self.wait_count}/{self.patience})."
            if should_stop:
                self.stopping_reason = StoppingReason.PATIENCE_EXHAUSTED
                reason = (f"Monitored metric {self.monitor} did not improve in the last {self.wait_count} records. "
                          f"Best score: {self.best_score:.3f}. Signaling Trainer to stop.")
        if should_stop:
            self.stopped_epoch = epoch
            self.stopping_reason_message = reason
        return should_stop, reason

    def state_dict(self) -> dict:
        return {"wait_count": self.wait_count, "stopped_epoch": self.stopped_epoch, "best_score": self.best_score,
                "patience": self.patience, "stopping_reason": self.stopping_reason.value,
                "stopping_reason_message": self.stopping_reason_message}

    def load_state_dict(self, state: dict) -> None:
        self.wait_count = state["wait_count"]
        self.stopped_epoch = state["stopped_epoch"]
        self.best_score = state["best_score"]
        self.patience = state["patience"]
        self.stopping_reason = StoppingReason(state.get("stopping_reason", StoppingReason.NOT_STOPPED.value))
        self.stopping_reason_message = state["stopping_reason_message"]
