"""The batch-size search survives an out-of-memory at any point of a training step, under a real GradScaler.

Batches larger than 8 run out of memory at one chosen point -- forward, backward, just after the scaler unscaled
the gradients, gradient clipping, or the optimizer step -- and always after a micro-batch has accumulated
gradients (two micro-batches per step), so that a failed trial has gradients, and between unscale_ and update a
scaler mid-step, to leave behind. The search must still end at the size the algorithm gives, every trial must
start without gradients, and afterwards the run's gradients, scaler and weights must be as before it, ready to
train. On the CPU float16 autocast and `GradScaler("cpu")` stand in for CUDA's 16-mixed.
"""

from __future__ import annotations

import copy
from functools import partial
from types import SimpleNamespace

import pytest
import torch
from lightning_fabric import Fabric
from lightning_fabric.plugins import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader

from shared.model import seq2seq_loss
from tests.conftest import load_train
from vanilla import batch_size_finder
from vanilla.batch_size_finder import search_with_optimization
from vanilla.ddp import ProcessInfo
from vanilla.optimization import Optimization
from vanilla.precision import Precision
from vanilla.strategy import Strategy

POINTS = ("forward", "backward", "unscale", "clip", "step")
LARGEST_THAT_FITS = 8
DATASET_LENGTH = 64
# (mode, starting batch size, sizes tried, result) with out-of-memory above 8 (tests/test_batch_size_finder.py
# checks these sequences against Lightning's): power fails first, then succeeds again; both end on a failure
SEARCHES = [("power", 16, [16, 1, 2, 4, 8, 16], 8), ("binsearch", 4, [4, 4, 8, 16, 12, 10, 9], 7)]


@pytest.fixture(autouse=True)
def no_garbage_collection_between_trials(monkeypatch):
    """The search collects garbage before every trial, a fifth of a second each in a process that has imported
    transformers; these tests measure no memory."""
    monkeypatch.setattr(batch_size_finder, "free_memory", lambda: None)


class Faults:
    """Raises CUDA's out-of-memory error at `point` for batches larger than 8, and notes whether each trial's
    first forward pass found gradients left over."""

    def __init__(self, point: str):
        self.point = point
        self.batch_size = 0
        self.trial_started = False
        self.gradients_at_trial_start: list[bool] = []

    def make_loader(self, batch_size: int) -> DataLoader:  # called once at the start of every trial
        self.trial_started = True
        return DataLoader(examples(), batch_size=batch_size)

    def at(self, point: str) -> None:
        if point == self.point and self.batch_size > LARGEST_THAT_FITS:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class ProbeModel(nn.Module):
    """Two layers; called as the seq2seq model is, `model(input_ids=, attention_mask=, labels=).loss`."""

    def __init__(self, faults: Faults):
        super().__init__()
        self.faults = faults
        self.first, self.second = nn.Linear(4, 8), nn.Linear(8, 1)
        # backward: once the second layer's gradients are in, while the first layer's arrive
        self.first.weight.register_post_accumulate_grad_hook(lambda _parameter: faults.at("backward"))

    def forward(self, input_ids, attention_mask, labels) -> SimpleNamespace:
        faults = self.faults
        faults.batch_size = input_ids.size(0)
        has_gradients = any(p.grad is not None for p in self.parameters())
        if faults.trial_started:
            faults.gradients_at_trial_start.append(has_gradients)
            faults.trial_started = False
        if has_gradients:  # the step's second micro-batch: the first one's gradients are accumulated
            faults.at("forward")
        prediction = self.second(torch.relu(self.first(input_ids * attention_mask))).float()
        return SimpleNamespace(loss=(prediction.squeeze(1) - labels).pow(2).mean())


def examples() -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(DATASET_LENGTH, 4, generator=generator)
    targets = torch.randn(DATASET_LENGTH, generator=generator)
    return [{"input_ids": x, "attention_mask": torch.ones(4), "labels": y}
            for x, y in zip(inputs, targets, strict=True)]


def inject(faults: Faults, optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, monkeypatch) -> None:
    """The faults after unscaling, in clipping and in the optimizer step (forward and backward: ProbeModel)."""
    unscale = scaler.unscale_

    def unscale_then_fail(optimizer):
        unscale(optimizer)
        faults.at("unscale")

    clip = torch.nn.utils.clip_grad_norm_

    def failing_clip(*args, **kwargs):
        faults.at("clip")
        return clip(*args, **kwargs)

    monkeypatch.setattr(scaler, "unscale_", unscale_then_fail)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", failing_clip)
    optimizer.register_step_pre_hook(lambda *_: faults.at("step"))


def vanilla_16_mixed_on_the_cpu(model: nn.Module) -> Optimization:
    precision = Precision("bf16-mixed", "cpu")
    precision.dtype, precision.scaler = torch.float16, torch.amp.GradScaler("cpu")  # 16-mixed, on the CPU
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    strategy = Strategy("single", torch.device("cpu"), ProcessInfo(), partial(seq2seq_loss, model))
    return Optimization(model, optimizer, scheduler, precision, strategy, accumulate_grad_batches=2,
                        gradient_clip_val=1.0)


def assert_left_as_before(model: nn.Module, weights: dict, scaler: torch.amp.GradScaler, scaler_state: dict):
    assert all(p.grad is None for p in model.parameters())
    assert scaler.state_dict() == scaler_state
    assert all(torch.equal(tensor, weights[name]) for name, tensor in model.state_dict().items())


@pytest.mark.parametrize("mode, start, tried, result", SEARCHES)
@pytest.mark.parametrize("point", POINTS)
def test_vanilla_search_survives_out_of_memory_anywhere_in_a_step(point, mode, start, tried, result, monkeypatch):
    faults = Faults(point)
    model = ProbeModel(faults)
    optimization = vanilla_16_mixed_on_the_cpu(model)
    scaler = optimization.precision.scaler
    inject(faults, optimization.optimizer, scaler, monkeypatch)
    weights, scaler_state = copy.deepcopy(model.state_dict()), scaler.state_dict()

    found = search_with_optimization(optimization, faults.make_loader, start, DATASET_LENGTH, mode=mode)

    assert (found.tried, found.batch_size) == (tried, result)
    assert faults.gradients_at_trial_start == [False] * len(tried)
    assert_left_as_before(model, weights, scaler, scaler_state)
    batch = next(iter(DataLoader(examples(), batch_size=LARGEST_THAT_FITS)))
    for batch_idx in range(2):  # the run's first optimizer step: the scaler is not left mid-step
        optimization.training_step(batch, batch_idx, num_batches=2)


@pytest.mark.parametrize("point", POINTS)
def test_fabric_search_survives_out_of_memory_anywhere_in_a_step(point, monkeypatch, capsys):
    fabric_train = load_train("fabric")
    scaler = torch.amp.GradScaler("cpu")
    fabric = Fabric(accelerator="cpu", devices=1, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    faults = Faults(point)
    raw_model = ProbeModel(faults)
    raw_optimizer = torch.optim.AdamW(raw_model.parameters(), lr=1e-2)
    scheduler = torch.optim.lr_scheduler.LambdaLR(raw_optimizer, lambda _step: 1.0)
    inject(faults, raw_optimizer, scaler, monkeypatch)
    model, optimizer = fabric.setup(raw_model, raw_optimizer)
    args = SimpleNamespace(accumulate_grad_batches=2, gradient_clip_val=1.0, batch_size=16, auto_batch_size="power")
    job = fabric_train.Job(fabric, model, raw_model, optimizer, scheduler, args)
    weights, scaler_state = copy.deepcopy(raw_model.state_dict()), scaler.state_dict()

    assert fabric_train.search_batch_size(job, faults.make_loader, DATASET_LENGTH) == 8

    mode, _, tried, _ = SEARCHES[0]
    assert f"batch-size search ({mode}): tried {tried} -> batch size 8" in capsys.readouterr().out
    assert faults.gradients_at_trial_start == [False] * len(tried)
    assert_left_as_before(raw_model, weights, scaler, scaler_state)
    batch = fabric.to_device(next(iter(DataLoader(examples(), batch_size=LARGEST_THAT_FITS))))
    for batch_idx in range(2):  # the run's first optimizer step: the scaler is not left mid-step
        fabric_train.training_step(job, batch, batch_idx, num_batches=2)
