"""Putting the model on its device(s) for the chosen strategy (Lightning: `Strategy.setup`, which moves the model
and wraps it in DistributedDataParallel; DataParallel was Lightning 1.x's `dp`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch

from vanilla import ddp
from vanilla.accelerator import Hardware
from vanilla.data_parallel import DataParallelLoss
from vanilla.precision import Precision

LossFn = Callable[[dict], torch.Tensor]


@dataclass(frozen=True)
class Strategy:
    name: str  # "single", "dp" or "ddp"
    device: torch.device
    process: ddp.ProcessInfo
    loss_fn: LossFn  # loss = loss_fn(batch), through the DataParallel or DDP wrapper when there is one
    no_sync: Callable | None = None  # DDP: skip the gradient all-reduce for batches that only accumulate

    @property
    def is_global_zero(self) -> bool:
        return self.process.is_global_zero


def connect(hardware: Hardware, model: torch.nn.Module, process: ddp.ProcessInfo,
            loss: Callable[[torch.nn.Module, dict], torch.Tensor], precision: Precision) -> Strategy:
    """`precision`: DataParallel's replicas autocast to its dtype (see vanilla/data_parallel.py)."""
    device = torch.device(f"cuda:{process.local_rank}" if hardware.device_type == "cuda" else "cpu")
    model.to(device)
    if hardware.strategy == "dp":
        parallel_loss = DataParallelLoss(model, list(range(hardware.devices)), loss, precision.dtype, device.type)
        return Strategy("dp", device, process, parallel_loss)
    if hardware.strategy == "ddp":
        module = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[process.local_rank] if device.type == "cuda" else None)
        return Strategy("ddp", device, process, partial(loss, module), module.no_sync)
    return Strategy("single", device, process, partial(loss, model))
