"""Checkpoint save and load in each trainer, on the default (small) model after a few steps: the time to write
one full resumable checkpoint (model, AdamW state, scheduler, callbacks, loop state, RNG) and to read it back
into the run, and its size on disk."""

from __future__ import annotations

import pytest

from bench.conftest import run_args
from bench.runners import lightning_trainers, patched

ROUNDS = 5


@pytest.fixture(scope="module")
def trained(bench_data, tmp_path_factory):
    """Each trainer after a 4-step run, with its objects kept: vanilla's FitLoop, the Fabric trainer's FitLoop,
    Lightning's Trainer."""
    from pytorch_lightning.trainer.states import TrainerFn

    from tests.conftest import load_lightning_train, load_train
    from vanilla import train as vanilla_train
    from vanilla.fit_loop import FitLoop

    kept = {}

    def keep_loop(original):
        def run(self, *args, **kwargs):
            kept["vanilla"] = self
            return original(self, *args, **kwargs)
        return run

    with patched(FitLoop, "run", keep_loop):
        vanilla_train.main(run_args(bench_data, tmp_path_factory.mktemp("vanilla"), "small", 4))

    fabric_train = load_train("fabric")

    def keep_fit(original):
        def fit(self, *args, **kwargs):
            kept["fabric"] = self  # the Fabric trainer's FitLoop
            return original(self, *args, **kwargs)
        return fit

    with patched(fabric_train.FitLoop, "fit", keep_fit):
        fabric_train.main(run_args(bench_data, tmp_path_factory.mktemp("fabric"), "small", 4))

    lightning_train = load_lightning_train()
    with lightning_trainers() as built:
        lightning_train.main(run_args(bench_data, tmp_path_factory.mktemp("lightning"), "small", 4))
    kept["lightning"] = built[0]  # the fit Trainer (a single-device run tests with it too)
    kept["lightning"].state.fn = TrainerFn.FITTING  # restore as a resumed fit would
    return kept


def save(trained, trainer: str, path) -> None:
    if trainer == "vanilla":
        loop = trained["vanilla"]
        loop.save_checkpoint(loop, path)  # dump_checkpoint + atomic_save, as train.py wires it
    elif trainer == "fabric":
        from resume_state import save_checkpoint  # fabric/resume_state.py (on the path once fabric/train.py loaded)

        save_checkpoint(trained["fabric"], path)  # the user's objects, then fabric.save
    else:
        trained["lightning"].save_checkpoint(path, weights_only=False)


def load(trained, trainer: str, path) -> None:
    if trainer == "vanilla":
        from shared.checkpoint_file import read_checkpoint
        from vanilla.checkpoint_connector import restore_checkpoint

        restore_checkpoint(trained["vanilla"], read_checkpoint(path), path, rank=0)
    elif trainer == "fabric":
        from tests.conftest import load_train

        load_train("fabric")  # puts fabric/ on the path for its resume_state module
        from resume_state import read_resume_checkpoint, resume

        loop = trained["fabric"]
        loop.pending_rng = resume(loop, read_resume_checkpoint(path), path)  # fabric.load, as a resumed run does
    else:
        # what Trainer.fit(ckpt_path=...) does before training: read, then restore model, callbacks, loops,
        # optimizer and scheduler (a private entry point, used here to time exactly that part)
        connector = trained["lightning"]._checkpoint_connector
        connector.restore(path, weights_only=True)


@pytest.mark.parametrize("trainer", ["vanilla", "fabric", "lightning"])
def test_checkpoint_save(benchmark, trained, tmp_path, trainer):
    path = tmp_path / "bench.ckpt"
    benchmark.group = "checkpoint save (small model + AdamW state)"
    benchmark.pedantic(save, args=(trained, trainer, path), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(trainer=trainer, size_mb=path.stat().st_size / 2**20)


@pytest.mark.parametrize("trainer", ["vanilla", "fabric", "lightning"])
def test_checkpoint_load(benchmark, trained, tmp_path, trainer):
    path = tmp_path / "bench.ckpt"
    save(trained, trainer, path)
    benchmark.group = "checkpoint load (read + restore into the run)"
    benchmark.pedantic(load, args=(trained, trainer, path), rounds=ROUNDS, iterations=1, warmup_rounds=1)
    benchmark.extra_info.update(trainer=trainer, size_mb=path.stat().st_size / 2**20)
