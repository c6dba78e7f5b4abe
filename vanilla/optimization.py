"""One training step with automatic optimisation (Lightning: `_AutomaticOptimization` and the precision plugin's
`optimizer_step`): forward under the precision's autocast, backward of the loss divided by the accumulation
count, and on the batches that step: unscale (16-mixed), clip the gradient norm, optimizer step, zero the
gradients with `set_to_none=True`, then the LR scheduler's step (interval "step")."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from vanilla.precision import Precision
from vanilla.strategy import Strategy


@dataclass
class Optimization:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    precision: Precision
    strategy: Strategy
    accumulate_grad_batches: int = 1
    gradient_clip_val: float = 0.0

    def training_step(self, batch: dict, batch_idx: int, num_batches: int) -> tuple[torch.Tensor, bool]:
        """The batch's loss (detached) and whether the optimizer stepped after it."""
        batch = {k: v.to(self.strategy.device, non_blocking=True) for k, v in batch.items()}
        steps_now = (batch_idx + 1) % self.accumulate_grad_batches == 0 or batch_idx + 1 == num_batches
        # Under DDP, batches that only accumulate skip the gradient all-reduce (Lightning's block_backward_sync).
        no_sync = self.strategy.no_sync
        with no_sync() if (no_sync is not None and not steps_now) else nullcontext():
            with self.precision.forward_context():
                loss = self.strategy.loss_fn(batch)
            self.precision.backward(loss / self.accumulate_grad_batches)
        if steps_now:
            self.optimizer_step()
        return loss.detach(), steps_now

    def optimizer_step(self) -> None:
        self.precision.unscale_gradients(self.optimizer)  # before clipping: clip the true gradients
        if self.gradient_clip_val > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
        self.precision.optimizer_step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
