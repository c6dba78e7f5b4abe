"""Mixed precision (Lightning: `plugins.precision.MixedPrecision`, `precision="bf16-mixed"|"16-mixed"`).

The forward pass (and the loss) runs under `torch.autocast(device, dtype, cache_enabled=False)`; backward and
the optimiser step run outside it. float16 needs a GradScaler against underflow: the loss is scaled before
backward, gradients are unscaled before clipping, and the scaler skips steps with inf/nan gradients. bfloat16
has float32's range and needs none. float16 autocast is a CUDA feature: on the CPU, as Lightning does, the run
falls back to bf16-mixed and says so.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from shared.devices import precision_for

DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


class Precision:
    def __init__(self, precision: str, device_type: str):
        precision = precision_for(precision, cuda=device_type == "cuda")
        self.precision = precision
        self.device_type = device_type
        self.dtype = DTYPES.get(precision)
        self.scaler = torch.amp.GradScaler(device_type) if precision == "16-mixed" else None

    def forward_context(self):
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype, cache_enabled=False)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def unscale_gradients(self, optimizer: torch.optim.Optimizer) -> None:
        """Before clipping, so the clip threshold applies to the true gradients."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
        else:
            self.scaler.step(optimizer)
            self.scaler.update()

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and "scaler" in state:
            self.scaler.load_state_dict(state["scaler"])
