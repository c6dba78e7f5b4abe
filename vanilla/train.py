"""Question generation on SQuAD, trained in plain PyTorch: every feature a Trainer would give is written by hand
in the modules beside this one, each named after the Lightning feature it replaces. Run from the repository
root: `python vanilla/train.py --help`."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts vanilla/ first on the path; put the repository root there instead, so that
# `shared` and `vanilla` import as packages and no module here shadows an installed one.
REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] in ("", str(Path(__file__).resolve().parent)):
    sys.path[0] = str(REPO_ROOT)

import os
import time

import torch
from transformers import get_constant_schedule_with_warmup

from shared.cli import parse_args
from shared.entry_point import exit_on_user_error
from shared.errors import UserError, out_of_memory_error
from shared.export import export_pretrained
from shared.launcher import check_num_nodes
from shared.model import seq2seq_loss
from shared.pipeline import make_model, prepare_data
from shared.process_tree import end_with_rank_zero
from shared.run_dir import choose_run_directory, prepare_output_dir, resolve_resume_path
from shared.run_settings import batch_size_to_continue, resolve_settings
from shared.summary import end_lines, start_line
from vanilla import cluster_environment, ddp
from vanilla.accelerator import Hardware, resolve_hardware
from vanilla.batch_size_finder import is_oom_error, search_with_optimization
from vanilla.checkpoint_connector import read_resume_checkpoint, restore_checkpoint, saver
from vanilla.data_connector import DataConnector
from vanilla.early_stopping import EarlyStopping
from vanilla.evaluation_loop import checkpoint_to_test, run_test
from vanilla.fit_loop import FitLoop, LoopConfig
from vanilla.loggers import open_loggers
from vanilla.model_checkpoint import ModelCheckpoint
from vanilla.optimization import Optimization
from vanilla.precision import Precision
from vanilla.progress_bar import ProgressBar
from vanilla.seed import seed_everything
from vanilla.strategy import connect

PROG = "vanilla/train.py"
TRAINER = "vanilla"  # its runs go to runs/vanilla/version_N unless told otherwise


def configure_optimizers(model: torch.nn.Module, args):
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    return optimizer, get_constant_schedule_with_warmup(optimizer, num_warmup_steps=args.warmup_steps)


def search_batch_size(optimization: Optimization, data: DataConnector, args, say) -> int:
    if optimization.strategy.name == "ddp":
        raise UserError("--auto-batch-size runs in one process; it cannot be combined with --strategy ddp "
                        "(Lightning's Tuner has the same limit)")
    result = search_with_optimization(optimization, data.train_loader, args.batch_size, len(data.data.train),
                                      mode=args.auto_batch_size)
    say(f"batch-size search ({args.auto_batch_size}): tried {result.tried} -> batch size {result.batch_size}")
    return result.batch_size


def fit_and_test(args, output_dir: Path, hardware: Hardware) -> dict | None:
    started = time.perf_counter()
    process = ddp.init_process_group(hardware.device_type, args.ddp_timeout) if hardware.strategy == "ddp" \
        else ddp.ProcessInfo()
    writer = process.is_global_zero
    say = print if writer else (lambda *_: None)
    if writer:
        prepare_output_dir(output_dir, args.resume, args.overwrite)
    ddp.barrier()
    resume_path = resolve_resume_path(output_dir, args.resume) if args.resume else None
    resume = read_resume_checkpoint(resume_path) if resume_path else None

    seed_everything(args.seed)
    data = prepare_data(args, output_dir, save_tokenizer=writer)
    model = make_model(args, data.tokenizer)
    if hardware.strategy == "ddp":
        seed_everything(args.seed)  # Lightning re-seeds every process when DDP is set up (reset_seed)
    precision = Precision(args.precision, hardware.device_type)
    strategy = connect(hardware, model, process, seq2seq_loss, precision)
    say(start_line(data, model, f"{strategy.name} on {hardware.devices} {hardware.accelerator} device(s)"))
    optimization = Optimization(model, *configure_optimizers(model, args), precision, strategy,
                                args.accumulate_grad_batches, args.gradient_clip_val)
    loaders = DataConnector(data, args.num_workers, process, args.seed)
    batch_size = batch_size_to_continue(resume, args)
    if args.auto_batch_size and resume is None:
        batch_size = search_batch_size(optimization, loaders, args, say)
    settings = resolve_settings(args, output_dir, batch_size)  # read-only from here on

    checkpoint = ModelCheckpoint(output_dir / "checkpoints", save_top_k=settings.save_top_k, is_writer=writer)
    loggers: list = []  # opened once a resumed run's checkpoint is restored: a refused one changes no file
    loop = FitLoop(config=LoopConfig.from_settings(settings), optimization=optimization,
                   train_loader=loaders.train_loader(batch_size), val_loader=loaders.val_loader(batch_size),
                   early_stopping=EarlyStopping("dev_loss", patience=settings.patience, min_delta=settings.min_delta),
                   checkpoint=checkpoint, save_checkpoint=saver(dict(vars(settings)), writer),
                   loggers=loggers, progress=ProgressBar(enabled=writer), say=say)
    resuming = resume is not None
    if resuming:
        restore_checkpoint(loop, resume, resume_path, process.rank)
        resume = None  # restored: the run does not keep a second copy of the weights
        say(f"resumed from {resume_path}: epoch {loop.position.epoch}, step {loop.position.global_step}, "
            f"{loop.position.batches_done} batches into the epoch")
    if writer:
        loggers += open_loggers(output_dir, dict(vars(settings)), loop.position.logged_rows if resuming else None)
    try:
        loop.run(sanity_check=not resuming)
    except RuntimeError as error:
        if is_oom_error(error):
            raise out_of_memory_error(batch_size) from None
        raise
    finally:
        for logger in loggers:
            logger.close()
    if loop.stop_reason:
        say(f"early stopping: {loop.stop_reason}")
    scores = test_phase(settings, model, data, checkpoint, precision, strategy, output_dir)
    if writer:  # the other ranks have no collective left: they leave
        export_pretrained(model, data.tokenizer, output_dir / "export")
        print(end_lines(scores, checkpoint_to_test(checkpoint), output_dir / "export", started))
    return scores


def test_phase(settings, model, data, checkpoint: ModelCheckpoint, precision: Precision, strategy,
               output_dir: Path) -> dict | None:
    ckpt_path = ddp.gather_objects(checkpoint_to_test(checkpoint))[0]  # rank 0's, which wrote the files
    if strategy.is_global_zero:
        print(f"testing {ckpt_path}")
    return run_test(model, data.tokenizer, data.test, ckpt_path, strategy.device, precision, settings.batch_size,
                    settings.num_beams, settings.max_target_length, output_dir, strategy.process)


def main(argv: list[str] | None = None) -> dict | None:
    end_with_rank_zero()  # a rank this trainer started ends with rank 0, however rank 0 ends
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(PROG, TRAINER, argv)
    hardware = resolve_hardware(args.accelerator, args.devices, args.strategy, args.num_nodes)
    # torchrun's or SLURM's ranks, checked (DataParallel: one process, whatever the GPUs)
    cluster_environment.detect(args.num_nodes, hardware.devices if hardware.strategy == "ddp" else 1)
    check_num_nodes(args.num_nodes, cluster_environment.started_externally())
    output_dir = choose_run_directory(args, TRAINER, rank=int(os.environ.get("RANK", "0")))
    if hardware.strategy == "ddp":
        return ddp.run_ranks(str(Path(__file__).resolve()), argv, hardware.devices,
                             lambda: fit_and_test(args, output_dir, hardware))
    return fit_and_test(args, output_dir, hardware)


if __name__ == "__main__":
    exit_on_user_error(main)()
