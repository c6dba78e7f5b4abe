"""Early stopping against its specification, and against Lightning's own EarlyStopping on the same values."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_lightning.callbacks import EarlyStopping as LightningEarlyStopping

from vanilla.early_stopping import EarlyStopping


def run(values, patience=2, min_delta=0.0):
    stopper = EarlyStopping(patience=patience, min_delta=min_delta)
    for epoch, value in enumerate(values):
        stop, _ = stopper.check(torch.tensor(value, dtype=torch.float32), epoch)
        if stop:
            return epoch, stopper
    return None, stopper


def test_counts_epochs_without_improvement_and_stops_at_patience():
    epoch, stopper = run([3.0, 2.0, 2.5, 2.4], patience=2)
    assert epoch == 3 and stopper.wait_count == 2 and stopper.best_score.item() == 2.0
    assert stopper.stopped_epoch == 3


def test_improvement_resets_the_count():
    epoch, stopper = run([3.0, 3.1, 2.9, 3.0, 2.8, 2.9], patience=2)
    assert epoch is None and stopper.wait_count == 1


def test_improvement_is_strict_and_needs_more_than_min_delta():
    # equal is not better
    assert run([2.0, 2.0, 2.0], patience=2)[0] == 2
    # 2.0 -> 1.95 improves by 0.05, not more than min_delta 0.1: counts as no improvement
    epoch, stopper = run([2.0, 1.95, 1.92], patience=2, min_delta=0.1)
    assert epoch == 2 and stopper.best_score.item() == 2.0
    epoch, stopper = run([2.0, 1.85], patience=1, min_delta=0.1)
    assert epoch is None and stopper.best_score.item() == pytest.approx(1.85)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_stops_at_once(bad):
    epoch, stopper = run([2.0, bad], patience=5)
    assert epoch == 1 and "not finite" in stopper.stopping_reason_message


def test_state_round_trips():
    _, stopper = run([3.0, 2.0, 2.5], patience=3)
    restored = EarlyStopping(patience=3)
    restored.load_state_dict(stopper.state_dict())
    assert restored.state_dict() == stopper.state_dict()


@pytest.mark.parametrize("values, patience, min_delta", [
    ([3.0, 2.0, 2.5, 2.4, 1.0], 2, 0.0),
    ([1.0, 0.99999994, 0.9999999, 0.99], 1, 0.0),
    ([2.0, 1.9, 1.85, 1.84, 1.7, 1.69], 2, 0.05),
    ([5.0, 4.0, 4.0 - 0.1, 3.9 - 0.1], 1, 0.1),  # values sitting on the min_delta boundary in float32
    ([2.0, math.nan], 3, 0.0),
])
def test_same_decisions_as_lightning(values, patience, min_delta):
    mine = EarlyStopping(patience=patience, min_delta=min_delta)
    theirs = LightningEarlyStopping(monitor="dev_loss", patience=patience, min_delta=min_delta, mode="min")
    for epoch, value in enumerate(values):
        current = torch.tensor(value, dtype=torch.float32)
        my_stop, _ = mine.check(current, epoch)
        their_stop, _ = theirs._evaluate_stopping_criteria(current)
        assert my_stop == their_stop, (epoch, value)
        assert mine.wait_count == theirs.wait_count
        assert torch.equal(mine.best_score, theirs.best_score)
        if my_stop:
            break
