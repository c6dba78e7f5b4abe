"""`--strategy dp`: torch.nn.DataParallel, as the 2021 seed used with `accelerator='dp'`.

Lightning removed this strategy in 2.0 (PR #16748); this trainer keeps it. One process splits each batch across
the GPUs, runs the replicas in threads, and gathers their outputs on the first GPU. Gathering BART's logits
(batch x length x vocabulary) would be wasteful, so each replica computes its own loss and only the losses are
gathered; their mean weights the replicas equally, as DataParallel users did.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class _ReplicaLoss(nn.Module):
    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, dict], torch.Tensor]):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, input_ids, attention_mask, labels) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        return self.loss(self.model, batch).unsqueeze(0)  # 1-d so DataParallel can concatenate


class DataParallelLoss(nn.Module):
    """Callable as `loss = module(batch)`; the wrapped model's parameters stay the single source of truth."""

    def __init__(self, model: nn.Module, device_ids: list[int], loss: Callable[[nn.Module, dict], torch.Tensor]):
        super().__init__()
        self.parallel = nn.DataParallel(_ReplicaLoss(model, loss), device_ids=device_ids)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.parallel(batch["input_ids"], batch["attention_mask"], batch["labels"]).mean()
