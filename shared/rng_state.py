"""Every random generator's state, in a form a checkpoint can hold. Neither framework saves it (Fabric's and
Lightning's checkpoints leave it out), and exact resume needs it: dropout masks and shuffles must continue where
they stopped. Under DDP every rank's states go into the checkpoint, gathered to rank 0."""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.distributed as dist


def gather_from_every_rank(obj) -> list:
    """Every rank's `obj`, in rank order (one element in a single process). Fabric and Lightning gather tensors
    only; a rank's RNG states are not one."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def collect_rng_states() -> dict:
    """Python's, NumPy's and torch's (CPU and CUDA) states, as tensors, ints and tuples, which
    `torch.load(weights_only=True)` accepts (NumPy's own state holds an ndarray, which it refuses)."""
    name, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached_gaussian),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, cached_gaussian = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached_gaussian))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
