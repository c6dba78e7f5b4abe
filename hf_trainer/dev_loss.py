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
    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.total, self.examples = torch.tensor(0.0), torch.tensor(0)

    def __call__(self, batch: EvalPrediction, compute_result: bool) -> dict[str, float]:
        examples = batch.label_ids.size(0)  # the batch's own size; `losses` holds its loss eval_batch_size times
        self.total = self.total + batch.losses[0].float().cpu() * examples
        self.examples = self.examples + examples
        if not compute_result:
            return {}
        dev_loss = (self.total / self.examples).item()
        self.reset()  # the next evaluation starts from nothing
        return {"dev_loss": dev_loss}
