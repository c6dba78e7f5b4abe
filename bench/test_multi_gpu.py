"""DataParallel against DDP, with two CUDA GPUs or more: the same 40-step run (default model, bf16-mixed) with
`--strategy dp` and with `--strategy ddp` over every GPU, in the hand-written trainer (Lightning 2.x has no
DataParallel; the Lightning trainer runs ddp for both). The work is equal: the same global batch (the bench batch
of bench/conftest.py, rounded down to a multiple of the GPU count) and the same 40 optimizer steps, so the same
samples -- DataParallel splits each global batch across the GPUs, DDP gives every process its share as
`--batch-size`. Timed from the outside, whole process: DataParallel's cost is per step (replicating the model
each forward), DDP's is start-up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bench.conftest import BATCH_SIZE, GPUS, REPO, run_args

pytestmark = pytest.mark.skipif(GPUS < 2, reason=f"needs two CUDA GPUs or more; this machine has {GPUS}")
STEPS = 40
GLOBAL_BATCH = BATCH_SIZE // max(GPUS, 1) * max(GPUS, 1)  # every GPU the same share under both strategies


def batch_size_flag(strategy: str) -> int:
    """`--batch-size` means the whole batch to DataParallel (one process) and one process's share to DDP."""
    return GLOBAL_BATCH if strategy == "dp" else GLOBAL_BATCH // GPUS


@pytest.mark.parametrize("strategy", ["dp", "ddp"])
def test_data_parallel_against_ddp(benchmark, bench_data, tmp_path, strategy):
    argv = run_args(bench_data, tmp_path / "run", "small", STEPS, "--strategy", strategy, "--devices", str(GPUS),
                    "--batch-size", str(batch_size_flag(strategy)))  # the later --batch-size wins

    def run():
        result = subprocess.run([sys.executable, "vanilla/train.py", *argv], cwd=REPO, capture_output=True,
                                text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"), timeout=900)
        assert result.returncode == 0, result.stderr[-2000:]

    benchmark.group = (f"DataParallel vs DDP: {STEPS} steps of a global batch of {GLOBAL_BATCH} over {GPUS} GPUs, "
                       f"whole process")
    benchmark.pedantic(run, rounds=2, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update(strategy=strategy, gpus=GPUS, global_batch=GLOBAL_BATCH,
                                batch_size_flag=batch_size_flag(strategy), samples=STEPS * GLOBAL_BATCH)
