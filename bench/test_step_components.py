"""Where a trainer's per-step time goes beyond the floor: the per-step features the bare loop does not have,
each timed alone on the default model with its gradients present (gradient clipping as the trainers call it,
the warm-up scheduler's step, the hand-written progress bar's update)."""

from __future__ import annotations

import io

import pytest
import torch
from transformers import get_constant_schedule_with_warmup

from shared.model import build_model
from shared.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def model_with_gradients():
    tokenizer = train_tokenizer(["Ada Lovelace was born in London in 1815."] * 50, vocab_size=1000)
    model = build_model(tokenizer, size="small", max_positions=256)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    return model


def test_gradient_clipping(benchmark, model_with_gradients):
    parameters = list(model_with_gradients.parameters())
    benchmark.group = "per-step features, timed alone (default model)"
    benchmark(torch.nn.utils.clip_grad_norm_, parameters, 1.0)
    benchmark.extra_info.update(component="gradient clipping (clip_grad_norm_, 1.1 M parameters)")


def test_scheduler_step(benchmark, model_with_gradients):
    optimizer = torch.optim.AdamW(model_with_gradients.parameters(), lr=1e-3)
    scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=100)
    benchmark.group = "per-step features, timed alone (default model)"
    benchmark(scheduler.step)
    benchmark.extra_info.update(component="LR scheduler step")


def test_progress_bar_update(benchmark, monkeypatch):
    from vanilla.progress_bar import ProgressBar

    monkeypatch.setattr("sys.stderr", io.StringIO())  # the bar's output, kept off the benchmark's terminal
    bar = ProgressBar()
    bar.start_epoch(0, total=10**9)
    benchmark.group = "per-step features, timed alone (default model)"
    benchmark(bar.advance, 1.234)
    benchmark.extra_info.update(component="vanilla progress bar update (tqdm)")
