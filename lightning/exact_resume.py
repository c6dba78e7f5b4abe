"""Exact resume for the Lightning trainer: the part of the job Lightning 2.6 leaves to its user.

`Trainer.fit(ckpt_path=...)` restores weights, optimiser, scheduler, callbacks and loop counters, but neither the
random number generators nor the position inside an epoch (the Lightning tracker's #17543 and #18780): resumed
mid-epoch, a shuffled DataLoader starts a fresh shuffle and dropout draws other masks. Lightning offers the hooks
to add both, and the callbacks below use them (`exact_resume_callbacks` lists them for the Trainer):
- `ExactResume`: every rank's RNG state and partial epoch metrics, and early stopping's decision, in the
  checkpoint (a callback's `state_dict`, which Lightning saves itself), put back where the checkpoint was taken;
  it keeps the train loader's position current (`shared.resumable_loader.ResumableDataLoader`, whose state
  Lightning saves with its loops);
- `StepCheckpoint`: last.ckpt every N optimizer steps, for resuming mid-epoch;
- `KeepLoggedRows`: Lightning's CSVLogger deletes metrics.csv when fit starts; on resume, the rows logged before
  the checkpoint are logged again;
- `StopOnSignal`: Ctrl-C and SIGTERM end the run after the next optimizer step with a resumable last.ckpt
  (Lightning's own SIGTERM handling stops after a batch without saving one, and Ctrl-C stops it wherever it is).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import torch.distributed as dist
from pytorch_lightning import Callback
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.utilities import rank_zero_only
from torchmetrics import Metric

from shared.checkpoint_file import CheckpointError
from shared.errors import Interrupted
from shared.logged_rows import LoggedRows
from shared.rng_state import collect_rng_states, gather_from_every_rank, restore_rng_states


def exact_resume_callbacks(output_dir: Path, checkpoint: ModelCheckpoint, every_n_train_steps: int,
                           resuming: bool) -> list[Callback]:
    step_checkpoint = [StepCheckpoint(checkpoint, every_n_train_steps)] if every_n_train_steps else []
    return [ExactResume(), KeepLoggedRows(output_dir / "metrics.csv", resuming), *step_checkpoint,
            StopOnSignal(checkpoint)]


class ExactResume(Callback):
    """Every rank's RNG states and partial epoch metrics (the module's torchmetrics), saved with each checkpoint;
    restored at once for a checkpoint taken between epochs, or at the first resumed batch for one taken mid-epoch
    (after the resumed epoch's loader drew its order, as the interrupted run's had). It also keeps the train
    loader's count of trained batches current, for the loader's own state."""

    def __init__(self):
        self.batches_trained = 0
        self._trainer = self._module = None
        self._pending: dict | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        self._trainer, self._module = trainer, pl_module

    def _metrics(self) -> dict[str, Metric]:
        return {name: m for name, m in self._module.named_modules() if isinstance(m, Metric)} if self._module else {}

    def state_dict(self) -> dict:
        metrics = {name: {key: value.detach().cpu().clone() for key, value in metric.metric_state.items()}
                   for name, metric in self._metrics().items()} if self.batches_trained else {}
        # Lightning builds the checkpoint on every rank and writes rank 0's: gather what differs between ranks
        ranks = gather_from_every_rank({"rng": collect_rng_states(), "metrics": metrics})
        return {"rng_states": [rank["rng"] for rank in ranks], "metric_states": [rank["metrics"] for rank in ranks],
                "mid_epoch": self.batches_trained > 0,
                "should_stop": bool(self._trainer and self._trainer.should_stop)}  # early stopping had decided

    def load_state_dict(self, state: dict) -> None:
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if len(state["rng_states"]) != world_size:
            raise CheckpointError(f"--resume: the checkpoint was written by {len(state['rng_states'])} process(es); "
                                  f"resume it with the same --devices")
        self._pending = state
        if self._trainer is not None:
            self._trainer.should_stop = state["should_stop"]
        if not state["mid_epoch"]:
            self._restore()

    def _restore(self) -> None:
        state, self._pending = self._pending, None
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        restore_rng_states(state["rng_states"][rank])
        for name, metric in self._metrics().items():
            for key, value in state["metric_states"][rank].get(name, {}).items():
                setattr(metric, key, value.to(metric.device))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._pending is not None:
            self._restore()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # Before any checkpoint of this batch is saved (Lightning calls checkpoint callbacks last).
        done = batch_idx + 1
        self.batches_trained = 0 if done >= trainer.num_training_batches else done
        trainer.train_dataloader.batches_trained = self.batches_trained


class StepCheckpoint(ModelCheckpoint):
    """last.ckpt every N optimizer steps. A second ModelCheckpoint, because the monitoring one given
    `every_n_train_steps` would stop its epoch-end saves; and not after an epoch's last batch: the epoch-end
    checkpoint follows, and Lightning 2.6 resumes a checkpoint taken there into the next epoch without
    validating this one (weights stay exact, metrics.csv would not)."""

    def __init__(self, monitoring: ModelCheckpoint, every_n_train_steps: int):
        super().__init__(dirpath=monitoring.dirpath, save_top_k=0, save_last=True,
                         every_n_train_steps=every_n_train_steps, enable_version_counter=False)
        self.monitoring = monitoring

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if batch_idx + 1 < trainer.num_training_batches:
            # Both write one last.ckpt: the monitoring one, whose state goes into it, must know the file as its own
            # (or it would write last-v1.ckpt beside it after a resume).
            self.monitoring.last_model_path = str(Path(self.dirpath) / "last.ckpt")
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer, pl_module) -> None:
        pass  # a last.ckpt at the end of training is the monitoring ModelCheckpoint's


class KeepLoggedRows(Callback):
    """Lightning's CSVLogger deletes metrics.csv when fit starts. On resume, the rows logged before the checkpoint
    are logged again, those the interrupted run logged after it dropped (`shared.logged_rows`, read when the Trainer
    is built); if fit fails before that (a refused checkpoint, say), the file is put back as it was."""

    def __init__(self, metrics_csv: Path, resuming: bool):
        self.rows = LoggedRows(metrics_csv, is_writer=rank_zero_only.rank == 0) if resuming else None
        self.global_step = 0

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.global_step = checkpoint["global_step"]

    def on_fit_start(self, trainer, pl_module) -> None:  # after the restore; also when no training is left
        logger = next((logger for logger in trainer.loggers if isinstance(logger, CSVLogger)), None)
        if self.rows is not None and logger is not None:
            self.rows.log_again(logger, self.global_step)

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self.rows is not None:
            self.rows.put_back()


class StopOnSignal(Callback):
    """Ctrl-C and SIGTERM only set a flag; at the next batch after which the optimizer stepped, every rank stops
    (the decision is reduced over ranks) after saving last.ckpt. Not after an epoch's last batch: that epoch's
    end and checkpoints come first, and the run stops one step into the next epoch, or once training is over.
    Not Lightning 2.6's OnExceptionCheckpoint: it saves after whichever batch the SIGTERM follows (mid-accumulation
    too), counts rank 0's SIGTERM only, and deletes its file when fit ends."""

    def __init__(self, checkpoint: ModelCheckpoint):
        self.checkpoint = checkpoint
        self.last_checkpoint = str(Path(checkpoint.dirpath) / "last.ckpt")
        self.received: int | None = None
        self._stop_after_fit = False
        self._previous_handlers: dict = {}

    def on_sanity_check_start(self, trainer, pl_module) -> None:
        self._catch_stop_signals()

    def on_train_start(self, trainer, pl_module) -> None:
        self._catch_stop_signals()  # a resumed run has no sanity check

    def _catch_stop_signals(self) -> None:
        """From the sanity check on, after Lightning's own handlers, which it sets up once fit has started:
        replaces them (on SIGTERM under DDP they broadcast from inside the handler, and end the run with status
        0 at the next batch without a checkpoint)."""
        if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) == self._flag:
            return  # handlers can only be set there; or set already, for this fit
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, self._flag)

    def _flag(self, signum, frame) -> None:
        self.received = signum

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _save_if_signalled(self, trainer) -> bool:
        if not trainer.strategy.reduce_boolean_decision(self.received is not None, all=False):
            return False
        self.checkpoint.last_model_path = self.last_checkpoint  # the monitoring ModelCheckpoint's last.ckpt
        trainer.save_checkpoint(self.last_checkpoint)  # on every rank, as Lightning's saves are
        return True

    def _interrupted(self, trainer) -> Interrupted:
        return Interrupted(self.received or signal.SIGTERM, trainer.current_epoch, trainer.global_step,
                           self.last_checkpoint, announce=trainer.is_global_zero)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stepped = (batch_idx + 1) % trainer.accumulate_grad_batches == 0  # gradients are not in checkpoints
        if stepped and batch_idx + 1 < trainer.num_training_batches and self._save_if_signalled(trainer):
            raise self._interrupted(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._restore_handlers()
        self._stop_after_fit = self._save_if_signalled(trainer)  # training is over: resuming goes to the test

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._stop_after_fit:
            raise self._interrupted(trainer)

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._restore_handlers()
