"""Run vanilla/, fabric/, lightning/ or hf_trainer/train.py in this process for the subprocess benchmarks.

    python bench/probe_run.py first-step TRAINER ARGS...   prints FIRST_STEP <unix time> after the first
                                                           optimizer step, then exits at once
    python bench/probe_run.py full TRAINER ARGS...         runs to the end, then prints PEAK_RSS <kB> (this
                                                           process's VmHWM) and CUDA_PEAK <bytes> with CUDA
"""

import importlib.util
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[0] = str(REPO)
MODE, TRAINER, ARGV = sys.argv[1], sys.argv[2], sys.argv[3:]


def first_step_reached() -> None:
    print(f"FIRST_STEP {time.time():.6f}", flush=True)
    os._exit(0)


if TRAINER == "vanilla":
    from vanilla import train
    from vanilla.fit_loop import FitLoop

    original = FitLoop.training_step

    def training_step(self, *args, **kwargs):
        loss = original(self, *args, **kwargs)
        if self.position.global_step:
            first_step_reached()
        return loss

    if MODE == "first-step":
        FitLoop.training_step = training_step
else:
    spec = importlib.util.spec_from_file_location(f"{TRAINER}_train", REPO / TRAINER / "train.py")
    train = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    if MODE == "first-step" and TRAINER == "lightning":
        train.QGModule.on_train_batch_end = lambda self, *args: first_step_reached()
    elif MODE == "first-step" and TRAINER == "hf_trainer":
        from transformers import TrainerCallback

        class FirstStep(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):  # after the optimizer step
                first_step_reached()

        class Probed(train.QGTrainer):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.add_callback(FirstStep())

        train.QGTrainer = Probed
    elif MODE == "first-step":
        original = train.training_step

        def fabric_training_step(*args, **kwargs):
            loss, stepped = original(*args, **kwargs)
            if stepped:
                first_step_reached()
            return loss, stepped

        train.training_step = fabric_training_step

train.main(ARGV)
if MODE == "full":
    import torch

    # VmHWM, not getrusage: ru_maxrss survives exec, so it would report the benchmark process it was forked from
    status = Path("/proc/self/status").read_text()
    print(f"PEAK_RSS {next(line.split()[1] for line in status.splitlines() if line.startswith('VmHWM:'))}")
    if torch.cuda.is_available():
        print(f"CUDA_PEAK {torch.cuda.max_memory_allocated()}", flush=True)
