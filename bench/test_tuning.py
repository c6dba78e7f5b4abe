"""Lightning tuned, setting by setting: what each Trainer setting that keeps this job's results (the same
checkpoints, early stopping, metrics files and predictions) saves per step, on the fixed-cost configuration, the
variants in turns of one step in CPU time (bench/step_by_step.py), each against Lightning as configured.

The job logs nothing per step (train_loss is an epoch mean, dev_loss a validation value), so `log_every_n_steps`
changes no file; the progress bar shows what the metrics files hold. Lightning's default bar, a RichProgressBar,
draws in a background thread, which the training thread's CPU time does not see; a TQDMProgressBar draws in the
training thread, so the bar is also timed as a TQDMProgressBar redrawn at every step. Each setting's syncs per step
are counted too (bench/step_counts.py).
"""

from __future__ import annotations

from bench.conftest import quick_or_full
from bench.runners import lightning_trainer
from bench.step_by_step import in_turns, overheads, step_ms
from bench.step_counts import count_syncs
from bench.test_counts import COUNTED, STEPS
from bench.test_fixed_cost import WARMUP, tiny_step_argv


def settings() -> dict[str, dict]:
    """Each variant's Trainer settings over lightning/train.py's (new callbacks for each run)."""
    from pytorch_lightning.callbacks import TQDMProgressBar

    return {"as configured": {},
            "a TQDMProgressBar redrawn every step (in place of the RichProgressBar)":
                {"callbacks": [TQDMProgressBar(refresh_rate=1)]},
            "a TQDMProgressBar redrawn every 20 steps (TQDMProgressBar(refresh_rate=20))":
                {"callbacks": [TQDMProgressBar(refresh_rate=20)]},
            "no progress bar (enable_progress_bar=False)": {"enable_progress_bar": False},
            "no progress bar, log_every_n_steps=1000": {"enable_progress_bar": False, "log_every_n_steps": 1000}}


def test_tuning(benchmark, turns_data, tmp_path, full):
    steps = quick_or_full(full, 300, 800)
    names = list(settings())

    def run(name: str, steps: int = steps):
        argv = tiny_step_argv(turns_data, tmp_path / f"variant{names.index(name)}", steps)
        return lambda log: lightning_trainer(argv, settings()[name], log=log)

    logs = {}
    benchmark.group = f"Lightning's settings, in turns, {steps} steps each"
    benchmark.pedantic(lambda: logs.update(in_turns({name: run(name) for name in names}, steps)), rounds=1,
                       iterations=1, warmup_rounds=0)
    syncs = {name: count_syncs(run(name, STEPS), COUNTED)["total"] for name in names}
    benchmark.extra_info.update(steps=steps - 1 - WARMUP, variants=overheads(logs, "as configured", WARMUP),
                                step_ms=step_ms(logs, WARMUP), syncs=syncs)
    assert all(len(log.step_cpu) == steps - 1 for log in logs.values())
