"""Settings shared by the benchmarks: the data, the machine, the command line of a measured run, quick or full.

`pytest bench --benchmark-only` takes the quick rounds (about 6 minutes on 2 CPU cores: every figure of the report,
with wider intervals, printed at the end of the run); `--bench-full` (what `make bench` runs, about 30 minutes) the
full rounds the report is written from.

On the CPU: the default model (`--model-size small`, batch 32, float32) and the tiny one. With a CUDA GPU the
same benchmarks run there, in bf16-mixed with a larger batch (and DataParallel against DDP with two GPUs or
more). Every benchmark stores its derived numbers (ms per step, samples/s, ...) in `extra_info`;
`bench/report.py` turns the JSON of a run into bench/results.md and the chart.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import pytest
import torch

from bench import report
from shared.synthetic import write_synthetic_squad

REPO = Path(__file__).resolve().parents[1]  # pytest puts it on sys.path (pyproject.toml: pythonpath)

CUDA = torch.cuda.is_available()
GPUS = torch.cuda.device_count() if CUDA else 0
BATCH_SIZE = 128 if CUDA else 32
PRECISION = "bf16-mixed" if CUDA else "32-true"


def machine() -> str:
    if CUDA:
        return f"{GPUS} x {torch.cuda.get_device_name(0)}, {PRECISION}, batch {BATCH_SIZE}"
    cpu = platform.processor() or platform.machine()
    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU, float32, batch {BATCH_SIZE}"


def pytest_addoption(parser):
    parser.addoption("--bench-full", action="store_true",
                     help="the full rounds (make bench): narrower intervals, about 30 minutes on 2 CPU cores")


@pytest.fixture(scope="session")
def full(request) -> bool:
    """Whether this run takes the full rounds (--bench-full) or the quick ones."""
    return request.config.getoption("--bench-full")


def rounds(config) -> str:
    """"full" with --bench-full, else "quick"."""
    return "full" if config.getoption("--bench-full") else "quick"


def quick_or_full(full: bool, quick, full_value):
    return full_value if full else quick


@pytest.fixture(scope="session")
def turns_data(tmp_path_factory) -> Path:
    """For the runs in turns (bench/step_by_step.py): the training set of bench_data, a 16-question dev set and 4
    test questions (their validation and test phases are not timed)."""
    directory = tmp_path_factory.mktemp("turns-data")
    write_synthetic_squad(directory, seed=1234, sizes={"train": 5000, "dev": 16, "test": 4})
    return directory


@pytest.fixture(scope="session")
def bench_data(tmp_path_factory) -> Path:
    """The default corpus's size for training (5,000 questions), a 256-question dev set, 8 test questions."""
    directory = tmp_path_factory.mktemp("bench-data")
    write_synthetic_squad(directory, seed=1234, sizes={"train": 5000, "dev": 256, "test": 8})
    return directory


def run_args(data: Path, output_dir: Path, model_size: str, steps: int, *extra: str) -> list[str]:
    """One epoch of `steps` batches, then validation on the dev set and a short test phase."""
    return ["--data-dir", str(data), "--output-dir", str(output_dir), "--overwrite", "--model-size", model_size,
            "--batch-size", str(BATCH_SIZE), "--precision", PRECISION, "--max-epochs", "1",
            "--limit-train-batches", str(steps), "--num-beams", "1", *extra]


@pytest.hookimpl(trylast=True)  # after pytest-benchmark's own tables: the answer is the last thing on the screen
def pytest_terminal_summary(terminalreporter, config):
    """The report's headline figures from this run (bench/report.py `headline`), quick rounds or full."""
    session = getattr(config, "_benchmarksession", None)
    benchmarks = [bench.as_dict(include_data=False) for bench in session.benchmarks] if session else []
    try:
        lines = report.headline(benchmarks)
    except Exception as error:  # a report that cannot be written says so in a line, after the run's own results
        terminalreporter.write_line(f"headline figures: not written ({type(error).__name__}: {error})")
        return
    if lines:
        terminalreporter.write_sep("=", f"headline figures ({rounds(config)} rounds, {machine()}); the whole report: "
                                        "make bench")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_benchmark_update_json(config, benchmarks, output_json):
    output_json["machine_summary"] = machine()
    output_json["rounds"] = rounds(config)
