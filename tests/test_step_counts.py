"""bench/step_counts.py: the sync counter sees each conversion of a tensor to a Python value once, by kind and by
the line making it, tells the ones that stay on the host apart, counts only while asked and only in its own
thread, and puts torch back as it was; the call counter counts Python calls by where their code lives; both give
the same tables when a trainer runs the same steps twice; and the transformers Trainer's syncs are listed by the
code that makes them, its own among them."""

from __future__ import annotations

import re
import threading
from collections import Counter
from pathlib import Path

import accelerate
import pytest
import torch
import transformers

from bench.runners import HF_TRAINER_RUNS, WARMUP_STEPS, hf_trainer, lightning_trainer, vanilla_trainer
from bench.step_by_step import one_intra_op_thread
from bench.step_counts import SYNC_METHODS, CallCounter, SyncCounter, call_area, count_calls, count_syncs
from bench.test_fixed_cost import tiny_step_argv

HERE = "tests/test_step_counts.py"  # as the tables show this file (from the repository root)

CONVERSIONS = {  # kind -> a conversion of a CPU tensor, each on a line of its own
    "bool()": lambda t: bool(t > 0),
    "item()": lambda t: t.item(),
    "float()": lambda t: float(t),
    "format()": lambda t: f"{t:.2f}",
    "tolist()": lambda t: t.tolist(),
    "cpu()": lambda t: t.cpu(),
}


def made_at(function) -> str:
    """Where the counter says a conversion in `function` (a one-line lambda of this file) was made."""
    return f"{HERE}:{function.__code__.co_firstlineno} ({function.__name__})"


@pytest.mark.parametrize("kind", CONVERSIONS)
def test_each_conversion_counts_once_where_it_is_made(kind):
    convert = CONVERSIONS[kind]
    counter = SyncCounter()
    with counter.installed():
        counter.counting = True
        convert(torch.tensor(1.5))
        counter.counting = False
    assert counter.syncs == Counter({(kind, made_at(convert)): 1})
    assert not counter.host_side


def test_a_conversion_of_a_host_copy_is_no_sync():
    to_host, convert = CONVERSIONS["cpu()"], CONVERSIONS["item()"]
    counter = SyncCounter()
    with counter.installed():
        counter.counting = True
        assert convert(to_host(torch.tensor(2.0))) == 2.0
        counter.counting = False
    assert counter.syncs == Counter({("cpu()", made_at(to_host)): 1})
    assert counter.host_side == Counter({("item()", f"{made_at(convert)}: a copy on the host already"): 1})


def test_nothing_counted_unless_counting_or_from_another_thread():
    tensor = torch.tensor(3.0)
    counter = SyncCounter()
    with counter.installed():
        for convert in CONVERSIONS.values():  # counting is off
            convert(tensor)
        counter.counting = True
        converted = []
        other = threading.Thread(target=lambda: converted.extend(convert(tensor) for convert in CONVERSIONS.values()))
        other.start()
        other.join()
        counter.counting = False
    assert len(converted) == len(CONVERSIONS)  # the other thread made every conversion
    assert not counter.syncs and not counter.host_side


def test_torch_restored_after_counting():
    originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
    counter = SyncCounter()
    with counter.installed():
        assert all(getattr(torch.Tensor, name) is not original for name, original in originals.items())
    assert all(getattr(torch.Tensor, name) is original for name, original in originals.items())
    with pytest.raises(RuntimeError), counter.installed():  # also when the counted code fails
        raise RuntimeError("counted code failed")
    assert all(getattr(torch.Tensor, name) is original for name, original in originals.items())
    assert torch.tensor(4.0).item() == 4.0


def test_the_optimizers_step_counter_stays_on_the_host():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model(torch.randn(5, 3)).sum().backward()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=False)  # the single-tensor path
    counter = SyncCounter()
    with counter.installed():
        counter.counting = True
        optimizer.step()
        counter.counting = False
    assert not counter.syncs
    assert counter.host_side  # one step counter per parameter
    assert sum(counter.host_side.values()) == len(list(model.parameters()))
    for kind, code in counter.host_side:
        assert kind == "item()" and code.startswith(f"{HERE}:") and "the optimizer's step counter" in code


def _first() -> int:
    return 1


def _second() -> int:
    return 2


def _calls_two_others() -> int:
    return _first() + _second()


def test_call_counter_counts_python_calls_by_area():
    def calls(work) -> Counter:
        counter = CallCounter()
        counter.counting = True
        work()
        counter.counting = False
        assert not counter.counting
        return counter.counts

    without = calls(int)  # a C function: not counted
    with_it = calls(_calls_two_others)
    assert with_it[HERE] - without[HERE] == 3  # the function and the two it calls
    assert with_it.total() - without.total() == 3  # and nothing elsewhere
    assert without[HERE] == 0 and without["bench/step_counts.py"] > 0  # the counter's own switch-off is counted


# ---------------------------------------------------------------- the same steps twice give the same counts

COUNTED = 10
STEPS = WARMUP_STEPS + COUNTED + 1  # the counted steps end at the next batch's arrival


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """As in the benchmark's runs in turns: with two threads on a machine whose cores are busy elsewhere, a run takes
    some 30 times as long."""
    with one_intra_op_thread():
        yield


@pytest.fixture(scope="module")
def data(tiny_data) -> Path:
    return tiny_data  # tests/conftest.py's


TRAINERS = {"vanilla": lambda argv, log: vanilla_trainer(argv, log=log),
            "lightning (as configured)": lambda argv, log: lightning_trainer(argv, log=log),
            "hf_trainer": lambda argv, log: hf_trainer(argv, log=log)}


CPU_ONLY = pytest.mark.skipif(not HF_TRAINER_RUNS, reason="hf_trainer/train.py does not run on a GPU yet")


@pytest.mark.slow
@pytest.mark.parametrize("trainer", [pytest.param(name, marks=CPU_ONLY) if name == "hf_trainer" else name
                                     for name in TRAINERS])
def test_counts_are_the_same_twice(data, tmp_path, trainer):
    runs = iter(range(4))

    def run(log):  # each run in a directory of its own
        return TRAINERS[trainer](tiny_step_argv(data, tmp_path / f"run{next(runs)}", STEPS), log)

    syncs, calls = count_syncs(run, COUNTED), count_calls(run, COUNTED)
    assert count_syncs(run, COUNTED) == syncs
    assert count_calls(run, COUNTED) == calls
    assert syncs["total"] > 0 and calls["total"] > 0


def by_file_and_function(by_code: dict[str, float]) -> dict[tuple[str, str, str], float]:
    """`{"bool() at path:line (function)": n}` as {(kind, path, function): n}: the lines left out (they move with
    every release of the library that holds them)."""
    found: dict[tuple[str, str, str], float] = {}
    for entry, n in by_code.items():
        kind, code = entry.split(" at ", 1)
        path, function = re.fullmatch(r"(.+):\d+ \((\w+)\)", code).groups()
        found[(kind, path, function)] = found.get((kind, path, function), 0.0) + n
    return found


MODEL_SYNCS = {  # the model's own, in every rung (bench/results.md): the attention masks checked in the forward pass
    ("bool()", "transformers/masking_utils.py", "_ignore_causal_mask_sdpa"): 1.0,
    ("bool()", "transformers/masking_utils.py", "_ignore_bidirectional_mask_sdpa"): 2.0,
}


@pytest.mark.slow
@CPU_ONLY
def test_the_transformers_trainers_syncs_are_listed_by_source(data, tmp_path):
    """hf_trainer's syncs per step, each by the code that makes it: the model's; torchmetrics' NaN check of the loss
    QGTrainer adds to the epoch's train_loss metric (two `bool()`, as in Lightning's module); and the Trainer's own,
    `torch.isnan(loss) or torch.isinf(loss)` in its epoch loop before it adds the step's loss to its running sum
    (`logging_nan_inf_filter`, on by default, made with logging off too): two `bool()`. No `.item()`: with logging
    off it reads neither the loss nor the gradient norm. The optimizer's step counters, read through accelerate's
    optimizer wrapper, stay on the host."""
    syncs = count_syncs(lambda log: hf_trainer(tiny_step_argv(data, tmp_path / "run", STEPS), log), COUNTED)
    assert by_file_and_function(syncs["by_code"]) == {
        **MODEL_SYNCS,
        ("bool()", "torchmetrics/aggregation.py", "_cast_and_nan_check_input"): 2.0,
        ("bool()", "transformers/trainer.py", "_run_epoch"): 2.0,
    }
    assert syncs["by_kind"] == {"bool()": 7.0} and syncs["total"] == 7.0
    assert syncs["host_side"] and all(
        code.startswith("item() at accelerate/optimizer.py:") and code.endswith("(step): the optimizer's step counter, "
                                                                                "kept on the CPU")
        for code in syncs["host_side"])


def test_transformers_and_accelerate_calls_count_apart_from_the_rest():
    """The Trainer's own code (transformers/trainer*.py, accelerate) is an area of its own, apart from the model's
    (transformers/models, in every rung) and from the standard library."""
    transformers_dir = Path(transformers.__file__).parent
    assert call_area(str(transformers_dir / "trainer.py")) == "transformers/trainer.py"
    assert call_area(str(transformers_dir / "models" / "bart" / "modeling_bart.py")) == "transformers/models"
    assert call_area(str(Path(accelerate.__file__).parent / "utils" / "operations.py")) == "accelerate/utils"
    assert call_area(torch.__file__) == "torch"
    assert call_area(threading.__file__) == "other (standard library, ...)"
    assert call_area(str(Path(__file__).resolve())) == HERE
