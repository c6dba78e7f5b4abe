"""Question generation on SQuAD in plain PyTorch Lightning 2.6, written as Lightning's documentation teaches it: a
LightningDataModule, a LightningModule, EarlyStopping and ModelCheckpoint, the CSV and TensorBoard loggers, the
Tuner's batch-size search, then `fit` and `test` on the best checkpoint. Run from the repository root:
`python lightning/plain_lightning.py --help` (the command line every trainer here shares).

None of the project's own additions are here: lightning/train.py adds them to these classes and functions. What
plain Lightning leaves undone for this job (tests/test_lightning.py shows the first):
- a run resumed mid-epoch (`--resume PATH`) starts the epoch on a fresh shuffle: other batches, other weights;
- `--resume last` looks for last.ckpt in this run's own directory only, so without --output-dir, where Lightning's
  logger opens a new version, it warns and starts afresh; and the CSV logger starts metrics.csv anew on resume;
- SIGTERM or Ctrl-C ends the run without a checkpoint to resume from;
- the Tuner restores the weights after its trials, not the random generators, so a searched run trains otherwise
  than one started at the size found, and hparams.yaml keeps the size it started from (the loggers write the
  hparams of `__init__`); `--strategy dp` no longer exists (Lightning 2.0 removed it);
- errors end in Lightning's tracebacks, and two runs given one --output-dir write into it together.
"""

from __future__ import annotations

import sys
from pathlib import Path

if sys.path[0] in ("", str(Path(__file__).resolve().parent)):  # run as a script: import `shared` from the root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.tuner import Tuner
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric
from transformers import get_constant_schedule_with_warmup

from shared.cli import parse_args
from shared.data import PadCollator
from shared.decoding import generate_questions
from shared.export import export_pretrained
from shared.model import seq2seq_loss
from shared.pipeline import make_model, prepare_data
from shared.predictions import write_test_report


class QGDataModule(pl.LightningDataModule):
    def __init__(self, data, batch_size: int, num_workers: int):
        super().__init__()
        self.data = data
        self.batch_size = batch_size  # the Tuner's batch-size search rewrites this
        self.num_workers = num_workers
        self.collate = PadCollator(data.tokenizer.pad_token_id)

    def loader(self, dataset, shuffle: bool = False) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, collate_fn=self.collate,
                          num_workers=self.num_workers)

    def train_dataloader(self):
        return self.loader(self.data.train, shuffle=True)

    def val_dataloader(self):
        return self.loader(self.data.dev)

    def test_dataloader(self):
        return self.loader(self.data.test)


class QGModule(pl.LightningModule):
    def __init__(self, model, tokenizer, config: dict):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.save_hyperparameters(config)  # hparams.yaml
        # The epoch's batch-size-weighted mean loss over this process's batches, a torchmetrics metric as Lightning
        # logs one (a module attribute, its state in reach of a callback). A NaN loss keeps the mean NaN
        # (torchmetrics' nan_strategy="disable" would also drop the weights).
        self.train_loss = MeanMetric(nan_strategy=float("nan"), sync_on_compute=False)
        self.generated: list[list[str]] = []  # the questions of each test batch

    def training_step(self, batch, batch_idx):
        loss = seq2seq_loss(self.model, batch)
        self.train_loss.update(loss.detach(), weight=batch["input_ids"].size(0))
        self.log("train_loss", self.train_loss, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx):
        loss = seq2seq_loss(self.model, batch)
        self.log("dev_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=batch["input_ids"].size(0))

    def test_step(self, batch, batch_idx):
        self.generated.append(generate_questions(self.model, self.tokenizer, batch, self.hparams.num_beams,
                                                 self.hparams.max_target_length))

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=self.hparams.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def run_root(args) -> Path:
    """Where the run writes: --output-dir; else runs/<--name>/, under which Lightning's loggers number versions."""
    return Path(args.output_dir) if args.output_dir else Path("runs") / (args.name or "lightning-plain")


def loggers(args) -> list:
    """metrics.csv and TensorBoard (in tensorboard/), each with its hparams.yaml: in --output-dir itself, or in the
    next runs/<--name>/version_N the CSV logger numbers."""
    version = "" if args.output_dir else None
    csv_logger = CSVLogger(run_root(args), name="", version=version)
    return [csv_logger, TensorBoardLogger(run_root(args), name="", version=csv_logger.version, sub_dir="tensorboard",
                                          default_hp_metric=False)]


def callbacks(args, dirpath: Path | None = None) -> tuple[EarlyStopping, ModelCheckpoint]:
    """The seed's two callbacks; checkpoints in `dirpath`, by default where Lightning puts them: the logger's run
    directory."""
    return (EarlyStopping(monitor="dev_loss", mode="min", patience=args.patience, min_delta=args.min_delta),
            ModelCheckpoint(dirpath=dirpath, monitor="dev_loss", mode="min", filename="{epoch}-{dev_loss:.2f}",
                            save_top_k=args.save_top_k, save_last=True))


def step_checkpoints(args) -> list[ModelCheckpoint]:
    """With --checkpoint-every-n-steps, a checkpoint every N optimizer steps; the latest one is kept."""
    if not args.checkpoint_every_n_steps:
        return []
    return [ModelCheckpoint(filename="{epoch}-{step}", every_n_train_steps=args.checkpoint_every_n_steps)]


def make_trainer(args, callbacks: list, logger, strategy=None, precision=None, **flags) -> pl.Trainer:
    """The job's Trainer; lightning/train.py gives the strategy and precision it settled on, and more flags."""
    return pl.Trainer(max_epochs=args.max_epochs, limit_train_batches=args.limit_train_batches,
                      accumulate_grad_batches=args.accumulate_grad_batches,
                      gradient_clip_val=args.gradient_clip_val or None, accelerator=args.accelerator,
                      devices=args.devices, num_nodes=args.num_nodes, strategy=strategy or args.strategy,
                      precision=precision or args.precision, callbacks=callbacks, logger=logger,
                      enable_model_summary=False, default_root_dir=run_root(args), **flags)


def main(argv: list[str] | None = None) -> dict | None:
    args = parse_args("lightning/plain_lightning.py", "lightning-plain", argv)
    pl.seed_everything(args.seed, verbose=False)
    data = prepare_data(args, run_root(args), save_tokenizer=rank_zero_only.rank == 0)
    module = QGModule(make_model(args, data.tokenizer), data.tokenizer, dict(vars(args)))
    datamodule = QGDataModule(data, args.batch_size, args.num_workers)
    early_stopping, checkpoint = callbacks(args)
    trainer = make_trainer(args, [early_stopping, checkpoint, *step_checkpoints(args)], loggers(args))
    if args.auto_batch_size:
        Tuner(trainer).scale_batch_size(module, datamodule=datamodule, mode=args.auto_batch_size)
    trainer.fit(module, datamodule=datamodule, ckpt_path=args.resume, weights_only=True)
    run_dir = Path(trainer.log_dir)  # rank 0's, broadcast to every rank
    if not trainer.is_global_zero:
        return None
    # Tested on one device, as Lightning advises: under DDP its DistributedSampler pads the ranks' shares
    tester = pl.Trainer(accelerator=args.accelerator, devices=1, precision=args.precision, logger=False)
    tester.test(module, datamodule=datamodule, ckpt_path=checkpoint.best_model_path, weights_only=True)
    generated = [question for batch in module.generated for question in batch]
    report = write_test_report(run_dir, data.test.examples, generated, checkpoint.best_model_path)
    export_pretrained(module.model, data.tokenizer, run_dir / "export")
    print(f"test: {report}")
    return report


if __name__ == "__main__":
    main()
