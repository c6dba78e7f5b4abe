"""The training loop itself (Lightning: `Trainer.fit` and its fit / epoch / validation loops).

Epochs of train-then-validate, written to consume random numbers in the same order as Lightning 2.6, so that
the trainers end with identical weights on the CPU:
- the train DataLoader is built once and iterated each epoch; its shuffle draws a seed from the global torch
  generator when the epoch starts (and every DataLoader iterator draws one more for its workers' base seed);
- the sanity check (two validation batches before the first epoch) runs inside `isolate_rng`;
- training under `model.train()`, validation under `model.eval()` and `torch.inference_mode()`;
- epoch values are batch-size-weighted means, accumulated in float32 (`sum(loss * batch_size) / sum(batch_size)`);
- an optimizer step every `accumulate_grad_batches` batches and at the end of the epoch (`optimization.py`);
- after validation: log, early stopping, then checkpoints (Lightning runs checkpoint callbacks last).
Where the loop stands is its `state_dict` (saved in every checkpoint): a resumed run continues the same batches
and random numbers. Ctrl-C or SIGTERM during training ends the run at the next batch boundary with such a
checkpoint (last.ckpt), so that --resume last continues it.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, DistributedSampler

from shared import loop_position
from shared.errors import Interrupted
from shared.loop_position import num_train_batches
from shared.resumable_loader import ResumableDataLoader
from shared.rng_state import restore_rng_states
from vanilla import ddp
from vanilla.early_stopping import EarlyStopping
from vanilla.model_checkpoint import ModelCheckpoint
from vanilla.optimization import Optimization
from vanilla.progress_bar import ProgressBar
from vanilla.seed import isolate_rng
from vanilla.signal_connector import SignalConnector


@dataclass(frozen=True)
class LoopConfig:
    """What the command line says about the loop (Lightning: the Trainer's flags of the same names)."""

    max_epochs: int
    limit_train_batches: float | int = 1.0
    checkpoint_every_n_steps: int = 0

    @classmethod
    def from_settings(cls, settings) -> LoopConfig:
        return cls(settings.max_epochs, settings.limit_train_batches, settings.checkpoint_every_n_steps)


@dataclass
class LoopPosition(loop_position.LoopPosition):
    """Where training stands (shared with the Fabric trainer's loop), and how many rows this loop logged."""

    logged_rows: int = 0  # rows in metrics.csv; a resumed run drops any written after its checkpoint


@dataclass
class FitLoop:
    config: LoopConfig
    optimization: Optimization
    train_loader: ResumableDataLoader
    val_loader: DataLoader
    early_stopping: EarlyStopping
    checkpoint: ModelCheckpoint
    save_checkpoint: Callable[[FitLoop, str], None]  # builds this loop's checkpoint (on every rank) and writes it
    loggers: list = field(default_factory=list)
    progress: ProgressBar = field(default_factory=lambda: ProgressBar(enabled=False))
    say: Callable[[str], None] = print
    position: LoopPosition = field(default_factory=LoopPosition, init=False)
    stop_reason: str | None = field(default=None, init=False)
    signals: SignalConnector = field(default_factory=SignalConnector, init=False)
    _pending_rng: dict | None = field(default=None, init=False)  # a resumed run's, set once its order is drawn

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {**self.position.state_dict(), "train_loader": self.train_loader.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.position.load_state_dict(state)
        self.train_loader.load_state_dict(state["train_loader"])
        self.stop_reason = self.early_stopping.stopping_reason_message if self.position.should_stop else None

    def restore_rng_at_resume(self, states: dict) -> None:
        """Put this rank's generators back where the checkpoint was taken: between epochs, before the next one;
        mid-epoch, once the resumed epoch's loader has drawn its order."""
        self._pending_rng = states

    def _restore_pending_rng(self) -> None:
        if self._pending_rng is not None:
            restore_rng_states(self._pending_rng)
            self._pending_rng = None

    # ---------------------------------------------------------------- fit
    def run(self, sanity_check: bool = True) -> None:
        with self.signals.catching_stop_signals():
            if sanity_check:
                self.sanity_check()
            pos = self.position
            while not pos.should_stop:
                if pos.epoch_finished:  # move on; also where a run resumed from an end-of-epoch checkpoint starts
                    if pos.epoch + 1 >= self.config.max_epochs:
                        break
                    pos.epoch, pos.batches_done, pos.epoch_finished = pos.epoch + 1, 0, False
                    self._restore_pending_rng()
                self.train_epoch()
                self.on_epoch_end(self.validate())
            self._stop_if_signalled()  # a signal after the last batch: resuming goes straight to the test phase

    @property
    def model(self) -> torch.nn.Module:
        return self.optimization.model

    @property
    def device(self) -> torch.device:
        return self.optimization.strategy.device

    def _stop_if_signalled(self) -> None:
        received = self.signals.received
        if not ddp.reduce_any(received is not None, self.device):  # every rank stops at one batch
            return
        self.save_last()
        pos = self.position
        raise Interrupted(received or signal.SIGTERM, pos.epoch, pos.global_step, self.checkpoint.last_model_path,
                          announce=self.optimization.strategy.is_global_zero)

    def save_last(self) -> None:
        self.checkpoint.save_last_checkpoint(lambda path: self.save_checkpoint(self, path))

    # ---------------------------------------------------------------- train
    def train_epoch(self) -> None:
        pos = self.position
        num_batches = num_train_batches(len(self.train_loader), self.config.limit_train_batches)
        if isinstance(self.train_loader.sampler, DistributedSampler):
            self.train_loader.sampler.set_epoch(pos.epoch)
        if pos.batches_done == 0:
            pos.train_loss_sum, pos.train_samples = torch.tensor(0.0), 0
        self.model.train()
        batches = iter(self.train_loader)  # resumed mid-epoch: the same order, trained batches skipped
        self.progress.start_epoch(pos.epoch, num_batches, done=pos.batches_done)
        for batch_idx in range(pos.batches_done, num_batches):
            batch = next(batches)
            self._restore_pending_rng()  # resumed: once the loader drew the epoch's order, as the interrupted run had
            loss = self.training_step(batch, batch_idx, num_batches)
            self.progress.advance(loss)
            # Stop on a signal only where the optimizer just stepped (gradients are not in checkpoints), and not after
            # the epoch's last batch: the epoch's end and its checkpoint come first.
            stepped = (batch_idx + 1) % self.optimization.accumulate_grad_batches == 0
            if stepped and batch_idx + 1 < num_batches:
                self._stop_if_signalled()

    def training_step(self, batch: dict, batch_idx: int, num_batches: int) -> float:
        pos = self.position
        loss, stepped = self.optimization.training_step(batch, batch_idx, num_batches)
        batch_size = batch["input_ids"].size(0)
        pos.train_loss_sum = pos.train_loss_sum + loss.float().cpu() * batch_size
        pos.train_samples += batch_size
        pos.batches_done = self.train_loader.batches_trained = batch_idx + 1
        if stepped:
            pos.global_step += 1
            n = self.config.checkpoint_every_n_steps
            # Not after an epoch's last batch: the epoch-end checkpoint follows (and Lightning and this loop resume a
            # checkpoint taken there differently: Lightning would skip that epoch's validation).
            if n and pos.global_step % n == 0 and batch_idx + 1 < num_batches:
                self.save_last()
        return loss.item()

    # ---------------------------------------------------------------- validate
    @torch.inference_mode()
    def validate(self, max_batches: int | None = None) -> torch.Tensor:
        """Batch-size-weighted mean dev loss over the dev set (over all ranks under DDP)."""
        self.model.eval()
        device = self.device
        total, samples = torch.tensor(0.0, device=device), torch.tensor(0, device=device)
        for batch_idx, batch in enumerate(self.val_loader):
            if max_batches is not None and batch_idx >= max_batches:
                break
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with self.optimization.precision.forward_context():
                loss = self.optimization.strategy.loss_fn(batch)
            total = total + loss.float() * batch["input_ids"].size(0)
            samples = samples + batch["input_ids"].size(0)
        self.model.train()
        return (ddp.all_reduce_sum(total) / ddp.all_reduce_sum(samples)).cpu()

    def sanity_check(self) -> None:
        """Two validation batches before training, to fail fast on a broken dev set; moves no RNG."""
        with isolate_rng():
            self.validate(max_batches=2)

    # ---------------------------------------------------------------- epoch end
    def on_epoch_end(self, dev_loss: torch.Tensor) -> None:
        pos = self.position
        train_loss = pos.train_loss_sum / pos.train_samples
        self.train_loader.batches_trained = 0
        # Lightning logs epoch-end values at the index of the epoch's last optimizer step (global_step - 1).
        for row in ({"dev_loss": dev_loss.item(), "epoch": pos.epoch},
                    {"train_loss": train_loss.item(), "epoch": pos.epoch}):
            for logger in self.loggers:
                logger.log_metrics(row, step=pos.global_step - 1)
            pos.logged_rows += 1
        self.progress.end_epoch(train_loss=train_loss.item(), dev_loss=dev_loss.item())
        should_stop, message = self.early_stopping.check(dev_loss, pos.epoch)
        should_stop = ddp.reduce_any(should_stop, self.device)
        if should_stop:
            self.stop_reason = message
        pos.should_stop = pos.should_stop or should_stop
        pos.epoch_finished = True
        self.say(f"epoch {pos.epoch}: train_loss={train_loss.item():.4f} dev_loss={dev_loss.item():.4f} "
                 f"step={pos.global_step} | {message}")
        self.checkpoint.on_validation_epoch_end(pos.epoch, dev_loss, lambda path: self.save_checkpoint(self, path))
