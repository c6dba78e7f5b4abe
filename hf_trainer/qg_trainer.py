"""The Seq2SeqTrainer subclass of this rung: two methods that transformers' documentation names for overriding,
each to do what the other rungs do.

- `create_optimizer`: the rungs' optimizer, AdamW over every parameter with one weight decay. The Trainer's own
  (`optim="adamw_torch_fused"` by default on recent torch) takes biases and LayerNorm weights out of the decay.
- `compute_loss`: the model's mean token loss, divided by the accumulation count on every batch, as Lightning
  normalises it (`loss_is_scaled_for_ga = True` says so to the Trainer). As shipped, the Trainer sees BART's
  `forward(**kwargs)`, takes the loss for one already averaged over `num_items_in_batch` and does not divide it:
  BART returns a plain mean, so with `--accumulate-grad-batches 2` the gradients come out twice too large
  (upstream #37766; tests/test_hf_trainer.py shows it on the Trainer as shipped). The Trainer's fix, dividing by the
  batches of the step, would still differ from Lightning at an epoch's last, shorter group of batches.
  It also adds each training batch's loss to the epoch's batch-size-weighted mean (`train_loss`), which the
  Trainer does not keep: its logged "loss" is a mean over optimizer steps, not over examples.
"""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric
from transformers import Seq2SeqTrainer


class QGTrainer(Seq2SeqTrainer):
    loss_is_scaled_for_ga = True  # compute_loss divides by the accumulation count itself

    def __init__(self, *args, train_loss: MeanMetric, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_loss = train_loss  # the epoch's mean training loss, read and reset by the metrics callback

    def create_optimizer(self, model=None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW((model or self.model).parameters(), lr=self.args.learning_rate,
                                               weight_decay=self.args.weight_decay)
        return self.optimizer

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if not model.training:  # evaluation: the loss as it is
            return result
        loss = result[0] if return_outputs else result
        self.train_loss.update(loss.detach(), weight=inputs["input_ids"].size(0))
        loss = loss / self.args.gradient_accumulation_steps
        return (loss, result[1]) if return_outputs else loss
