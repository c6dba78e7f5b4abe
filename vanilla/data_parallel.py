"""`--strategy dp`: torch.nn.DataParallel, as the 2021 seed used with `accelerator='dp'`.

Lightning removed this strategy in 2.0 (PR #16748); this trainer keeps it. One process splits each batch across
the GPUs, runs the replicas in threads, and gathers their outputs on the first GPU. Gathering BART's logits
(batch x length x vocabulary) would be wasteful, so each replica computes its own loss and only the losses are
gathered; their mean weights the replicas equally, as DataParallel users did.

Mixed precision: torch's `parallel_apply` runs each replica in a thread of its own and re-enters autocast there
with only `enabled=` passed. The autocast dtype is thread-local, so a replica thread autocasts to its device's
default dtype -- float16 on CUDA -- whatever the run asked for: bf16-mixed would silently run in float16, with no
GradScaler. Each replica therefore enters autocast again with the run's dtype (`AutocastInReplicas`, also what
Fabric's `strategy="dp"` needs around the model it is given).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from vanilla.precision import DTYPES


def _replica_autocast(device_type: str, dtype: torch.dtype | None):
    """Inside a replica's thread: autocast to the run's dtype when autocast is on (it is off in 32-true runs and
    wherever the caller turned it off)."""
    if dtype is None or not torch.is_autocast_enabled(device_type):
        return nullcontext()
    return torch.autocast(device_type, dtype=dtype, cache_enabled=False)


class AutocastInReplicas(nn.Module):
    """`module`, run under autocast at `dtype` in whichever thread calls it (when autocast is on there); the same
    module otherwise, with the same parameters."""

    def __init__(self, module: nn.Module, device_type: str, dtype: torch.dtype | None):
        super().__init__()
        self.module = module
        self.device_type = device_type
        self.dtype = dtype

    def forward(self, *args, **kwargs):
        with _replica_autocast(self.device_type, self.dtype):
            return self.module(*args, **kwargs)


def autocast_in_replicas(module: nn.Module, precision: str, device_type: str = "cuda") -> nn.Module:
    """What to hand DataParallel (Fabric's `strategy="dp"`) under `precision`: the module itself in 32-true."""
    dtype = DTYPES.get(precision)
    return module if dtype is None else AutocastInReplicas(module, device_type, dtype)


class _ReplicaLoss(nn.Module):
    def __init__(self, model: nn.Module, loss: Callable[[nn.Module, dict], torch.Tensor]):
        super().__init__()
        self.model = model
        self.loss = loss

    def forward(self, input_ids, attention_mask, labels) -> torch.Tensor:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        return self.loss(self.model, batch).unsqueeze(0)  # 1-d so DataParallel can concatenate


class DataParallelLoss(nn.Module):
    """Callable as `loss = module(batch)`; the wrapped model's parameters stay the single source of truth.
    `autocast_dtype`: the run's mixed-precision dtype, which every replica autocasts to (None in 32-true)."""

    def __init__(self, model: nn.Module, device_ids: list[int], loss: Callable[[nn.Module, dict], torch.Tensor],
                 autocast_dtype: torch.dtype | None = None, device_type: str = "cuda"):
        super().__init__()
        replica = AutocastInReplicas(_ReplicaLoss(model, loss), device_type, autocast_dtype)
        self.parallel = nn.DataParallel(replica, device_ids=device_ids)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.parallel(batch["input_ids"], batch["attention_mask"], batch["labels"]).mean()
