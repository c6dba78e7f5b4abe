"""What the hardware flags mean, the same in every trainer: which devices and precision a run gets, and whether it
runs DDP (Lightning's choices where it makes them; the same refusals where it would fail or fall back)."""

from __future__ import annotations

import torch

from shared.errors import UserError


def precision_for(precision: str, cuda: bool) -> str:
    """16-mixed (float16 with a GradScaler) is a CUDA feature: on the CPU every trainer runs bf16-mixed instead, as
    Lightning does, and says so in one line (Lightning's own warning spans several)."""
    if precision == "16-mixed" and not cuda:
        print("notice: --precision 16-mixed needs CUDA; using bf16-mixed on the CPU, as Lightning does")
        return "bf16-mixed"
    return precision


def check_data_parallel(cuda: bool) -> None:
    """`--strategy dp` (the seed's `accelerator='dp'`) means torch.nn.DataParallel over CUDA GPUs, in every trainer."""
    if not cuda:
        raise UserError("--strategy dp: torch.nn.DataParallel replicates the model over CUDA GPUs, and none is in use "
                        "(use --strategy ddp for several CPU processes)")


def check_devices(devices: int, cuda: bool) -> None:
    """`--devices -1` means every CUDA GPU, as in Lightning, whose CPU accelerator refuses it: the same in every
    trainer."""
    if devices == -1 and not cuda:
        raise UserError("--devices -1: means every CUDA GPU, and none is in use; on the CPU give a number of "
                        "processes (--devices 2 --strategy ddp)")


def processes_per_node(args, cuda: bool) -> int:
    """How many processes each node runs: one for DataParallel, else one per device (-1: every visible GPU)."""
    if args.strategy == "dp":
        return 1
    return (torch.cuda.device_count() if cuda else 1) if args.devices == -1 else args.devices


def runs_ddp(args, cuda: bool = False) -> bool:
    """The run is DDP: asked for, or Lightning's "auto" choice for more than one device or node."""
    return args.strategy == "ddp" or (args.strategy == "auto"
                                      and (processes_per_node(args, cuda) > 1 or args.num_nodes > 1))
