"""Seeding and RNG state: Lightning's `seed_everything`, `isolate_rng` and the RNG part of its checkpoints
(which Lightning itself does not save; exact resume needs it)."""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch


# feature: wiring
def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch (all devices), as Lightning's `seed_everything` does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


# feature: checkpointing + resume
def collect_rng_states() -> dict:
    """Every generator's state, in a form `torch.load(weights_only=True)` accepts (tensors, ints, tuples)."""
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


# feature: loop
@contextmanager
def isolate_rng() -> Iterator[None]:
    """Run a block without moving any generator: what it draws is forgotten afterwards."""
    states = collect_rng_states()
    try:
        yield
    finally:
        restore_rng_states(states)
