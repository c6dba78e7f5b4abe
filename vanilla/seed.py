"""Seeding, and running a block without moving any random generator (Lightning: `seed_everything`, `isolate_rng`)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from shared.rng_state import collect_rng_states, restore_rng_states


def seed_everything(seed: int) -> int:
    """Seed Python, NumPy and torch (all devices), as Lightning's `seed_everything` does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return seed


@contextmanager
def isolate_rng() -> Iterator[None]:
    """What the block draws is forgotten afterwards (the sanity check, the batch-size search)."""
    states = collect_rng_states()
    try:
        yield
    finally:
        restore_rng_states(states)
