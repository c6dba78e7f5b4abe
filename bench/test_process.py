"""Benchmarks that need a fresh process: start-up (from process start to the first optimizer step) and peak
memory (the resident set size of the whole run, and `torch.cuda.max_memory_allocated` with CUDA)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from bench.conftest import CUDA, REPO, run_args
from bench.runners import HF_TRAINER_RUNS

ENV = dict(os.environ, PYTHONWARNINGS="ignore")
TRAINERS = ["vanilla", "fabric", "lightning", *(["hf_trainer"] if HF_TRAINER_RUNS else [])]


@pytest.mark.parametrize("trainer", TRAINERS)
def test_startup_to_first_step(benchmark, bench_data, tmp_path, trainer):
    """Imports, data reading and tokenisation, tokenizer training, model build, trainer set-up, sanity check,
    first batch; the interpreter's own start included."""
    argv = run_args(bench_data, tmp_path / "run", "small", 5)
    seconds = []

    def start():
        started = time.time()
        result = subprocess.run([sys.executable, "bench/probe_run.py", "first-step", trainer, *argv], cwd=REPO,
                                env=ENV, capture_output=True, text=True, timeout=300)
        line = next((x for x in result.stdout.splitlines() if x.startswith("FIRST_STEP ")), None)
        assert line, result.stderr[-2000:]
        seconds.append(float(line.split()[1]) - started)

    benchmark.group = "start-up: process start to the first optimizer step"
    benchmark.pedantic(start, rounds=3, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(trainer=trainer, startup_seconds=sorted(seconds)[len(seconds) // 2])


@pytest.mark.parametrize("trainer", TRAINERS)
def test_peak_memory(benchmark, bench_data, tmp_path, trainer):
    """The same run in each trainer: small model, 40 steps, validation, test phase, export; the peak resident
    set of the trainer's process (VmHWM), and the CUDA allocator's peak when there is a GPU."""
    argv = run_args(bench_data, tmp_path / "run", "small", 40)
    peaks = {}

    def run():
        result = subprocess.run([sys.executable, "bench/probe_run.py", "full", trainer, *argv], cwd=REPO, env=ENV,
                                capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        reported = dict(line.split(maxsplit=1) for line in result.stdout.splitlines()
                        if line.startswith(("PEAK_RSS ", "CUDA_PEAK ")))
        peaks["max_rss_mb"] = int(reported["PEAK_RSS"]) / 1024  # kB
        if CUDA and "CUDA_PEAK" in reported:
            peaks["cuda_max_allocated_mb"] = int(reported["CUDA_PEAK"]) / 2**20

    benchmark.group = "peak memory: the same run in each trainer"
    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(trainer=trainer, **peaks)
