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
from accelerate.data_loader import BatchSamplerShard
from torch.utils.data import DataLoader, DistributedSampler
from torchmetrics import MeanMetric
from transformers import Seq2SeqTrainer


def _unsharded(loader: DataLoader) -> DataLoader:
    shard = getattr(loader, "batch_sampler", None)
    if isinstance(shard, BatchSamplerShard) and isinstance(getattr(shard.batch_sampler, "sampler", None),
                                                           DistributedSampler):
        shard.num_processes, shard.process_index = 1, 0
    return loader


class QGTrainer(Seq2SeqTrainer):
    loss_is_scaled_for_ga = True  # compute_loss divides by the accumulation count itself

    def __init__(self, *args, train_loss: MeanMetric, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_loss = train_loss  # the epoch's mean training loss, read and reset by the metrics callback

    # Under DDP, the DistributedSampler the other rungs use (Lightning puts one in): each rank every world-size-th
    # example of one shuffle seeded with seed + epoch; accelerate would deal whole batches of one shuffle instead.
    def _get_train_sampler(self, train_dataset=None):
        if self.args.world_size == 1:
            return super()._get_train_sampler(train_dataset)
        return self._distributed_sampler(train_dataset if train_dataset is not None else self.train_dataset, True)

    def _get_eval_sampler(self, eval_dataset):
        if self.args.world_size == 1 or eval_dataset is not self.eval_dataset:  # the test set: accelerate's shares
            return super()._get_eval_sampler(eval_dataset)
        return self._distributed_sampler(eval_dataset, False)

    def _distributed_sampler(self, dataset, shuffle: bool) -> DistributedSampler:
        return DistributedSampler(dataset, num_replicas=self.args.world_size, rank=self.args.process_index,
                                  shuffle=shuffle, seed=self.args.seed)

    # `accelerator.prepare` shards the batches of a rank's own sampler again: made a pass-through, as the Trainer
    # does for its own rank-aware sampler (BatchRebalanceSampler)
    def get_train_dataloader(self) -> DataLoader:
        return _unsharded(super().get_train_dataloader())

    def get_eval_dataloader(self, eval_dataset=None) -> DataLoader:
        return _unsharded(super().get_eval_dataloader(eval_dataset))

    # bf16-mixed: accelerate autocasts the model's forward alone, and `generate` runs the encoder outside it (its
    # decoder steps go through forward); the whole generation under autocast, as the other rungs' test step runs it
    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None, **gen_kwargs):
        with self.accelerator.autocast():
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys, **gen_kwargs)

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
