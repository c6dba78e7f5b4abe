"""Question generation on SQuAD with Lightning Fabric: the same job as vanilla/train.py and lightning/train.py.

Fabric takes over the devices and launching processes, precision (autocast and the gradient scaler), distributed
sampling, gradient clipping, writing and reading checkpoint files, and the loggers. The loop stays the user's, and so
do its callbacks: early stopping and the top-k checkpoint bookkeeping are vanilla/'s framework-free modules, as is the
batch-size search's algorithm. Beside this file: `resume_state.py`, the state `fabric.save` and `fabric.load` are
given, and `private_api.py`, the three places where the trainer reaches past Fabric's public API. Run from the
repository root: `python fabric/train.py --help` (the same command line as every trainer here).
"""

from __future__ import annotations

import sys
from pathlib import Path

# As in vanilla/train.py: the repository root on the path instead of this folder, so that `shared` and `vanilla`
# import as packages; this folder goes last, for the modules beside this file.
HERE = Path(__file__).resolve().parent
if sys.path[0] in ("", str(HERE)):
    sys.path[0] = str(HERE.parent)
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

import argparse
import copy
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta

import torch
from lightning_fabric import Fabric
from lightning_fabric.loggers import CSVLogger, TensorBoardLogger
from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning_fabric.strategies import DDPStrategy
from lightning_fabric.utilities.exceptions import MisconfigurationException
from lightning_fabric.utilities.rank_zero import rank_zero_only
from private_api import loader_fabric_iterates, processes_fabric_started
from resume_state import read_resume_checkpoint, resume, save_checkpoint
from torch.utils.data import DataLoader, Subset
from transformers import get_constant_schedule_with_warmup

from shared.checkpoint_dict import load_model_weights
from shared.checkpoint_file import read_checkpoint
from shared.cli import parse_args
from shared.data import PadCollator
from shared.decoding import generate_questions
from shared.devices import check_data_parallel, check_devices, precision_for, runs_ddp
from shared.entry_point import exit_on_user_error
from shared.errors import Interrupted, UserError, out_of_memory_error
from shared.export import export_pretrained
from shared.launcher import check_launcher
from shared.logged_rows import LoggedRows
from shared.loop_position import LoopPosition, num_train_batches
from shared.model import seq2seq_loss
from shared.pipeline import make_model, prepare_data
from shared.predictions import in_test_order, share_of_test_set, write_test_report
from shared.process_tree import end_with_rank_zero
from shared.resumable_loader import ResumableDataLoader
from shared.rng_state import gather_from_every_rank, restore_rng_states
from shared.run_dir import choose_run_directory, prepare_output_dir, resolve_resume_path
from shared.run_settings import batch_size_to_continue, resolve_settings
from shared.summary import end_lines, start_line
from vanilla.batch_size_finder import cleaning_up_after_oom, is_oom_error, scale_batch_size  # reused: framework-free
from vanilla.data_parallel import autocast_in_replicas  # reused: DataParallel's threads forget the autocast dtype
from vanilla.early_stopping import EarlyStopping  # reused
from vanilla.loggers import save_hparams  # reused
from vanilla.model_checkpoint import ModelCheckpoint  # reused
from vanilla.progress_bar import ProgressBar  # reused
from vanilla.seed import isolate_rng  # reused
from vanilla.signal_connector import SignalConnector  # reused

PROG = "fabric/train.py"
TRAINER = "fabric"  # its runs go to runs/fabric/version_N unless told otherwise


@dataclass
class Job:
    """The model, its optimizer and schedule as Fabric set them up, and the run's settings (during the batch-size
    search, which decides one of them, the command line's): what the steps below work with."""

    fabric: Fabric
    model: torch.nn.Module  # the module Fabric set up (autocast in its forward; DDP around it)
    raw_model: torch.nn.Module  # the same weights, unwrapped: checkpoints and the test phase
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    settings: argparse.Namespace  # a RunSettings once resolved; the command line during the search


def loss_of(job: Job, batch: dict) -> torch.Tensor:
    """The batch's loss through the model Fabric set up. Under `--strategy dp` Fabric's DataParallel gathers one
    loss per GPU: their mean (a no-op on one loss)."""
    return seq2seq_loss(job.model, batch).mean()


def training_step(job: Job, batch: dict, batch_idx: int, num_batches: int) -> tuple[torch.Tensor, bool]:
    """The batch's loss (detached) and whether the optimizer stepped after it."""
    accumulate = job.settings.accumulate_grad_batches
    steps_now = (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == num_batches
    with job.fabric.no_backward_sync(job.model, enabled=not steps_now):  # DDP: no all-reduce while accumulating
        loss = loss_of(job, batch)
        job.fabric.backward(loss / accumulate)
    if steps_now:
        if job.settings.gradient_clip_val > 0:
            job.fabric.clip_gradients(job.model, job.optimizer, max_norm=job.settings.gradient_clip_val,
                                      error_if_nonfinite=False)
        job.optimizer.step()
        job.optimizer.zero_grad(set_to_none=True)
        job.scheduler.step()
    return loss.detach(), steps_now


@torch.inference_mode()
def validate(job: Job, val_loader) -> torch.Tensor:
    """Batch-size-weighted mean dev loss over the dev set, over all processes."""
    job.model.eval()
    total, samples = torch.tensor(0.0, device=job.fabric.device), torch.tensor(0, device=job.fabric.device)
    for batch in val_loader:
        loss = loss_of(job, batch)
        total, samples = total + loss.float() * batch["input_ids"].size(0), samples + batch["input_ids"].size(0)
    job.model.train()
    return (job.fabric.all_reduce(total, reduce_op="sum") / job.fabric.all_reduce(samples, reduce_op="sum")).cpu()


def sanity_check(job: Job, val_loader) -> None:
    """Two validation batches before training, to fail fast on a broken dev set (as Lightning does); moves no RNG."""
    job.model.eval()
    with isolate_rng(), torch.inference_mode():
        for _, batch in zip(range(2), val_loader, strict=False):
            loss_of(job, batch)
    job.model.train()


@dataclass
class FitLoop:
    """The loop and what it works with (Fabric's build_your_own_trainer keeps the same on its trainer): the job,
    the loaders Fabric set up, the callbacks, and where training stands. Its steps are named as
    vanilla/fit_loop.py names them."""

    job: Job
    train_loader: DataLoader  # Fabric's, around a ResumableDataLoader
    val_loader: DataLoader
    early_stopping: EarlyStopping
    checkpoint: ModelCheckpoint
    position: LoopPosition = field(default_factory=LoopPosition)
    pending_rng: dict | None = None  # a resumed run's RNG states, put back once the epoch's order is drawn
    signals: SignalConnector = field(default_factory=SignalConnector)

    def __post_init__(self):
        self.progress = ProgressBar(enabled=self.job.fabric.is_global_zero)

    @property
    def resumable_loader(self) -> ResumableDataLoader:
        return loader_fabric_iterates(self.train_loader)

    def fit(self, sanity_check_first: bool) -> None:
        """Epochs of train-then-validate until max_epochs or early stopping. Ctrl-C or SIGTERM stops it after the
        next optimizer step with a resumable last.ckpt."""
        pos = self.position
        with self.signals.catching_stop_signals():
            if sanity_check_first:
                sanity_check(self.job, self.val_loader)
            while not pos.should_stop:
                if pos.epoch_finished:  # move on; also where a run resumed from an end-of-epoch checkpoint starts
                    if pos.epoch + 1 >= self.job.settings.max_epochs:
                        break
                    pos.epoch, pos.batches_done, pos.epoch_finished = pos.epoch + 1, 0, False
                    self.restore_pending_rng()
                self.train_epoch()
                self.on_epoch_end(validate(self.job, self.val_loader))
            self.stop_if_signalled()  # a signal after the last batch: resuming goes straight to the test phase

    def train_epoch(self) -> None:
        pos, settings = self.position, self.job.settings
        num_batches = num_train_batches(len(self.train_loader), settings.limit_train_batches)
        if pos.batches_done == 0:
            pos.train_loss_sum, pos.train_samples = torch.tensor(0.0), 0
        self.job.model.train()
        batches = iter(self.train_loader)  # resumed mid-epoch: the same order, trained batches skipped
        self.progress.start_epoch(pos.epoch, num_batches, done=pos.batches_done)
        for batch_idx in range(pos.batches_done, num_batches):
            batch = next(batches)
            self.restore_pending_rng()  # resumed: once the loader drew the epoch's order, as the interrupted run had
            loss, stepped = training_step(self.job, batch, batch_idx, num_batches)
            pos.train_loss_sum = pos.train_loss_sum + loss.float().cpu() * batch["input_ids"].size(0)
            pos.train_samples += batch["input_ids"].size(0)
            pos.batches_done = batch_idx + 1
            self.progress.advance(loss.item())
            if stepped:
                pos.global_step += 1
                if batch_idx + 1 < num_batches:  # after the last batch, the epoch's end and its checkpoint
                    every = settings.checkpoint_every_n_steps
                    if every and pos.global_step % every == 0:
                        self.save_last()
                    self.stop_if_signalled()

    def on_epoch_end(self, dev_loss: torch.Tensor) -> None:
        """Log the epoch's values, then early stopping, then the checkpoints (Lightning runs those last)."""
        pos, fabric = self.position, self.job.fabric
        train_loss = pos.train_loss_sum / pos.train_samples
        # epoch-end values at the index of the epoch's last optimizer step, as Lightning logs them
        for row in ({"dev_loss": dev_loss.item(), "epoch": pos.epoch},
                    {"train_loss": train_loss.item(), "epoch": pos.epoch}):
            fabric.log_dict(row, step=pos.global_step - 1)
        for logger in fabric.loggers:
            logger.save()  # every row on disk as soon as it is logged (loggers write on rank 0 only)
        self.progress.end_epoch(train_loss=train_loss.item(), dev_loss=dev_loss.item())
        should_stop, message = self.early_stopping.check(dev_loss, pos.epoch)
        pos.should_stop = fabric.strategy.reduce_boolean_decision(should_stop, all=False)
        pos.epoch_finished = True
        if fabric.is_global_zero:
            print(f"epoch {pos.epoch}: train_loss={train_loss.item():.4f} dev_loss={dev_loss.item():.4f} "
                  f"step={pos.global_step} | {message}")
        self.checkpoint.on_validation_epoch_end(pos.epoch, dev_loss, lambda path: save_checkpoint(self, path))

    def save_last(self) -> None:
        self.checkpoint.save_last_checkpoint(lambda path: save_checkpoint(self, path))

    def stop_if_signalled(self) -> None:
        fabric = self.job.fabric
        # a signal to any rank stops every rank at this batch
        if fabric.strategy.reduce_boolean_decision(self.signals.received is not None, all=False):
            self.save_last()
            raise Interrupted(self.signals.received or signal.SIGTERM, self.position.epoch, self.position.global_step,
                              self.checkpoint.last_model_path, announce=fabric.is_global_zero)

    def restore_pending_rng(self) -> None:
        if self.pending_rng is not None:
            restore_rng_states(self.pending_rng)
            self.pending_rng = None


def search_batch_size(job: Job, make_loader, dataset_length: int) -> int:
    """vanilla/'s search (Lightning's algorithm) with Fabric's training steps; the run is left as it was."""
    if job.fabric.world_size > 1:
        raise UserError("--auto-batch-size runs in one process; it cannot be combined with --strategy ddp "
                        "(Lightning's Tuner has the same limit)")
    parts = (job.raw_model, job.optimizer, job.scheduler, job.fabric.strategy.precision)
    saved = [copy.deepcopy(part.state_dict()) for part in parts]

    def run_trial(batch_size: int) -> None:
        loader, steps = job.fabric.setup_dataloaders(make_loader(batch_size)), 0
        job.model.train()
        while steps < 3:
            for batch_idx, batch in enumerate(loader):
                steps += training_step(job, batch, batch_idx, len(loader))[1]
                if steps >= 3:
                    break

    # Fabric's precision plugin holds the GradScaler (16-mixed only): an out-of-memory trial must end its step
    trial = cleaning_up_after_oom(run_trial, job.optimizer, getattr(job.fabric.strategy.precision, "scaler", None))
    mode = job.settings.auto_batch_size
    with isolate_rng():
        try:
            result = scale_batch_size(trial, job.settings.batch_size, dataset_length, mode=mode)
        finally:
            for part, state in zip(parts, saved, strict=True):
                part.load_state_dict(state)
            job.optimizer.zero_grad(set_to_none=True)
    print(f"batch-size search ({mode}): tried {result.tried} -> batch size {result.batch_size}")
    return result.batch_size


def test_phase(job: Job, data, ckpt_path: str, output_dir: Path) -> dict | None:
    """Every process loads the checkpoint and generates for its share of the test batches (all of them in one
    process); rank 0 gathers the shares in order, scores them and writes the files. The scores on rank 0."""
    load_model_weights(job.raw_model, read_checkpoint(ckpt_path), ckpt_path)
    job.raw_model.eval()
    fabric, settings = job.fabric, job.settings
    share = Subset(data.test, share_of_test_set(len(data.test), settings.batch_size, fabric.global_rank,
                                                fabric.world_size))
    loader = DataLoader(share, batch_size=settings.batch_size, collate_fn=PadCollator(data.tokenizer.pad_token_id))
    batches: list[list[str]] = []
    for batch in loader:
        with fabric.autocast():
            batch = fabric.to_device(batch)
            batches.append(generate_questions(job.raw_model, data.tokenizer, batch, settings.num_beams,
                                              settings.max_target_length))
    batches_of_each_rank = gather_from_every_rank(batches)  # Fabric's all_gather takes tensors only
    if not fabric.is_global_zero:
        return None
    return write_test_report(output_dir, data.test.examples, in_test_order(batches_of_each_rank), ckpt_path)


def main(argv: list[str] | None = None) -> dict | None:
    started = time.perf_counter()
    end_with_rank_zero()  # a rank Fabric's launcher started ends with rank 0, however rank 0 ends
    args = parse_args(PROG, TRAINER, argv)
    cuda = args.accelerator != "cpu" and torch.cuda.is_available()
    check_devices(args.devices, cuda)
    check_launcher(args, cuda, (TorchElasticEnvironment, SLURMEnvironment))  # torchrun's or srun's world, checked
    if args.strategy == "dp":  # Fabric alone would fall back to ddp without CUDA, with a warning
        check_data_parallel(cuda)
    output_dir = choose_run_directory(args, TRAINER, rank_zero_only.rank)
    if rank_zero_only.rank == 0:
        prepare_output_dir(output_dir, args.resume, args.overwrite)
    fabric = launch(args, cuda, output_dir)
    with other_ranks_stopped_on_failure(fabric):
        return train_and_test(fabric, args, output_dir, started)


def launch(args, cuda: bool, output_dir: Path) -> Fabric:
    """`Fabric(...)` with the run's loggers, and `fabric.launch()`; Fabric's refusals in one line."""
    loggers = [CSVLogger(output_dir, name="", version=""),
               TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)]
    try:
        strategy = DDPStrategy(timeout=timedelta(seconds=args.ddp_timeout)) if runs_ddp(args, cuda) else args.strategy
        fabric = Fabric(accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
                        strategy=strategy, precision=precision_for(args.precision, cuda), loggers=loggers)
    except (MisconfigurationException, ValueError, RuntimeError, TypeError) as error:  # no GPU, too many GPUs
        raise UserError(f"--accelerator/--devices/--strategy: {str(error).strip().splitlines()[0]}") from None
    try:
        fabric.launch()
    except ValueError as error:  # the launcher's world is not --num-nodes x --devices processes
        raise UserError(f"--num-nodes/--devices: {error}") from None
    return fabric


@contextmanager
def other_ranks_stopped_on_failure(fabric: Fabric):
    """A failure in rank 0 alone (a full disk, say) would leave the processes Fabric started waiting for it in a
    collective: stop them, as the Trainer does. (Under torchrun, torchrun does.) An interruption ends every rank."""
    try:
        yield
    except Interrupted:
        raise
    except BaseException:
        for process in processes_fabric_started(fabric):
            process.kill()
        raise


def set_up_job(fabric: Fabric, args, data) -> Job:
    """The model (seeded as Lightning seeds it), AdamW and the warm-up schedule, set up by Fabric."""
    raw_model = make_model(args, data.tokenizer)
    if fabric.world_size > 1:
        fabric.seed_everything(args.seed, workers=False, verbose=False)  # as Lightning re-seeds when DDP starts
    if fabric.is_global_zero:
        print(start_line(data, raw_model, f"{type(fabric.strategy).__name__} on {fabric.world_size} "
                                          f"{fabric.device.type} device(s)"))
    optimizer = torch.optim.AdamW(raw_model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=args.warmup_steps)
    model, optimizer = fabric.setup(autocast_in_replicas(raw_model, args.precision) if args.strategy == "dp"
                                    else raw_model, optimizer)
    return Job(fabric, model, raw_model, optimizer, scheduler, args)


def make_train_loader(data, batch_size: int, num_workers: int) -> ResumableDataLoader:
    return ResumableDataLoader(data.train, batch_size=batch_size, shuffle=True, num_workers=num_workers,
                               collate_fn=PadCollator(data.tokenizer.pad_token_id))


def make_fit_loop(job: Job, data) -> FitLoop:
    """The loaders set up by Fabric (a DistributedSampler under DDP) and the callbacks, from the run's settings."""
    fabric, settings = job.fabric, job.settings
    train_loader, val_loader = fabric.setup_dataloaders(
        make_train_loader(data, settings.batch_size, settings.num_workers),
        DataLoader(data.dev, batch_size=settings.batch_size, collate_fn=PadCollator(data.tokenizer.pad_token_id),
                   num_workers=settings.num_workers))
    return FitLoop(job=job, train_loader=train_loader, val_loader=val_loader,
                   early_stopping=EarlyStopping("dev_loss", patience=settings.patience, min_delta=settings.min_delta),
                   checkpoint=ModelCheckpoint(Path(settings.output_dir) / "checkpoints",
                                              save_top_k=settings.save_top_k, is_writer=fabric.is_global_zero))


def train_and_test(fabric: Fabric, args, output_dir: Path, started: float) -> dict | None:
    resume_path = resolve_resume_path(output_dir, args.resume) if args.resume else None
    to_resume = read_resume_checkpoint(resume_path) if resume_path else None
    fabric.seed_everything(args.seed, workers=False, verbose=False)
    data = prepare_data(args, output_dir, save_tokenizer=fabric.is_global_zero)
    job = set_up_job(fabric, args, data)
    batch_size = batch_size_to_continue(to_resume, args)
    if args.auto_batch_size and to_resume is None:
        batch_size = search_batch_size(job, lambda size: make_train_loader(data, size, args.num_workers),
                                       len(data.train))
    settings = resolve_settings(args, output_dir, batch_size)  # read-only from here on
    loop = make_fit_loop(replace(job, settings=settings), data)
    csv_logger, tensorboard_logger = fabric.loggers
    if to_resume is not None:
        loop.pending_rng = resume(loop, to_resume, resume_path)
        to_resume = None  # restored: the run keeps no second copy
        if fabric.is_global_zero:
            print(f"resumed from {resume_path}: epoch {loop.position.epoch}, step {loop.position.global_step}, "
                  f"{loop.position.batches_done} batches into the epoch")
            LoggedRows(Path(csv_logger.log_dir) / "metrics.csv").log_again(csv_logger, loop.position.global_step)
    if fabric.is_global_zero:  # Fabric's loggers write no hparams.yaml (the Trainer's do): as vanilla/ writes it
        for log_dir in (output_dir, Path(tensorboard_logger.log_dir)):
            log_dir.mkdir(parents=True, exist_ok=True)
            save_hparams(log_dir, dict(vars(settings)))
    status = "failed"
    try:
        loop.fit(sanity_check_first=resume_path is None)
        status = "success"
    except RuntimeError as error:
        if is_oom_error(error):
            raise out_of_memory_error(settings.batch_size) from None
        raise
    finally:
        for logger in fabric.loggers:
            logger.finalize(status)
    if loop.position.should_stop and fabric.is_global_zero:
        print(f"early stopping: {loop.early_stopping.stopping_reason_message}")
    return test_and_export(loop, data, started)


def test_and_export(loop: FitLoop, data, started: float) -> dict | None:
    """The test phase on the best checkpoint (else last.ckpt), then, on rank 0, the exported model."""
    fabric, output_dir = loop.job.fabric, Path(loop.job.settings.output_dir)
    ckpt_path = fabric.broadcast(loop.checkpoint.best_model_path or loop.checkpoint.last_model_path)  # rank 0's
    if fabric.is_global_zero:
        print(f"testing {ckpt_path}")
    report = test_phase(loop.job, data, ckpt_path, output_dir)
    if not fabric.is_global_zero:
        return None  # the other ranks have no collective left: they leave
    export_pretrained(loop.job.raw_model, data.tokenizer, output_dir / "export")
    print(end_lines(report, ckpt_path, output_dir / "export", started))
    return report


if __name__ == "__main__":
    exit_on_user_error(main)()
