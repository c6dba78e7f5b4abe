"""Question generation on SQuAD, trained with PyTorch Lightning 2.6: the same job as vanilla/train.py, with
Lightning's Trainer, callbacks, loggers and Tuner doing what vanilla/ writes by hand.

What Lightning does not do is here too, and marked: exact resume (exact_resume.py beside this file), and the
seed's `strategy="dp"`, which Lightning 2.0 removed. Run from the repository root: `python lightning/train.py
--help` (the same command line as vanilla/train.py).
"""

from __future__ import annotations

import sys
from pathlib import Path

# As in vanilla/train.py: the repository root on the path instead of this folder, so that `shared` imports as a
# package; this folder goes last, for exact_resume.py.
HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parent
if sys.path[0] in ("", str(HERE)):
    sys.path[0] = str(REPO_ROOT)
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

import csv  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from lightning_fabric.utilities.exceptions import MisconfigurationException  # noqa: E402
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from pytorch_lightning.tuner import Tuner  # noqa: E402
from pytorch_lightning.utilities import rank_zero_only  # noqa: E402
from pytorch_lightning.utilities.memory import is_oom_error  # noqa: E402
from pytorch_lightning.utilities.seed import isolate_rng  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler  # noqa: E402
from transformers import get_constant_schedule_with_warmup  # noqa: E402

from exact_resume import (ExactResume, Interrupted, ReplayableDistributedSampler,  # noqa: E402
                          ReplayableRandomSampler, ResumableDataLoader)
from shared.cli import parse_args  # noqa: E402
from shared.data import PadCollator  # noqa: E402
from shared.decoding import generate_questions  # noqa: E402
from shared.errors import UserError, exit_on_user_error, out_of_memory_error  # noqa: E402
from shared.export import export_pretrained  # noqa: E402
from shared.model import count_parameters, seq2seq_loss  # noqa: E402
from shared.pipeline import make_model, prepare_data  # noqa: E402
from shared.run_dir import prepare_output_dir, resolve_resume_path  # noqa: E402
from shared.test_report import write_test_report  # noqa: E402

PROG = "lightning/train.py"
DEFAULT_OUTPUT_DIR = "runs/lightning"


class QGDataModule(pl.LightningDataModule):
    def __init__(self, data, batch_size: int, num_workers: int, seed: int):
        super().__init__()
        self.data = data
        self.batch_size = batch_size  # the Tuner's batch-size search rewrites this
        self.num_workers = num_workers
        self.seed = seed
        self.collate = PadCollator(data.tokenizer.pad_token_id)

    # feature: checkpointing + resume
    # Exact resume needs a sampler that can replay an epoch, so the samplers are made here rather than by
    # Lightning (Trainer(use_distributed_sampler=False)); under DDP they are Lightning's own choice:
    # DistributedSampler seeded with the run's seed, unshuffled for evaluation.
    def _distributed(self) -> bool:
        return self.trainer is not None and self.trainer.world_size > 1

    def train_dataloader(self):
        train = self.data.train
        sampler = (ReplayableDistributedSampler(train, self.trainer.world_size, self.trainer.global_rank,
                                                shuffle=True, seed=self.seed)
                   if self._distributed() else ReplayableRandomSampler(train))
        return ResumableDataLoader(train, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate,
                                   num_workers=self.num_workers)

    def _eval_loader(self, dataset) -> DataLoader:
        sampler = (DistributedSampler(dataset, self.trainer.world_size, self.trainer.global_rank, shuffle=False)
                   if self._distributed() else None)
        return DataLoader(dataset, batch_size=self.batch_size, sampler=sampler, collate_fn=self.collate,
                          num_workers=self.num_workers)

    # feature: wiring
    def val_dataloader(self):
        return self._eval_loader(self.data.dev)

    def test_dataloader(self):
        return self._eval_loader(self.data.test)


class QGModule(pl.LightningModule):
    def __init__(self, model, tokenizer, config: dict):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.save_hyperparameters(config)
        self.generated: list[str] = []
        # feature: checkpointing + resume
        # train_loss is the epoch's batch-size-weighted mean. Kept here rather than by self.log(on_epoch=True):
        # Lightning's own accumulator is not saved in checkpoints, and a run resumed mid-epoch must average
        # the whole epoch too (exact resume).
        self.loss_sum, self.samples = torch.tensor(0.0), 0

    # feature: loop
    def training_step(self, batch, batch_idx):
        loss = seq2seq_loss(self.model, batch)
        # feature: checkpointing + resume
        self.loss_sum = self.loss_sum + loss.detach().float().cpu() * batch["input_ids"].size(0)
        self.samples += batch["input_ids"].size(0)
        # feature: loop
        return loss

    # feature: checkpointing + resume
    def on_train_epoch_start(self):
        self.loss_sum, self.samples = torch.tensor(0.0), 0

    def on_train_epoch_end(self):
        # feature: logging
        self.log("train_loss", self.loss_sum / self.samples, prog_bar=True)

    # feature: loop
    def validation_step(self, batch, batch_idx):
        loss = seq2seq_loss(self.model, batch)
        # feature: logging
        self.log("dev_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=batch["input_ids"].size(0))

    # feature: test phase
    def test_step(self, batch, batch_idx):
        self.generated += generate_questions(self.model, self.tokenizer, batch, self.hparams.num_beams,
                                             self.hparams.max_target_length)

    # feature: loop
    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=self.hparams.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # feature: checkpointing + resume
    # exact resume: the partial epoch sum of train_loss travels in the checkpoint
    def on_save_checkpoint(self, checkpoint):
        checkpoint["train_loss_sum"] = {"sum": self.loss_sum, "samples": self.samples}

    def on_load_checkpoint(self, checkpoint):
        if "train_loss_sum" in checkpoint:
            self.loss_sum, self.samples = checkpoint["train_loss_sum"]["sum"], checkpoint["train_loss_sum"]["samples"]


class StepCheckpoint(ModelCheckpoint):
    """last.ckpt every N optimizer steps. A second ModelCheckpoint, because the monitoring one given
    `every_n_train_steps` would stop its epoch-end saves; and not after an epoch's last batch: the epoch-end
    checkpoint follows, and Lightning 2.6 resumes a checkpoint taken there into the next epoch without
    validating this one (weights stay exact, metrics.csv would not)."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx + 1 < trainer.num_training_batches:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    def on_train_end(self, trainer, pl_module):
        pass  # a last.ckpt at the end of training is the monitoring ModelCheckpoint's (it saves after epoch 0)


# feature: data parallel / DDP
def resolve_strategy(strategy: str, accelerator: str) -> str:
    """The seed asked for `accelerator='dp'`; Lightning 2.0 removed DataParallel (Trainer(strategy='dp') raises),
    so its intent -- every visible GPU -- maps to DDP, the replacement Lightning supports."""
    if strategy != "dp":
        return strategy
    if accelerator == "cpu" or not torch.cuda.is_available():
        raise UserError("--strategy dp: torch.nn.DataParallel replicates the model over CUDA GPUs, and none "
                        "is in use (use --strategy ddp for several CPU processes)")
    print("notice: --strategy dp: Lightning 2.x has no DataParallel (removed in 2.0); running strategy='ddp', "
          "its supported replacement, with one process per GPU")
    return "ddp"


# feature: precision
def resolve_precision(precision: str, accelerator: str) -> str:
    """Lightning falls back from 16-mixed to bf16-mixed on the CPU with a multi-line warning; say it in one."""
    if precision == "16-mixed" and (accelerator == "cpu" or not torch.cuda.is_available()):
        print("notice: --precision 16-mixed needs CUDA; using bf16-mixed on the CPU, as Lightning does")
        return "bf16-mixed"
    return precision


# feature: checkpointing + resume
def read_checkpoint(path: Path) -> dict:
    """Lightning would read it with the same safe `weights_only=True`; read here first to check it."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- any failure to read it is the user's file's problem
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"{path}: not a readable checkpoint ({first})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{path}: not a checkpoint of this project (no 'state_dict')")
    return checkpoint


def check_weights_fit(module: pl.LightningModule, checkpoint: dict, path: Path) -> None:
    """Lightning's own check (a strict load_state_dict) ends in a traceback listing every tensor."""
    expected = module.state_dict()
    for name, tensor in checkpoint["state_dict"].items():
        if name not in expected or expected[name].shape != tensor.shape:
            raise UserError(f"{path}: weights do not fit this model configuration ({name}: "
                            f"{tuple(tensor.shape)} in the checkpoint)")
    missing = sorted(set(expected) - set(checkpoint["state_dict"]))
    if missing:
        raise UserError(f"{path}: weights do not fit this model configuration ({missing[0]} is missing)")


def logged_rows_before(output_dir: Path, checkpoint: dict) -> list[dict]:
    """Lightning's CSVLogger deletes metrics.csv when it starts (exact resume: keep the rows of the epochs the
    checkpoint had finished, drop those the interrupted run logged after it)."""
    path = output_dir / "metrics.csv"
    if not path.exists():
        return []
    epochs_done = checkpoint["epoch"] + (0 if checkpoint.get("mid_epoch") else 1)
    with open(path, newline="") as handle:
        return [row for row in csv.DictReader(handle) if int(row["epoch"]) < epochs_done]


# feature: wiring
def make_trainer(**kwargs) -> pl.Trainer:
    try:  # an impossible device request (no GPU, too many GPUs) ends in one line, as in vanilla/train.py
        return pl.Trainer(**kwargs)
    except MisconfigurationException as error:
        raise UserError(f"--accelerator/--devices/--strategy: {str(error).strip().splitlines()[0]}") from None


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(PROG, DEFAULT_OUTPUT_DIR, argv)
    started = time.perf_counter()
    # feature: data parallel / DDP
    strategy = resolve_strategy(args.strategy, args.accelerator)
    # feature: precision
    precision = resolve_precision(args.precision, args.accelerator)
    is_rank_zero = rank_zero_only.rank == 0  # processes started by Lightning's DDP launcher leave files to rank 0
    # feature: wiring
    output_dir = Path(args.output_dir)
    if is_rank_zero:
        prepare_output_dir(output_dir, args.resume, args.overwrite)
    # feature: checkpointing + resume
    resume_path = resolve_resume_path(output_dir, args.resume) if args.resume else None
    resume = read_checkpoint(resume_path) if resume_path else None
    if resume is not None and "fit_loop" not in resume.get("loops", {}):
        raise UserError(f"--resume {resume_path}: was written by vanilla/train.py, whose loop state Lightning does "
                        f"not read; resume it with vanilla/train.py (its weights load anywhere)")
    if resume is not None:  # continue at the batch size the run had (it may have come from the search)
        args.batch_size = resume["hyper_parameters"].get("batch_size", args.batch_size)

    # feature: wiring
    pl.seed_everything(args.seed, verbose=False)
    data = prepare_data(args, output_dir, save_tokenizer=is_rank_zero)
    module = QGModule(make_model(args, data.tokenizer), data.tokenizer, dict(vars(args)))
    datamodule = QGDataModule(data, args.batch_size, args.num_workers, args.seed)
    # feature: checkpointing + resume
    if resume is not None:
        check_weights_fit(module, resume, resume_path)
    checkpoint = ModelCheckpoint(dirpath=output_dir / "checkpoints", monitor="dev_loss", mode="min",
                                 filename="{epoch}-{dev_loss:.2f}", save_top_k=args.save_top_k, save_last=True)
    # feature: early stopping
    early_stopping = EarlyStopping(monitor="dev_loss", mode="min", patience=args.patience, min_delta=args.min_delta)
    # feature: checkpointing + resume
    exact_resume = ExactResume(last_checkpoint=str(output_dir / "checkpoints" / "last.ckpt"))
    callbacks = [early_stopping, checkpoint, exact_resume]
    if args.checkpoint_every_n_steps:
        callbacks.append(StepCheckpoint(dirpath=output_dir / "checkpoints", save_top_k=0, save_last=True,
                                        every_n_train_steps=args.checkpoint_every_n_steps,
                                        enable_version_counter=False))
        checkpoint.last_model_path = str(output_dir / "checkpoints" / "last.ckpt")  # both write one last.ckpt
    # feature: logging
    csv_logger = CSVLogger(output_dir, name="", version="")
    loggers = [csv_logger, TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)]
    # feature: checkpointing + resume
    if resume is not None and is_rank_zero:
        kept_rows = logged_rows_before(output_dir, resume)  # before the logger's start deletes metrics.csv
        csv_logger.experiment.metrics.extend(kept_rows)
    # feature: wiring
    trainer = make_trainer(
        callbacks=callbacks, logger=loggers, default_root_dir=output_dir, enable_model_summary=False,
        # feature: loop
        max_epochs=args.max_epochs, gradient_clip_val=args.gradient_clip_val or None,
        accumulate_grad_batches=args.accumulate_grad_batches, limit_train_batches=args.limit_train_batches,
        # feature: data parallel / DDP
        accelerator=args.accelerator, devices=args.devices, strategy=strategy,
        # feature: checkpointing + resume
        use_distributed_sampler=False,
        # feature: precision
        precision=precision)
    # feature: wiring
    if is_rank_zero:
        print(f"data: {len(data.train)} train / {len(data.dev)} dev / {len(data.test)} test examples"
              f"{' (synthetic corpus)' if data.files.synthetic else ''}; model: "
              f"{count_parameters(module.model):,} parameters; {type(trainer.strategy).__name__} on "
              f"{trainer.num_devices} "
              f"{type(trainer.accelerator).__name__.removesuffix('Accelerator').lower()} device(s)")

    # feature: batch-size search
    if args.auto_batch_size and resume is None:
        if trainer.world_size > 1:
            raise UserError("--auto-batch-size: Lightning's Tuner.scale_batch_size does not support distributed "
                            "strategies; run the search with --devices 1")
        with isolate_rng():  # the Tuner restores the weights, not the random generators
            found = Tuner(trainer).scale_batch_size(module, datamodule=datamodule, mode=args.auto_batch_size)
        print(f"batch-size search ({args.auto_batch_size}) -> batch size {found}")
        args.batch_size = found
        module.save_hyperparameters(dict(vars(args)))  # hparams.yaml is written from the initial hparams

    # feature: loop
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path, weights_only=True)
    # feature: checkpointing + resume
    except Interrupted as stop:  # Ctrl-C or SIGTERM: last.ckpt is saved; say how to go on, exit non-zero
        if trainer.is_global_zero:
            print(stop)
        raise SystemExit(128 + stop.signum) from None
    except OSError as error:  # a full disk, a read-only directory: Lightning's atomic save left the old file
        raise UserError(f"cannot write checkpoint {error.filename or output_dir / 'checkpoints'}: "
                        f"{error.strerror or error}; the previous checkpoint, if any, is intact") from None
    # feature: loop
    except RuntimeError as error:
        if is_oom_error(error):
            raise out_of_memory_error(args.batch_size) from None
        raise
    # feature: checkpointing + resume
    if trainer.strategy.reduce_boolean_decision(exact_resume.signal_received is not None, all=False):
        signum = exact_resume.signal_received or signal.SIGTERM
        if trainer.is_global_zero:  # after the last batch: last.ckpt is already complete
            print(Interrupted(signum, trainer.current_epoch, trainer.global_step, checkpoint.last_model_path))
        raise SystemExit(128 + signum)
    # feature: early stopping
    if early_stopping.stopping_reason_message and trainer.is_global_zero:
        print(f"early stopping: {early_stopping.stopping_reason_message}")
    # feature: test phase
    if not trainer.is_global_zero:
        return {}
    ckpt_path = checkpoint.best_model_path or checkpoint.last_model_path
    if not ckpt_path:
        raise UserError("training wrote no checkpoint, so there is nothing to test")
    print(f"testing {ckpt_path}")
    tester = trainer
    # feature: data parallel / DDP
    if trainer.world_size > 1:  # every test example once: test in this process alone, as Lightning advises
        tester = make_trainer(accelerator=args.accelerator, devices=1, precision=precision, logger=False,
                            default_root_dir=output_dir, enable_model_summary=False)
    # feature: test phase
    module.generated = []
    tester.test(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True, verbose=False)
    report = write_test_report(output_dir, data.test.examples, module.generated, ckpt_path)
    # feature: wiring
    export_pretrained(module.model, data.tokenizer, output_dir / "export")
    print("test: " + " ".join(f"{k}={v:.4f}" for k, v in report.items() if isinstance(v, float)))
    print(f"done in {time.perf_counter() - started:.1f}s: best checkpoint {ckpt_path}; "
          f"model exported to {output_dir / 'export'}")
    return report


if __name__ == "__main__":
    exit_on_user_error(main)()
