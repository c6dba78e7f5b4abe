"""Question generation on SQuAD, trained with PyTorch Lightning 2.6: the same job as vanilla/train.py, with
Lightning's DataModule, LightningModule, Trainer, callbacks, loggers and Tuner doing what vanilla/ writes by hand.

What Lightning lacks is attached from the modules beside this file: exact resume (`exact_resume.py`) and the
run's guard rails (`run_guard.py`: run directory, checked --resume, the seed's `dp`, one-line errors). Run from
the repository root: `python lightning/train.py --help` (the same command line as vanilla/train.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# As in vanilla/train.py: the repository root on the path instead of this folder, so that `shared` imports as a
# package; this folder goes last, for the modules beside this file.
HERE = Path(__file__).resolve().parent
if sys.path[0] in ("", str(HERE)):
    sys.path[0] = str(HERE.parent)
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

import pytorch_lightning as pl
import torch
from exact_resume import exact_resume_callbacks
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.tuner import Tuner
from pytorch_lightning.utilities.seed import isolate_rng
from run_guard import RunGuard, SigtermEndsTheTest
from torch.utils.data import DataLoader, Subset
from torchmetrics import MeanMetric
from transformers import get_constant_schedule_with_warmup

from shared.cli import parse_args
from shared.data import PadCollator
from shared.decoding import generate_questions
from shared.entry_point import exit_on_user_error
from shared.export import export_pretrained
from shared.model import seq2seq_loss
from shared.pipeline import make_model, prepare_data
from shared.predictions import in_test_order, share_of_test_set, write_test_report
from shared.resumable_loader import ResumableDataLoader
from shared.rng_state import gather_from_every_rank
from shared.summary import end_lines, start_line

PROG = "lightning/train.py"
TRAINER = "lightning"  # its runs go to runs/lightning/version_N unless told otherwise


class QGDataModule(pl.LightningDataModule):
    def __init__(self, data, batch_size: int, num_workers: int):
        super().__init__()
        # under DDP a process may have no test batch of its own (more processes than batches)
        self.allow_zero_length_dataloader_with_multiple_devices = True
        self.data = data
        self.batch_size = batch_size  # the Tuner's batch-size search rewrites this
        self.num_workers = num_workers
        self.collate = PadCollator(data.tokenizer.pad_token_id)

    def train_dataloader(self):
        # A DataLoader whose state Lightning checkpoints, so that a resumed epoch continues in the same order
        return ResumableDataLoader(self.data.train, batch_size=self.batch_size, shuffle=True,
                                   collate_fn=self.collate, num_workers=self.num_workers)

    def val_dataloader(self):
        return DataLoader(self.data.dev, batch_size=self.batch_size, collate_fn=self.collate,
                          num_workers=self.num_workers)

    def test_dataloader(self):
        # Under DDP this process's share of the test batches (shared.predictions), in place of the DistributedSampler
        # Lightning would add (the tester runs with use_distributed_sampler=False)
        share = share_of_test_set(len(self.data.test), self.batch_size, self.trainer.global_rank,
                                  self.trainer.world_size)
        return DataLoader(Subset(self.data.test, share), batch_size=self.batch_size, collate_fn=self.collate,
                          num_workers=self.num_workers)


class QGModule(pl.LightningModule):
    def __init__(self, model, tokenizer, config: dict):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.save_hyperparameters(config)
        # The epoch's batch-size-weighted mean loss over this process's batches, as vanilla/ logs it. A NaN loss
        # keeps the mean NaN (torchmetrics' nan_strategy="disable" would also drop the weights).
        self.train_loss = MeanMetric(nan_strategy=float("nan"), sync_on_compute=False)
        self.generated: list[list[str]] = []  # this process's test batches

    def training_step(self, batch, batch_idx):
        loss = seq2seq_loss(self.model, batch)
        self.train_loss.update(loss.detach(), weight=batch["input_ids"].size(0))
        self.log("train_loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = seq2seq_loss(self.model, batch)
        self.log("dev_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=batch["input_ids"].size(0))

    def test_step(self, batch, batch_idx):
        self.generated.append(generate_questions(self.model, self.tokenizer, batch, self.hparams.num_beams,
                                                 self.hparams.max_target_length))


    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=self.hparams.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def scale_batch_size(trainer: pl.Trainer, module: QGModule, datamodule: QGDataModule, mode: str) -> int:
    with isolate_rng():  # the Tuner restores the weights, not the random generators
        batch_size = Tuner(trainer).scale_batch_size(module, datamodule=datamodule, mode=mode)
    print(f"batch-size search ({mode}) -> batch size {batch_size}")
    module.save_hyperparameters({**module.hparams, "batch_size": batch_size})  # hparams.yaml: the size found
    return batch_size


def ddp_tester(trainer: pl.Trainer, args, guard: RunGuard) -> pl.Trainer:
    """Under DDP every process tests its own share of the batches, given by the datamodule rather than by the
    DistributedSampler Lightning would add (it pads the shares with repeated examples)."""
    if trainer.world_size == 1:
        return trainer
    return pl.Trainer(accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes,
                      strategy=guard.strategy, precision=guard.precision, use_distributed_sampler=False, logger=False,
                      callbacks=[SigtermEndsTheTest()], plugins=guard.plugins, enable_model_summary=False,
                      default_root_dir=trainer.default_root_dir)


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    args = parse_args(PROG, TRAINER, argv)
    guard = RunGuard(args, TRAINER)  # run directory and its lock, --resume checks, `dp`, one-line errors
    output_dir = guard.output_dir  # runs/lightning/version_N, or --output-dir

    pl.seed_everything(args.seed, verbose=False)
    data = prepare_data(args, output_dir, save_tokenizer=guard.is_rank_zero)
    module = QGModule(make_model(args, data.tokenizer), data.tokenizer, dict(vars(args)))
    datamodule = QGDataModule(data, args.batch_size, args.num_workers)
    checkpoint = ModelCheckpoint(dirpath=output_dir / "checkpoints", monitor="dev_loss", mode="min",
                                 filename="{epoch}-{dev_loss:.2f}", save_top_k=args.save_top_k, save_last=True)
    early_stopping = EarlyStopping(monitor="dev_loss", mode="min", patience=args.patience, min_delta=args.min_delta)
    with guard.one_line_errors():
        trainer = pl.Trainer(
            max_epochs=args.max_epochs, limit_train_batches=args.limit_train_batches,
            accumulate_grad_batches=args.accumulate_grad_batches, gradient_clip_val=args.gradient_clip_val or None,
            accelerator=args.accelerator, devices=args.devices, num_nodes=args.num_nodes, strategy=guard.strategy,
            precision=guard.precision,
            callbacks=[early_stopping, checkpoint, *guard.callbacks, *exact_resume_callbacks(
                output_dir, checkpoint, args.checkpoint_every_n_steps, resuming=guard.ckpt_path is not None)],
            logger=[CSVLogger(output_dir, name="", version=""),
                    TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)],
            plugins=guard.plugins, enable_model_summary=False,
            default_root_dir=output_dir)  # where the Tuner keeps its temporary checkpoint: the run's, not the cwd
        if trainer.is_global_zero:
            print(start_line(data, module.model, f"{type(trainer.strategy).__name__} on {trainer.num_devices} "
                             f"{type(trainer.accelerator).__name__.removesuffix('Accelerator').lower()} device(s)"))
        if args.auto_batch_size and guard.ckpt_path is None:
            args.batch_size = scale_batch_size(trainer, module, datamodule, args.auto_batch_size)
        trainer.fit(module, datamodule=datamodule, ckpt_path=guard.ckpt_path, weights_only=True)
    if early_stopping.stopping_reason_message and trainer.is_global_zero:
        print(f"early stopping: {early_stopping.stopping_reason_message}")
    ckpt_path = checkpoint.best_model_path or checkpoint.last_model_path
    if trainer.is_global_zero:
        print(f"testing {ckpt_path}")
    module.generated = []
    ddp_tester(trainer, args, guard).test(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True,
                                          verbose=False)
    # every process's batches, in order; strings, which LightningModule.all_gather (tensors only) cannot gather.
    # Here, not in a test hook: Lightning skips those in a process without test batches.
    generated = in_test_order(gather_from_every_rank(module.generated))
    if not trainer.is_global_zero:
        return {}  # the other ranks have no collective left: they leave
    report = write_test_report(output_dir, data.test.examples, generated, ckpt_path)
    export_pretrained(module.model, data.tokenizer, output_dir / "export")
    print(end_lines(report, ckpt_path, output_dir / "export", started))
    return report


if __name__ == "__main__":
    exit_on_user_error(main)()
