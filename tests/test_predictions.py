"""The test phase's shares under DDP (shared/predictions.py): whole batches of the one-process loader, dealt in
turn, and put back in order."""

from __future__ import annotations

import itertools

from shared.predictions import in_test_order, share_of_test_set


def batches_of(indices: list[int], batch_size: int) -> list[list[int]]:
    """What an unshuffled DataLoader with this batch size yields over `indices`."""
    return [indices[start:start + batch_size] for start in range(0, len(indices), batch_size)]


def test_every_share_is_whole_one_process_batches_and_gathering_restores_the_order():
    for examples, batch_size, world_size in itertools.product(range(0, 30), range(1, 7), range(1, 6)):
        one_process = batches_of(list(range(examples)), batch_size)
        shares = [batches_of(share_of_test_set(examples, batch_size, rank, world_size), batch_size)
                  for rank in range(world_size)]
        for rank, share in enumerate(shares):  # rank r: the batches r, r + W, r + 2W, ... of one process
            assert share == one_process[rank::world_size], (examples, batch_size, world_size, rank)
        generated = [[[f"q{i}" for i in batch] for batch in share] for share in shares]
        assert in_test_order(generated) == [f"q{i}" for i in range(examples)]


def test_ranks_finish_within_one_batch_of_each_other_and_may_have_none():
    counts = [len(batches_of(share_of_test_set(25, 6, rank, 2), 6)) for rank in range(2)]
    assert counts == [3, 2]
    assert share_of_test_set(25, 32, 1, 2) == []  # one batch for two ranks: rank 1 has nothing to test
