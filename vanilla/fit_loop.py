"""The training loop itself (Lightning: `Trainer.fit` and its fit / epoch / validation loops).

Epochs of train-then-validate, written to consume random numbers in the same order as Lightning 2.6, so that
the two trainers end with identical weights on the CPU:
- the train DataLoader is built once and iterated each epoch; its shuffle draws a seed from the global torch
  generator when the epoch starts (and every DataLoader iterator draws one more for its workers' base seed);
- the sanity check (two validation batches before the first epoch) runs inside `isolate_rng`;
- training under `model.train()`, validation under `model.eval()` and `torch.inference_mode()`;
- epoch values are batch-size-weighted means, accumulated in float32 (`sum(loss * batch_size) / sum(batch_size)`);
- an optimizer step every `accumulate_grad_batches` batches and at the end of the epoch: loss divided by the
  accumulation count, gradients unscaled (16-mixed), clipped by norm, step, zero with `set_to_none=True`, then the
  LR scheduler steps (interval "step");
- after validation: log, early stopping, then checkpoints (Lightning runs checkpoint callbacks last).
Mid-epoch checkpoints carry the shuffle seed, the batch position, the partial epoch sums and every RNG state,
so a resumed run continues the same sequence of batches and random numbers. Ctrl-C or SIGTERM during training
ends the run at the next batch boundary with such a checkpoint (last.ckpt), so that --resume last continues it.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch.utils.data import DataLoader

from vanilla import ddp
from vanilla.early_stopping import EarlyStopping
from vanilla.model_checkpoint import ModelCheckpoint
from vanilla.precision import Precision
from vanilla.progress_bar import ProgressBar
from vanilla.seed import isolate_rng, restore_rng_states

LossFn = Callable[[dict], torch.Tensor]
# feature: checkpointing + resume
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
    """Training stopped on a signal, after saving a resumable checkpoint."""

    def __init__(self, signum: int, epoch: int, step: int, path: str):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name} at epoch {epoch}, step {step}: saved {path}; "
                         f"continue with --resume last")


# feature: loop
@dataclass
class LoopPosition:
    """Where training stands; saved in every checkpoint under "loops"."""

    epoch: int = 0
    global_step: int = 0
    batches_done: int = 0  # batches of `epoch` already trained
    epoch_finished: bool = False  # validation and epoch-end of `epoch` done
    should_stop: bool = False
    train_loss_sum: torch.Tensor = field(default_factory=lambda: torch.tensor(0.0))
    train_samples: int = 0
    logged_rows: int = 0  # rows in metrics.csv; a resumed run drops any written after its checkpoint


class FitLoop:
    def __init__(self, *, model: torch.nn.Module, loss_fn: LossFn, optimizer: torch.optim.Optimizer,
                 scheduler, precision: Precision, device: torch.device, train_loader: DataLoader,
                 val_loader: DataLoader, early_stopping: EarlyStopping, checkpoint: ModelCheckpoint,
                 save_checkpoint: Callable[[Path], None], loggers: list, progress: ProgressBar,
                 max_epochs: int, limit_train_batches: float | int, accumulate_grad_batches: int,
                 gradient_clip_val: float, checkpoint_every_n_steps: int, is_global_zero: bool,
                 no_sync: Callable | None = None, say: Callable[[str], None] = print):
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.precision = precision
        self.device = device
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.early_stopping = early_stopping
        self.checkpoint = checkpoint
        self.save_checkpoint = save_checkpoint
        self.loggers = loggers
        self.progress = progress
        self.max_epochs = max_epochs
        self.limit_train_batches = limit_train_batches
        self.accumulate_grad_batches = accumulate_grad_batches
        self.gradient_clip_val = gradient_clip_val
        self.checkpoint_every_n_steps = checkpoint_every_n_steps
        self.is_global_zero = is_global_zero
        self.no_sync = no_sync
        self.say = say
        self.position = LoopPosition()
        self.stop_reason: str | None = None
        self.pending_rng_states: dict | None = None  # set on resume; applied once the resumed epoch's iterator exists
        self.signal_received: int | None = None

    # ---------------------------------------------------------------- fit
    def run(self, sanity_check: bool = True) -> None:
        with self._catching_stop_signals():
            if sanity_check:
                self.sanity_check()
            pos = self.position
            while not pos.should_stop:
                if pos.epoch_finished:  # move on; also where a run resumed from an end-of-epoch checkpoint starts
                    if pos.epoch + 1 >= self.max_epochs:
                        break
                    pos.epoch, pos.batches_done, pos.epoch_finished = pos.epoch + 1, 0, False
                    self._restore_pending_rng()
                self.train_epoch()
                self.on_epoch_end(self.validate())
            self._stop_if_signalled(save=False)  # a signal after the last batch: last.ckpt is already complete

    # feature: checkpointing + resume
    @contextmanager
    def _catching_stop_signals(self):
        """Ctrl-C and SIGTERM only set a flag; training stops at the next batch boundary (`_stop_if_signalled`)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        for signum in STOP_SIGNALS:
            signal.signal(signum, lambda signum, frame: setattr(self, "signal_received", signum))
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _stop_if_signalled(self, save: bool = True) -> None:
        if not ddp.reduce_any(self.signal_received is not None, self.device):  # every rank stops at one batch
            return
        if save:
            self.checkpoint.save_last_checkpoint(self.save_checkpoint)
        pos = self.position
        raise Interrupted(self.signal_received or signal.SIGTERM, pos.epoch, pos.global_step,
                          self.checkpoint.last_model_path)

    # feature: loop
    def num_train_batches(self) -> int:
        total = len(self.train_loader)
        limit = self.limit_train_batches
        if isinstance(limit, int):
            return min(total, limit)
        return total if limit == 1.0 else int(total * limit)

    # ---------------------------------------------------------------- train
    def train_epoch(self) -> None:
        pos = self.position
        sampler = self.train_loader.sampler
        if isinstance(sampler, ddp.ResumableDistributedSampler):
            sampler.set_epoch(pos.epoch)
        if pos.batches_done == 0:
            pos.train_loss_sum, pos.train_samples = torch.tensor(0.0), 0
        self.model.train()
        num_batches = self.num_train_batches()
        batches = iter(self.train_loader)
        self._restore_pending_rng()  # after the iterator drew its seeds, as the interrupted run had done
        self.progress.start_epoch(pos.epoch, num_batches, done=pos.batches_done)
        for batch_idx in range(pos.batches_done, num_batches):
            batch = next(batches)
            self.progress.advance(self.training_step(batch, batch_idx, num_batches))
            if batch_idx + 1 < num_batches:  # after the last batch, the epoch's end (and its checkpoint) comes first
                self._stop_if_signalled()

    def training_step(self, batch: dict, batch_idx: int, num_batches: int) -> float:
        pos = self.position
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        batch_size = batch["input_ids"].size(0)
        steps_now = (batch_idx + 1) % self.accumulate_grad_batches == 0 or batch_idx + 1 == num_batches
        # Under DDP, batches that only accumulate skip the gradient all-reduce (Lightning's block_backward_sync).
        with self.no_sync() if (self.no_sync is not None and not steps_now) else nullcontext():
            with self.precision.forward_context():
                loss = self.loss_fn(batch)
            self.precision.backward(loss / self.accumulate_grad_batches)
        detached = loss.detach().float().cpu()
        pos.train_loss_sum = pos.train_loss_sum + detached * batch_size
        pos.train_samples += batch_size
        pos.batches_done = batch_idx + 1  # before the step: a mid-epoch checkpoint must count this batch
        if steps_now:
            self.optimizer_step(epoch_ends=batch_idx + 1 == num_batches)
        return detached.item()

    def optimizer_step(self, epoch_ends: bool = False) -> None:
        pos = self.position
        self.precision.unscale_gradients(self.optimizer)
        if self.gradient_clip_val > 0:
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.gradient_clip_val)
        self.precision.optimizer_step(self.optimizer)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        pos.global_step += 1
        n = self.checkpoint_every_n_steps
        # Not after an epoch's last batch: the epoch-end checkpoint follows (and both trainers resume a
        # checkpoint taken there differently: Lightning would skip that epoch's validation).
        if n and pos.global_step % n == 0 and not epoch_ends:
            self.checkpoint.save_last_checkpoint(self.save_checkpoint)

    # ---------------------------------------------------------------- validate
    @torch.inference_mode()
    def validate(self, max_batches: int | None = None) -> torch.Tensor:
        """Batch-size-weighted mean dev loss over the dev set (over all ranks under DDP)."""
        self.model.eval()
        total, samples = torch.tensor(0.0, device=self.device), torch.tensor(0, device=self.device)
        for batch_idx, batch in enumerate(self.val_loader):
            if max_batches is not None and batch_idx >= max_batches:
                break
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with self.precision.forward_context():
                loss = self.loss_fn(batch)
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
        self.checkpoint.on_validation_epoch_end(pos.epoch, dev_loss, self.save_checkpoint)

    def _restore_pending_rng(self) -> None:
        if self.pending_rng_states is not None:
            restore_rng_states(self.pending_rng_states)
            self.pending_rng_states = None
