"""Question generation on SQuAD with Lightning Fabric: the same job as vanilla/train.py and lightning/train.py.

Fabric takes over the devices and launching processes, precision (autocast and the gradient scaler), distributed
sampling, gradient clipping, writing and reading checkpoint files, and the loggers. The loop stays the user's, and so
do its callbacks: early stopping and the top-k checkpoint bookkeeping are vanilla/'s framework-free modules, as is the
batch-size search's algorithm; what goes into a checkpoint is `resume_state.py` beside this file. Run from the
repository root: `python fabric/train.py --help` (the same command line as the other two).
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

import copy
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
from lightning_fabric import Fabric
from lightning_fabric.loggers import CSVLogger, TensorBoardLogger
from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from lightning_fabric.strategies import DDPStrategy
from lightning_fabric.utilities.exceptions import MisconfigurationException
from lightning_fabric.utilities.rank_zero import rank_zero_only
from resume_state import Position, checkpoint_state, keep_logged_rows, read_resume_checkpoint, restore
from torch.utils.data import DataLoader, Subset
from transformers import get_constant_schedule_with_warmup

from shared.checkpoint_file import PREFIX, check_weights_fit, read_checkpoint
from shared.cli import parse_args
from shared.data import PadCollator
from shared.decoding import generate_questions
from shared.devices import check_data_parallel, check_devices, precision_for, runs_ddp
from shared.entry_point import exit_on_user_error
from shared.errors import Interrupted, UserError, no_training_batches_error, out_of_memory_error
from shared.export import export_pretrained
from shared.launcher import check_launcher
from shared.model import seq2seq_loss
from shared.pipeline import make_model, prepare_data
from shared.predictions import in_test_order, share_of_test_set, write_test_report
from shared.process_tree import end_with_rank_zero
from shared.resumable_loader import ResumableDataLoader
from shared.rng_state import gather_from_every_rank, restore_rng_states
from shared.run_dir import choose_run_directory, prepare_output_dir, resolve_resume_path
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
    """What the loop works with, set up by Fabric."""

    fabric: Fabric
    model: torch.nn.Module  # the module Fabric set up (autocast in its forward; DDP around it)
    raw_model: torch.nn.Module  # the same weights, unwrapped: checkpoints and the test phase
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    args: object


def loss_of(job: Job, batch: dict) -> torch.Tensor:
    """The batch's loss through the model Fabric set up. Under `--strategy dp` Fabric's DataParallel gathers one
    loss per GPU: their mean (a no-op on one loss)."""
    return seq2seq_loss(job.model, batch).mean()


def training_step(job: Job, batch: dict, batch_idx: int, num_batches: int) -> tuple[torch.Tensor, bool]:
    accumulate = job.args.accumulate_grad_batches
    steps_now = (batch_idx + 1) % accumulate == 0 or batch_idx + 1 == num_batches
    with job.fabric.no_backward_sync(job.model, enabled=not steps_now):  # DDP: no all-reduce while accumulating
        loss = loss_of(job, batch)
        job.fabric.backward(loss / accumulate)
    if steps_now:
        if job.args.gradient_clip_val > 0:
            job.fabric.clip_gradients(job.model, job.optimizer, max_norm=job.args.gradient_clip_val,
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


def num_train_batches(loader, limit: float | int) -> int:
    """`--limit-train-batches` as Lightning reads it: a whole number of batches, or a share of the epoch."""
    if isinstance(limit, int):
        return min(len(loader), limit)
    batches = len(loader) if limit == 1.0 else int(len(loader) * limit)
    if batches == 0:
        raise no_training_batches_error(limit, len(loader))
    return batches


def fit(job: Job, train_loader, resumable_loader: ResumableDataLoader, val_loader, early_stopping: EarlyStopping,
        checkpoint: ModelCheckpoint, save, position: Position, pending_rng: dict | None) -> None:
    """Epochs of train-then-validate until max_epochs or early stopping. `train_loader` is what Fabric made of
    `resumable_loader` (its position goes into checkpoints); `pending_rng`, the RNG states of a run resumed
    mid-epoch. Ctrl-C or SIGTERM stops it after the next optimizer step with a resumable last.ckpt."""
    fabric, args = job.fabric, job.args
    signals, progress = SignalConnector(), ProgressBar(enabled=fabric.is_global_zero)

    def stop_if_signalled() -> None:
        if fabric.strategy.reduce_boolean_decision(signals.received is not None, all=False):
            checkpoint.save_last_checkpoint(save)
            raise Interrupted(signals.received or signal.SIGTERM, position.epoch, position.global_step,
                              checkpoint.last_model_path, announce=fabric.is_global_zero)

    with signals.catching_stop_signals():
        if position.global_step == 0 and position.batches_done == 0 and not position.epoch_finished:
            sanity_check(job, val_loader)
        while not position.should_stop:
            if position.epoch_finished:
                if position.epoch + 1 >= args.max_epochs:
                    break
                position.epoch, position.batches_done, position.epoch_finished = position.epoch + 1, 0, False
            num_batches = num_train_batches(train_loader, args.limit_train_batches)
            if position.batches_done == 0:
                position.train_loss_sum, position.train_samples = torch.tensor(0.0), 0
            job.model.train()
            batches = iter(train_loader)  # resumed mid-epoch: the same order, trained batches skipped
            progress.start_epoch(position.epoch, num_batches, done=position.batches_done)
            for batch_idx in range(position.batches_done, num_batches):
                batch = next(batches)
                if pending_rng is not None:  # resumed: once the loader drew the epoch's order
                    restore_rng_states(pending_rng)
                    pending_rng = None
                loss, stepped = training_step(job, batch, batch_idx, num_batches)
                position.train_loss_sum = position.train_loss_sum + loss.float().cpu() * batch["input_ids"].size(0)
                position.train_samples += batch["input_ids"].size(0)
                position.batches_done = resumable_loader.batches_trained = batch_idx + 1
                progress.advance(loss.item())
                if stepped:
                    position.global_step += 1
                    every = args.checkpoint_every_n_steps
                    if batch_idx + 1 < num_batches:  # after the last batch, the epoch's end and its checkpoint
                        if every and position.global_step % every == 0:
                            checkpoint.save_last_checkpoint(save)
                        stop_if_signalled()
            dev_loss = validate(job, val_loader)
            train_loss = position.train_loss_sum / position.train_samples
            resumable_loader.batches_trained = 0
            # epoch-end values at the index of the epoch's last optimizer step, as Lightning logs them
            for row in ({"dev_loss": dev_loss.item(), "epoch": position.epoch},
                        {"train_loss": train_loss.item(), "epoch": position.epoch}):
                fabric.log_dict(row, step=position.global_step - 1)
            for logger in fabric.loggers:
                logger.save()  # every row on disk as soon as it is logged (loggers write on rank 0 only)
            progress.end_epoch(train_loss=train_loss.item(), dev_loss=dev_loss.item())
            should_stop, message = early_stopping.check(dev_loss, position.epoch)
            position.should_stop = fabric.strategy.reduce_boolean_decision(should_stop, all=False)
            position.epoch_finished = True
            if fabric.is_global_zero:
                print(f"epoch {position.epoch}: train_loss={train_loss.item():.4f} dev_loss={dev_loss.item():.4f} "
                      f"step={position.global_step} | {message}")
            checkpoint.on_validation_epoch_end(position.epoch, dev_loss, save)
        stop_if_signalled()  # a signal after the last batch: resuming goes straight to the test phase


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
    with isolate_rng():
        try:
            result = scale_batch_size(trial, job.args.batch_size, dataset_length, mode=job.args.auto_batch_size)
        finally:
            for part, state in zip(parts, saved, strict=True):
                part.load_state_dict(state)
            job.optimizer.zero_grad(set_to_none=True)
    print(f"batch-size search ({job.args.auto_batch_size}): tried {result.tried} -> batch size {result.batch_size}")
    return result.batch_size


def test_phase(job: Job, data, ckpt_path: str, output_dir: Path) -> dict | None:
    """Every process loads the checkpoint and generates for its share of the test batches (all of them in one
    process); rank 0 gathers the shares in order, scores them and writes the files. The scores on rank 0."""
    checkpoint = read_checkpoint(ckpt_path)
    check_weights_fit(job.raw_model, checkpoint, ckpt_path)
    job.raw_model.load_state_dict({name.removeprefix(PREFIX): tensor for name, tensor in
                                   checkpoint["state_dict"].items() if name.startswith(PREFIX)})
    job.raw_model.eval()
    fabric, batch_size = job.fabric, job.args.batch_size
    share = Subset(data.test, share_of_test_set(len(data.test), batch_size, fabric.global_rank, fabric.world_size))
    loader = DataLoader(share, batch_size=batch_size, collate_fn=PadCollator(data.tokenizer.pad_token_id))
    batches: list[list[str]] = []
    for batch in loader:
        with fabric.autocast():
            batch = fabric.to_device(batch)
            batches.append(generate_questions(job.raw_model, data.tokenizer, batch, job.args.num_beams,
                                              job.args.max_target_length))
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
    args.output_dir = str(output_dir)
    if rank_zero_only.rank == 0:
        prepare_output_dir(output_dir, args.resume, args.overwrite)
    csv_logger = CSVLogger(output_dir, name="", version="")
    tensorboard_logger = TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)
    try:
        strategy = DDPStrategy(timeout=timedelta(seconds=args.ddp_timeout)) if runs_ddp(args, cuda) else args.strategy
        fabric = Fabric(accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
                        strategy=strategy, precision=precision_for(args.precision, cuda),
                        loggers=[csv_logger, tensorboard_logger])
    except (MisconfigurationException, ValueError, RuntimeError, TypeError) as error:  # no GPU, too many GPUs
        raise UserError(f"--accelerator/--devices/--strategy: {str(error).strip().splitlines()[0]}") from None
    try:
        fabric.launch()
    except ValueError as error:  # the launcher's world is not --num-nodes x --devices processes
        raise UserError(f"--num-nodes/--devices: {error}") from None
    with other_ranks_stopped_on_failure(fabric):
        return train_and_test(fabric, args, output_dir, started)


@contextmanager
def other_ranks_stopped_on_failure(fabric: Fabric):
    """A failure in rank 0 alone (a full disk, say) would leave the processes Fabric started waiting for it in a
    collective: stop them, as the Trainer does. (Under torchrun, torchrun does.) An interruption ends every rank."""
    try:
        yield
    except Interrupted:
        raise
    except BaseException:
        for process in getattr(fabric.strategy.launcher, "procs", []):
            process.kill()
        raise


def train_and_test(fabric: Fabric, args, output_dir: Path, started: float) -> dict | None:
    csv_logger, tensorboard_logger = fabric.loggers
    resume_path = resolve_resume_path(output_dir, args.resume) if args.resume else None
    resume = read_resume_checkpoint(fabric, resume_path) if resume_path else None
    if resume is not None:  # continue at the batch size the run had (it may have come from the search)
        args.batch_size = resume["hyper_parameters"].get("batch_size", args.batch_size)

    fabric.seed_everything(args.seed, workers=False, verbose=False)
    data = prepare_data(args, output_dir, save_tokenizer=fabric.is_global_zero)
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
    job = Job(fabric, model, raw_model, optimizer, scheduler, args)
    collate = PadCollator(data.tokenizer.pad_token_id)

    def make_train_loader(batch_size: int) -> ResumableDataLoader:
        return ResumableDataLoader(data.train, batch_size=batch_size, shuffle=True, collate_fn=collate,
                                   num_workers=args.num_workers)

    if args.auto_batch_size and resume is None:
        args.batch_size = search_batch_size(job, make_train_loader, len(data.train))
    train_loader, val_loader = fabric.setup_dataloaders(
        make_train_loader(args.batch_size), DataLoader(data.dev, batch_size=args.batch_size, collate_fn=collate,
                                                       num_workers=args.num_workers))
    resumable_loader = train_loader._dataloader  # the ResumableDataLoader Fabric iterates (its own copy under DDP)

    hparams = dict(vars(args))
    early_stopping = EarlyStopping("dev_loss", patience=args.patience, min_delta=args.min_delta)
    checkpoint = ModelCheckpoint(output_dir / "checkpoints", save_top_k=args.save_top_k,
                                 is_writer=fabric.is_global_zero)
    position = Position()

    def save(path: Path) -> None:
        state = checkpoint_state(raw_model, optimizer, scheduler, fabric.strategy.precision, early_stopping,
                                 checkpoint, position, resumable_loader, hparams)
        try:
            fabric.save(path, state)
        except OSError as error:
            raise UserError(f"cannot write checkpoint {path}: {error.strerror or error}; the previous "
                            f"checkpoint, if any, is intact") from None

    pending_rng = None
    if resume is not None:
        position, pending_rng = restore(resume, resume_path, raw_model, optimizer, scheduler,
                                        fabric.strategy.precision, early_stopping, checkpoint, resumable_loader,
                                        train_loader, fabric.world_size, fabric.global_rank)
        if position.epoch_finished:  # between epochs: the next epoch draws its order from these generators
            restore_rng_states(pending_rng)
            pending_rng = None
        resume = None
        if fabric.is_global_zero:
            print(f"resumed from {resume_path}: epoch {position.epoch}, step {position.global_step}, "
                  f"{position.batches_done} batches into the epoch")
            keep_logged_rows(csv_logger, position.global_step)
    if fabric.is_global_zero:  # Fabric's loggers write no hparams.yaml (the Trainer's do): as vanilla/ writes it
        save_hparams(output_dir, hparams)
        tensorboard_dir = Path(tensorboard_logger.log_dir)
        tensorboard_dir.mkdir(parents=True, exist_ok=True)
        save_hparams(tensorboard_dir, hparams)
    status = "failed"
    try:
        fit(job, train_loader, resumable_loader, val_loader, early_stopping, checkpoint, save, position,
            pending_rng)
        status = "success"
    except RuntimeError as error:
        if is_oom_error(error):
            raise out_of_memory_error(args.batch_size) from None
        raise
    finally:
        for logger in fabric.loggers:
            logger.finalize(status)
    if position.should_stop and fabric.is_global_zero:
        print(f"early stopping: {early_stopping.stopping_reason_message}")
    ckpt_path = fabric.broadcast(checkpoint.best_model_path or checkpoint.last_model_path)  # rank 0 wrote the files
    if fabric.is_global_zero:
        print(f"testing {ckpt_path}")
    report = test_phase(job, data, ckpt_path, output_dir)
    if not fabric.is_global_zero:
        return None  # the other ranks have no collective left: they leave
    export_pretrained(raw_model, data.tokenizer, output_dir / "export")
    print(end_lines(report, ckpt_path, output_dir / "export", started))
    return report


if __name__ == "__main__":
    exit_on_user_error(main)()
