"""`--strategy dp`: torch.nn.DataParallel, as the 2021 seed used with `accelerator='dp'`.

Lightning removed this strategy in 2.0 (PR #16748); this trainer keeps it. One process splits each batch across
the GPUs, runs the replicas in threads, and gathers their outputs on the first GPU. Gathering BART's logits
(batch x length x vocabulary) would be wasteful, so each replica computes its own loss and only the losses are
gathered; their mean weights the replicas equally, as DataParallel users did.
"""

from __future__ import annotations

import torch
from torch import nn

from shared.model import seq2seq_loss


class _ReplicaLoss(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, labels) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        return seq2seq_loss(self.model, batch).unsqueeze(0)  # 1-d so DataParallel can concatenate


class DataParallelLoss(nn.Module):
    """Callable as `loss = module(batch)`; the wrapped model's parameters stay the single source of truth."""

    def __init__(self, model: nn.Module, device_ids: list[int]):
        super().__init__()
        self.parallel = nn.DataParallel(_ReplicaLoss(model), device_ids=device_ids)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.parallel(batch["input_ids"], batch["attention_mask"], batch["labels"]).mean()
