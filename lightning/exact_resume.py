"""Exact resume for the Lightning twin: the part of the job Lightning 2.6 leaves to its user.

`Trainer.fit(ckpt_path=...)` restores weights, optimiser, scheduler, callbacks and loop counters, but neither the
random number generators nor the position inside an epoch (the Lightning tracker's #17543 and #18780): resumed
mid-epoch, a plain shuffled DataLoader starts a fresh shuffle and dropout draws different masks. Lightning does
offer the hooks to add both, and this module uses them:
- the train DataLoader has `state_dict`/`load_state_dict`, so Lightning stores its state in every checkpoint and
  hands it back before the resumed epoch's iterator is made; the state is the epoch's shuffle seed and the
  number of batches trained;
- a callback saves every rank's RNG state in `on_save_checkpoint` and puts it back on resume: at once for a
  checkpoint taken between epochs, or at the first resumed batch for one taken mid-epoch (after the resumed
  epoch's iterator drew its seeds, as the interrupted run's had).
The same callback turns Ctrl-C and SIGTERM into such a checkpoint: Lightning's own SIGTERM handling stops the
run after a batch without saving one, and Ctrl-C stops it wherever it is.
"""

from __future__ import annotations

import itertools
import signal
import threading

import numpy as np
import torch
import torch.distributed as dist
from lightning_fabric.utilities.seed import _collect_rng_states, _set_rng_states
from pytorch_lightning import Callback
from pytorch_lightning.trainer.states import TrainerFn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler


class ReplayableRandomSampler(RandomSampler):
    """RandomSampler, which draws each epoch's seed from the global generator, remembering that seed so an
    epoch's order can be replayed from any sample."""

    def __init__(self, data_source):
        super().__init__(data_source)
        self.seed: int | None = None
        self._replay: tuple[int, int] | None = None

    def replay(self, seed: int, start: int) -> None:
        self._replay = (seed, start)

    def __iter__(self):
        if self._replay is not None:
            (self.seed, start), self._replay = self._replay, None
        else:  # the draw RandomSampler makes itself when it has no generator
            self.seed, start = int(torch.empty((), dtype=torch.int64).random_().item()), 0
        self.generator = torch.Generator().manual_seed(self.seed)
        yield from itertools.islice(super().__iter__(), start, None)


class ReplayableDistributedSampler(DistributedSampler):
    """DistributedSampler (its order is fixed by seed and epoch) that can start an epoch part-way."""

    _start = 0

    def replay(self, seed: int, start: int) -> None:
        self._start = start

    def __iter__(self):
        start, self._start = self._start, 0
        return itertools.islice(super().__iter__(), start, None)


class ResumableDataLoader(DataLoader):
    """The train loader. Lightning finds `state_dict`/`load_state_dict` on it, saves the state in checkpoints and
    loads it on resume; `ExactResume` keeps `batches_trained` current (0 once an epoch's batches are done)."""

    batches_trained = 0

    def state_dict(self) -> dict:
        return {"seed": self.sampler.seed, "batches_trained": self.batches_trained}

    def load_state_dict(self, state: dict) -> None:
        self.batches_trained = state["batches_trained"]
        if self.batches_trained:
            self.sampler.replay(state["seed"], self.batches_trained * self.batch_size)


def _rng_states() -> dict:
    states = _collect_rng_states()
    name, keys, *rest = states["numpy"]  # an ndarray, which torch.load(weights_only=True) refuses
    states["numpy"] = (name, torch.from_numpy(keys.astype(np.int64)), *rest)
    return states


def _set_states(states: dict) -> None:
    name, keys, *rest = states["numpy"]
    _set_rng_states({**states, "numpy": (name, keys.numpy().astype(np.uint32), *rest)})


class Interrupted(Exception):
    """Training stopped on a signal, after saving a resumable checkpoint."""

    def __init__(self, signum: int, epoch: int, step: int, path: str):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name} at epoch {epoch}, step {step}: saved {path}; "
                         f"continue with --resume last")


class ExactResume(Callback):
    def __init__(self, last_checkpoint: str):
        self.last_checkpoint = last_checkpoint  # where an interrupted run leaves its resumable checkpoint
        self.signal_received: int | None = None
        self._pending_rng: dict | None = None
        self._previous_handlers: dict = {}

    def on_train_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():  # after Lightning's own handlers: replaces them
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous_handlers[signum] = signal.getsignal(signum)
                signal.signal(signum, lambda signum, frame: setattr(self, "signal_received", signum))

    def on_train_end(self, trainer, pl_module) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def on_exception(self, trainer, pl_module, exception) -> None:
        self.on_train_end(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Runs before any checkpoint of this batch is saved (Lightning calls checkpoint callbacks last).
        done = batch_idx + 1
        trainer.train_dataloader.batches_trained = 0 if done >= trainer.num_training_batches else done
        # A signal stops the run here, at a batch boundary, but not after an epoch's last batch: its end and
        # its checkpoints come first, and the stop happens one batch into the next epoch (or after fit).
        if done < trainer.num_training_batches and trainer.strategy.reduce_boolean_decision(
                self.signal_received is not None, all=False):
            trainer.save_checkpoint(self.last_checkpoint)  # on every rank, as Lightning's saves are
            raise Interrupted(self.signal_received or signal.SIGTERM, trainer.current_epoch, trainer.global_step,
                              self.last_checkpoint)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        states = [_rng_states()]  # Lightning builds a checkpoint on every rank; rank 0 writes it
        if dist.is_available() and dist.is_initialized():
            states = [None] * dist.get_world_size()
            dist.all_gather_object(states, _rng_states())
        loader = trainer.train_dataloader
        checkpoint["rng_states"] = states
        checkpoint["mid_epoch"] = bool(getattr(loader, "batches_trained", 0))

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        if trainer.state.fn != TrainerFn.FITTING or "rng_states" not in checkpoint:
            return
        states = checkpoint["rng_states"][trainer.global_rank]
        if checkpoint["mid_epoch"]:
            self._pending_rng = states
        else:
            _set_states(states)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending_rng is not None:
            _set_states(self._pending_rng)
            self._pending_rng = None
