"""dev_loss as the other rungs compute it: the batch-size-weighted mean of the batches' losses, summed in float32
(`sum(loss * batch_size) / sum(batch_size)`, Lightning's `self.log(..., batch_size=...)`).

The Trainer's own `eval_loss` is `numpy.mean` over each batch's loss repeated `eval_batch_size` times: another
summation order at best, and another weight for a short last batch where accelerate does not cut the repeats.
This is the Trainer's documented way to add a metric batch by batch: a `compute_metrics` with
`batch_eval_metrics=True`, called after each evaluation batch with that batch's loss (`include_for_metrics=["loss"]`),
and with `compute_result=True` after the last one. The Trainer logs it as `eval_dev_loss`.
"""

from __future__ import annotations

import torch
from transformers import EvalPrediction


class DevLoss:
    def __init__(self, world_size: int = 1):
        self.world_size = world_size
        self.reset()

    def reset(self) -> None:
        # under DDP one sum per rank, added at the end as the other rungs all-reduce their sums
        self.totals, self.examples = [torch.tensor(0.0)] * self.world_size, torch.tensor(0)

    def __call__(self, batch: EvalPrediction, compute_result: bool) -> dict[str, float]:
        # every rank's batch loss, repeated eval_batch_size times, rank after rank; the ranks' batches are of one
        # size (the DistributedSampler gives each rank as many examples)
        examples = batch.label_ids.size(0)
        per_rank, repeats = examples // self.world_size, batch.losses.numel() // self.world_size
        self.totals = [total + batch.losses[rank * repeats].float().cpu() * per_rank
                       for rank, total in enumerate(self.totals)]
        self.examples = self.examples + examples
        if not compute_result:
            return {}
        dev_loss = (sum(self.totals[1:], self.totals[0]) / self.examples).item()
        self.reset()  # the next evaluation starts from nothing
        return {"dev_loss": dev_loss}
