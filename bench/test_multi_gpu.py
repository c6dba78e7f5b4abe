"""DataParallel against DDP, with two CUDA GPUs or more: the same 40-step run (default model, bf16-mixed,
batch per process as in bench/conftest.py) with `--strategy dp` and `--strategy ddp` over every GPU, in the
hand-written trainer (Lightning 2.x has no DataParallel; the twin runs ddp for both). Timed from the outside,
whole process: DataParallel's cost is per step (replicating the model each forward), DDP's is start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.conftest import GPUS, REPO, run_args

pytestmark = pytest.mark.skipif(GPUS < 2, reason=f"needs two CUDA GPUs or more; this machine has {GPUS}")


@pytest.mark.parametrize("strategy", ["dp", "ddp"])
def test_data_parallel_against_ddp(benchmark, bench_data, tmp_path, strategy):
    argv = run_args(bench_data, tmp_path / "run", "small", 40, "--strategy", strategy, "--devices", str(GPUS))

    def run():
        result = subprocess.run([sys.executable, "vanilla/train.py", *argv], cwd=REPO, capture_output=True,
                                text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]

    benchmark.group = f"DataParallel vs DDP: 40 steps over {GPUS} GPUs, whole process"
    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(strategy=strategy, gpus=GPUS)
