"""First parity check of the Lightning twin (work in progress): the same tiny run through both trainers gives
bit-identical metrics.csv, checkpoints, predictions and test scores on the CPU."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO, tiny_args

pytestmark = pytest.mark.slow
ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def train(trainer: str, args: list[str]) -> None:
    result = subprocess.run([sys.executable, f"{trainer}/train.py", *args], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def test_fit_and_test_are_bit_identical(tiny_data, tmp_path):
    runs = {name: tmp_path / name for name in ("vanilla", "lightning")}
    for name, out in runs.items():
        train(name, tiny_args(tiny_data, out, "--save-top-k", "2"))
    v, pl = runs["vanilla"], runs["lightning"]
    assert (v / "metrics.csv").read_text() == (pl / "metrics.csv").read_text()
    names = sorted(p.name for p in (v / "checkpoints").iterdir())
    assert names == sorted(p.name for p in (pl / "checkpoints").iterdir()) and len(names) == 3
    for name in names:
        a = torch.load(v / "checkpoints" / name, weights_only=True)["state_dict"]
        b = torch.load(pl / "checkpoints" / name, weights_only=False)["state_dict"]
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), (name, key)
    assert (v / "predictions.jsonl").read_text() == (pl / "predictions.jsonl").read_text()
    assert (v / "test_metrics.json").read_text() == (pl / "test_metrics.json").read_text()
