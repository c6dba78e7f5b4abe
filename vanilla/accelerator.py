"""Which devices and how many processes (Lightning: the accelerator connector behind
`Trainer(accelerator=..., devices=..., strategy=...)`). Requests that cannot be met end in one line."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from shared.devices import check_data_parallel, check_devices
from shared.errors import UserError


@dataclass(frozen=True)
class Hardware:
    accelerator: str  # "cpu" or "gpu"
    strategy: str  # "single", "dp" or "ddp"
    devices: int  # GPUs for dp; processes for ddp; 1 for single

    @property
    def device_type(self) -> str:
        return "cuda" if self.accelerator == "gpu" else "cpu"


def resolve_hardware(accelerator: str, devices: int, strategy: str, num_nodes: int = 1) -> Hardware:
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if accelerator == "gpu" and gpus == 0:
        raise UserError("--accelerator gpu: no CUDA GPU is visible (torch.cuda.is_available() is False)")
    if accelerator == "auto":
        accelerator = "gpu" if gpus > 0 else "cpu"
    check_devices(devices, cuda=accelerator == "gpu")
    count = gpus if devices == -1 else devices
    if accelerator == "gpu" and count > gpus:
        raise UserError(f"--devices {devices}: only {gpus} CUDA GPU(s) are visible")
    if strategy == "dp":
        check_data_parallel(cuda=accelerator == "gpu")
        return Hardware("gpu", "dp", count)
    if strategy == "ddp" or count > 1 or num_nodes > 1:  # Lightning's "auto" picks DDP for more than one device
        return Hardware(accelerator, "ddp", count)
    return Hardware(accelerator, "single", 1)
