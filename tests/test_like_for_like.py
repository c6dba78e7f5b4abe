"""The benchmark's variants do the same arithmetic (bench/runners.py): the same model, data order, AdamW, warm-up
schedule and gradient clipping, so that after the same steps on the same command line every variant's weights
equal the hand-written trainer's, bit for bit. Controls show the check can fail: the bare loop at another peak
learning rate, or without gradient clipping, ends elsewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from bench.runners import (
    HF_TRAINER_RUNS,
    bare_loop,
    fabric_trainer,
    hf_trainer,
    lightning_barebones,
    lightning_defaults,
    lightning_trainer,
    tuned_settings,
    vanilla_trainer,
)
from bench.step_by_step import one_intra_op_thread
from bench.test_fixed_cost import tiny_step_argv
from shared.cli import parse_args

pytestmark = pytest.mark.slow

STEPS = 6
REFERENCE = "vanilla"
RUNS = {  # variant -> run(argv): the trained model's weights after STEPS steps
    "vanilla": lambda argv: vanilla_trainer(argv).weights(),
    "bare loop": lambda argv: bare_loop(parse_args("bench", "unused", argv), STEPS).weights(),
    "fabric": lambda argv: fabric_trainer(argv).weights(),
    "lightning (barebones)": lambda argv: lightning_barebones(parse_args("bench", "unused", argv), STEPS).weights(),
    "lightning (as configured)": lambda argv: lightning_trainer(argv).weights(),
    "lightning (tuned)": lambda argv: lightning_trainer(argv, tuned_settings()).weights(),
    "lightning (defaults)": lambda argv: lightning_defaults(parse_args("bench", "unused", argv), STEPS).weights(),
    **({"hf_trainer": lambda argv: hf_trainer(argv).weights()} if HF_TRAINER_RUNS else {}),
}
OTHERS = [variant for variant in RUNS if variant != REFERENCE]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """As in the benchmark's runs in turns: with two threads on a machine whose cores are busy elsewhere, a run takes
    some 30 times as long."""
    with one_intra_op_thread():
        yield


@pytest.fixture(scope="module")
def data(tiny_data) -> Path:
    return tiny_data  # tests/conftest.py's


def argv(data: Path, directory: Path, *extra: str) -> list[str]:
    return [*tiny_step_argv(data, directory, STEPS), *extra]


@pytest.fixture(scope="module")
def final_weights(data, tmp_path_factory) -> dict[str, dict[str, torch.Tensor]]:
    """Each variant run once, one after the other, each in a directory of its own."""
    root = tmp_path_factory.mktemp("like-for-like")
    return {variant: run(argv(data, root / re.sub(r"\W+", "_", variant).strip("_"))) for variant, run in RUNS.items()}


def differences(weights: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> dict[str, float]:
    """The tensors that are not equal to the reference's, with their largest absolute difference."""
    return {name: (tensor.double() - reference[name].double()).abs().max().item()
            for name, tensor in weights.items() if not torch.equal(tensor, reference[name])}


@pytest.mark.parametrize("variant", OTHERS)
def test_same_weights_as_the_hand_written_trainer(final_weights, variant):
    weights, reference = final_weights[variant], final_weights[REFERENCE]
    assert weights.keys() == reference.keys()
    assert all(weights[name].dtype == reference[name].dtype for name in reference)
    found = differences(weights, reference)
    assert not found, f"{variant} vs {REFERENCE}, largest absolute difference per tensor that differs: {found}"


CONTROLS = {  # a change to the bare loop's arithmetic -> its command line's extra flags
    "twice the peak learning rate": ("--lr", str(2 * parse_args("bench", "unused", []).lr)),
    "no gradient clipping": ("--gradient-clip-val", "0"),  # clipping binds here: a variant that skipped it differs
}


@pytest.mark.parametrize("control", CONTROLS)
def test_the_check_can_fail(data, final_weights, tmp_path, control):
    """The bare loop with its arithmetic changed ends elsewhere than the trainer: the comparison can tell."""
    weights = bare_loop(parse_args("bench", "unused", argv(data, tmp_path, *CONTROLS[control])), STEPS).weights()
    assert weights.keys() == final_weights[REFERENCE].keys()
    found = differences(weights, final_weights[REFERENCE])
    assert found and max(found.values()) > 0, f"the bare loop with {control} ends where {REFERENCE} does"
