"""Early stopping as the other rungs stop: transformers' `EarlyStoppingCallback`, plus what Lightning's
`EarlyStopping` does and it does not, through the callback's own hooks.

- A dev_loss that is NaN or infinite stops the run at once (Lightning's `check_finite`); the Trainer's callback
  would count it as one epoch without improvement and train on.
- The reason, in Lightning's words, for the line every rung prints when it stops early.

`--min-delta` is refused (hf_trainer/train.py): the Trainer compares with `state.best_metric`, which moves on
any decrease, where Lightning's best moves only on an improvement beyond `min_delta`; at 0 the two agree.
"""

from __future__ import annotations

import math

from transformers import EarlyStoppingCallback


class EarlyStopping(EarlyStoppingCallback):
    def __init__(self, early_stopping_patience: int = 1, early_stopping_threshold: float = 0.0):
        # the parent's arguments: a resumed Trainer rebuilds the callback from them (restore_callback_states_...)
        super().__init__(early_stopping_patience, early_stopping_threshold)
        self.stopping_reason_message: str | None = None

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        current = metrics["eval_dev_loss"]
        best = state.best_metric if state.best_metric is not None else math.inf
        if not math.isfinite(current):
            control.should_training_stop = True
            self.stopping_reason_message = (f"Monitored metric dev_loss = {current} is not finite. Previous best "
                                            f"value was {best:.3f}. Signaling Trainer to stop.")
            return
        super().on_evaluate(args, state, control, metrics, **kwargs)
        # its own count, not should_training_stop: the Trainer sets that too, after the last step of the last epoch
        if self.early_stopping_patience_counter >= self.early_stopping_patience:
            self.stopping_reason_message = (
                f"Monitored metric dev_loss did not improve in the last {self.early_stopping_patience_counter} "
                f"records. Best score: {best:.3f}. Signaling Trainer to stop.")
