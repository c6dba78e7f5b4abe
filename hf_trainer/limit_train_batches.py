"""Lightning's `limit_train_batches` (`--limit-train-batches`), which the Trainer lacks (its `max_steps` ends the
whole run, not each epoch): a `TrainerCallback` that ends each epoch after that many batches, through the
Trainer's documented switch `control.should_epoch_stop`. The epoch still validates and saves as a whole one does.

The Trainer steps the optimizer at the end of a group of `gradient_accumulation_steps` batches or of the epoch's
data, not where an epoch is cut short; so a limit that ends an epoch inside a group is refused, where Lightning
would step on the partial group.
"""

from __future__ import annotations

from transformers import TrainerCallback

from shared.errors import UserError
from shared.loop_position import num_train_batches


class LimitTrainBatches(TrainerCallback):
    def __init__(self, limit: float | int, batches_per_epoch: int, accumulate_grad_batches: int):
        self.batches = num_train_batches(batches_per_epoch, limit)
        if self.batches < batches_per_epoch and self.batches % accumulate_grad_batches:
            raise UserError(f"--limit-train-batches {limit}: {self.batches} batches per epoch end inside a group of "
                            f"--accumulate-grad-batches {accumulate_grad_batches}, where the transformers Trainer "
                            f"does not step the optimizer; give a multiple of it")
        self.done = 0

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.done = 0

    def on_substep_end(self, args, state, control, **kwargs):  # a batch that accumulated without a step
        self._count(control)

    def on_step_end(self, args, state, control, **kwargs):  # a batch that ended with an optimizer step
        self._count(control)

    def _count(self, control) -> None:
        self.done += 1
        if self.done == self.batches:
            control.should_epoch_stop = True
