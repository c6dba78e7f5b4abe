"""Question generation on SQuAD, trained in plain PyTorch: every feature a Trainer would give is written by hand
in the modules beside this one. Run from the repository root: `python vanilla/train.py --help`."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, Python puts vanilla/ first on the path; put the repository root there instead, so that
# `shared` and `vanilla` import as packages and no module here shadows an installed one.
REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] in ("", str(Path(__file__).resolve().parent)):
    sys.path[0] = str(REPO_ROOT)

import os  # noqa: E402
import time  # noqa: E402
from functools import partial  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402
from transformers import get_constant_schedule_with_warmup  # noqa: E402

from shared.cli import parse_args  # noqa: E402
from shared.data import PadCollator  # noqa: E402
from shared.errors import UserError, exit_on_user_error, out_of_memory_error  # noqa: E402
from shared.export import export_pretrained  # noqa: E402
from shared.model import count_parameters, seq2seq_loss  # noqa: E402
from shared.pipeline import make_model, prepare_data  # noqa: E402
from shared.run_dir import prepare_output_dir, resolve_resume_path  # noqa: E402
from vanilla import ddp  # noqa: E402
from vanilla.accelerator import Hardware, resolve_hardware  # noqa: E402
from vanilla.batch_size_finder import is_oom_error, search_with_loop  # noqa: E402
from vanilla.checkpoint_connector import dump_checkpoint, restore_checkpoint  # noqa: E402
from vanilla.checkpoint_io import atomic_save, load_checkpoint  # noqa: E402
from vanilla.data_parallel import DataParallelLoss  # noqa: E402
from vanilla.early_stopping import EarlyStopping  # noqa: E402
from vanilla.fit_loop import FitLoop, Interrupted  # noqa: E402
from vanilla.loggers import CSVLogger, TensorBoardLogger, save_hparams  # noqa: E402
from vanilla.model_checkpoint import ModelCheckpoint  # noqa: E402
from vanilla.precision import Precision  # noqa: E402
from vanilla.progress_bar import ProgressBar  # noqa: E402
from vanilla.resumable_sampler import ResumableRandomSampler  # noqa: E402
from vanilla.seed import seed_everything  # noqa: E402
from vanilla.test_loop import choose_checkpoint, run_test  # noqa: E402

PROG = "vanilla/train.py"
DEFAULT_OUTPUT_DIR = "runs/vanilla"


# feature: data parallel / DDP
def build_train_loader(dataset, batch_size: int, collate, num_workers: int, info: ddp.ProcessInfo,
                       seed: int) -> DataLoader:
    if info.distributed:
        sampler = ddp.ResumableDistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank,
                                                  shuffle=True, seed=seed)
    else:
        sampler = ResumableRandomSampler(len(dataset))
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers)


def build_eval_loader(dataset, batch_size: int, collate, num_workers: int, info: ddp.ProcessInfo) -> DataLoader:
    sampler = (DistributedSampler(dataset, num_replicas=info.world_size, rank=info.rank, shuffle=False)
               if info.distributed else None)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, shuffle=False, collate_fn=collate,
                      num_workers=num_workers)


# feature: wiring
def fit_and_test(args, hardware: Hardware) -> dict | None:
    started = time.perf_counter()
    output_dir = Path(args.output_dir)
    # feature: data parallel / DDP
    info = ddp.init_process_group(hardware.device_type) if hardware.strategy == "ddp" else ddp.ProcessInfo()
    writer = info.is_global_zero
    say = print if writer else (lambda *_: None)
    # feature: wiring
    if writer:
        prepare_output_dir(output_dir, args.resume, args.overwrite)
    # feature: data parallel / DDP
    ddp.barrier()
    # feature: checkpointing + resume
    resume_path = resolve_resume_path(output_dir, args.resume) if args.resume else None

    # feature: wiring
    seed_everything(args.seed)
    data = prepare_data(args, output_dir, save_tokenizer=writer)
    model = make_model(args, data.tokenizer)
    # feature: data parallel / DDP
    if hardware.strategy == "ddp":
        seed_everything(args.seed)  # Lightning re-seeds every process when DDP is set up (reset_seed)
    device = torch.device(f"cuda:{info.local_rank}" if hardware.device_type == "cuda" else "cpu")
    model.to(device)
    # feature: wiring
    say(f"data: {len(data.train)} train / {len(data.dev)} dev / {len(data.test)} test examples"
        f"{' (synthetic corpus)' if data.files.synthetic else ''}; model: {count_parameters(model):,} parameters; "
        f"{hardware.strategy} on {hardware.devices} {hardware.accelerator} device(s)")

    # feature: data parallel / DDP
    no_sync = None
    if hardware.strategy == "dp":
        loss_fn = DataParallelLoss(model, device_ids=list(range(hardware.devices)))
    elif hardware.strategy == "ddp":
        module = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None)
        loss_fn, no_sync = partial(seq2seq_loss, module), module.no_sync
    else:
        loss_fn = partial(seq2seq_loss, model)
    # feature: loop
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=args.warmup_steps)
    # feature: precision
    precision = Precision(args.precision, hardware.device_type)
    # feature: wiring
    collate = PadCollator(data.tokenizer.pad_token_id)

    # feature: checkpointing + resume
    checkpoint = ModelCheckpoint(output_dir / "checkpoints", save_top_k=args.save_top_k, is_writer=writer)
    # feature: logging
    loggers = []
    # feature: loop
    loop = FitLoop(
        model=model, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler, precision=precision, device=device,
        train_loader=None, val_loader=None,  # built once the batch size is final
        early_stopping=EarlyStopping("dev_loss", patience=args.patience, min_delta=args.min_delta),
        checkpoint=checkpoint, save_checkpoint=None, loggers=loggers, progress=ProgressBar(enabled=writer),
        max_epochs=args.max_epochs, limit_train_batches=args.limit_train_batches,
        accumulate_grad_batches=args.accumulate_grad_batches, gradient_clip_val=args.gradient_clip_val,
        checkpoint_every_n_steps=args.checkpoint_every_n_steps, is_global_zero=writer, no_sync=no_sync, say=say)

    # feature: checkpointing + resume
    resume = load_checkpoint(resume_path) if resume_path else None
    if resume is not None:
        args.batch_size = resume["hyper_parameters"].get("batch_size", args.batch_size)
    # feature: batch-size search
    elif args.auto_batch_size:
        if hardware.strategy == "ddp":
            raise UserError("--auto-batch-size runs in one process; it cannot be combined with --strategy ddp "
                            "(Lightning's Tuner has the same limit)")
        result = search_with_loop(
            loop, lambda size: build_train_loader(data.train, size, collate, args.num_workers, info, args.seed),
            args.batch_size, len(data.train), mode=args.auto_batch_size)
        say(f"batch-size search ({args.auto_batch_size}): tried {result.tried} -> batch size {result.batch_size}")
        args.batch_size = result.batch_size
    # feature: wiring
    loop.train_loader = build_train_loader(data.train, args.batch_size, collate, args.num_workers, info, args.seed)
    loop.val_loader = build_eval_loader(data.dev, args.batch_size, collate, args.num_workers, info)
    hparams = dict(vars(args))

    # feature: checkpointing + resume
    def save_checkpoint(path: Path) -> None:
        checkpoint = dump_checkpoint(loop, hparams)  # on every rank: it gathers their RNG states
        if writer:
            atomic_save(checkpoint, path)

    loop.save_checkpoint = save_checkpoint
    if resume is not None:
        restore_checkpoint(loop, resume, resume_path, info.rank)
        say(f"resumed from {resume_path}: epoch {loop.position.epoch}, step {loop.position.global_step}, "
            f"{loop.position.batches_done} batches into the epoch")
    # feature: logging
    if writer:
        csv_logger = CSVLogger(output_dir)
        if resume is not None:
            csv_logger.truncate(loop.position.logged_rows)
        loggers += [csv_logger, TensorBoardLogger(output_dir)]
        save_hparams(output_dir, hparams)
        save_hparams(output_dir / "tensorboard", hparams)  # Lightning's TensorBoardLogger keeps a copy there

    # feature: loop
    try:
        loop.run(sanity_check=resume is None)
    except Interrupted as stop:  # Ctrl-C or SIGTERM: last.ckpt is saved; say how to go on, exit non-zero
        say(str(stop))
        raise
    except RuntimeError as error:
        if is_oom_error(error):
            raise out_of_memory_error(args.batch_size) from None
        raise
    finally:
        for logger in loggers:
            logger.close()
    # feature: early stopping
    if loop.stop_reason:
        say(f"early stopping: {loop.stop_reason}")
    # feature: test phase
    scores = test_and_export(args, model, data, checkpoint, precision, device, output_dir, started) if writer else None
    # feature: data parallel / DDP
    ddp.barrier()  # the other ranks wait for rank 0's test phase, so that all leave the process group together
    # feature: wiring
    return scores


# feature: test phase
def test_and_export(args, model, data, checkpoint: ModelCheckpoint, precision: Precision, device,
                    output_dir: Path, started: float) -> dict:
    ckpt_path = choose_checkpoint(checkpoint.best_model_path, checkpoint.last_model_path)
    if not ckpt_path:
        raise UserError("training wrote no checkpoint, so there is nothing to test")
    print(f"testing {ckpt_path}")
    scores = run_test(model, data.tokenizer, data.test, ckpt_path, device, precision, args.batch_size,
                      args.num_beams, args.max_target_length, output_dir)
    # feature: wiring
    export_pretrained(model, data.tokenizer, output_dir / "export")
    print("test: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float)))
    print(f"done in {time.perf_counter() - started:.1f}s: best checkpoint {ckpt_path}; "
          f"model exported to {output_dir / 'export'}")
    return scores


# feature: wiring
def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(PROG, DEFAULT_OUTPUT_DIR, argv)
    # feature: data parallel / DDP
    hardware = resolve_hardware(args.accelerator, args.devices, args.strategy)
    children = []
    if hardware.strategy == "ddp" and not ddp.launched_by_torchrun():
        children = ddp.launch_local_ranks(str(Path(__file__).resolve()), argv, hardware.devices)
    failed, interrupted = True, None
    try:
        scores = fit_and_test(args, hardware)
        failed = False
    except Interrupted as stop:  # every rank stopped at the same batch
        interrupted = stop
    finally:
        status = ddp.wait_for(children, failed and interrupted is None)
        ddp.destroy_process_group()
    code = 128 + interrupted.signum if interrupted is not None else 0
    if hardware.strategy == "ddp" and int(os.environ.get("RANK", "0")) > 0:
        # The other ranks' work is done and their process group is gone. Their interpreter teardown aborted in
        # C++ ("terminate called without an active exception") in about one run in twenty here, so skip it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if code:
        raise SystemExit(code)
    if status:
        raise SystemExit(f"error: another DDP rank exited with status {status}")
    return scores


if __name__ == "__main__":
    exit_on_user_error(main)()
