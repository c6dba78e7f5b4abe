"""Question generation on SQuAD, trained with PyTorch Lightning 2.6: the same job as vanilla/train.py, with
Lightning's own Trainer, callbacks and loggers doing what vanilla/ writes by hand.

Work in progress (issue 3): fit, validation, early stopping, top-k checkpoints, CSV/TensorBoard logging, the
test phase and the export are here; exact resume, the batch-size search and the dp mapping are not yet.
Run from the repository root: `python lightning/train.py --help`.
"""

from __future__ import annotations

import sys
from pathlib import Path

# As in vanilla/train.py: the repository root on the path instead of this folder, so that `import lightning`
# anywhere (Lightning's own packages import it) can never pick up this folder.
REPO_ROOT = Path(__file__).resolve().parents[1]
if sys.path[0] in ("", str(Path(__file__).resolve().parent)):
    sys.path[0] = str(REPO_ROOT)

import time  # noqa: E402

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint  # noqa: E402
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from transformers import get_constant_schedule_with_warmup  # noqa: E402

from shared.cli import parse_args  # noqa: E402
from shared.data import PadCollator  # noqa: E402
from shared.decoding import generate_questions  # noqa: E402
from shared.errors import UserError, exit_on_user_error  # noqa: E402
from shared.export import export_pretrained  # noqa: E402
from shared.model import seq2seq_loss  # noqa: E402
from shared.pipeline import make_model, prepare_data  # noqa: E402
from shared.run_dir import prepare_output_dir  # noqa: E402
from shared.test_report import write_test_report  # noqa: E402

PROG = "lightning/train.py"
DEFAULT_OUTPUT_DIR = "runs/lightning"


class QGDataModule(pl.LightningDataModule):
    def __init__(self, data, batch_size: int, num_workers: int):
        super().__init__()
        self.data = data
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.collate = PadCollator(data.tokenizer.pad_token_id)

    def _loader(self, dataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, collate_fn=self.collate,
                          num_workers=self.num_workers)

    def train_dataloader(self):
        return self._loader(self.data.train, shuffle=True)

    def val_dataloader(self):
        return self._loader(self.data.dev, shuffle=False)

    def test_dataloader(self):
        return self._loader(self.data.test, shuffle=False)


class QGModule(pl.LightningModule):
    def __init__(self, model, tokenizer, config: dict):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.save_hyperparameters(config)
        self.generated: list[str] = []

    def training_step(self, batch, batch_idx):
        loss = seq2seq_loss(self.model, batch)
        self.log("train_loss", loss, on_step=False, on_epoch=True, batch_size=batch["input_ids"].size(0))
        return loss

    def validation_step(self, batch, batch_idx):
        loss = seq2seq_loss(self.model, batch)
        self.log("dev_loss", loss, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=batch["input_ids"].size(0))

    def test_step(self, batch, batch_idx):
        self.generated += generate_questions(self.model, self.tokenizer, batch, self.hparams.num_beams,
                                             self.hparams.max_target_length)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.model.parameters(), lr=self.hparams.lr,
                                      weight_decay=self.hparams.weight_decay)
        scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=self.hparams.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(PROG, DEFAULT_OUTPUT_DIR, argv)
    if args.resume or args.auto_batch_size or args.strategy == "dp" or args.checkpoint_every_n_steps:
        raise UserError("lightning/train.py does not support --resume, --auto-batch-size, --strategy dp or "
                        "--checkpoint-every-n-steps yet (work in progress); use vanilla/train.py")
    started = time.perf_counter()
    output_dir = Path(args.output_dir)
    prepare_output_dir(output_dir, args.resume, args.overwrite)
    pl.seed_everything(args.seed, verbose=False)
    data = prepare_data(args, output_dir, save_tokenizer=True)
    module = QGModule(make_model(args, data.tokenizer), data.tokenizer, dict(vars(args)))
    datamodule = QGDataModule(data, args.batch_size, args.num_workers)
    checkpoint = ModelCheckpoint(dirpath=output_dir / "checkpoints", monitor="dev_loss", mode="min",
                                 filename="{epoch}-{dev_loss:.2f}", save_top_k=args.save_top_k, save_last=True)
    trainer = pl.Trainer(
        max_epochs=args.max_epochs, accelerator=args.accelerator, devices=args.devices, strategy=args.strategy,
        precision=args.precision, gradient_clip_val=args.gradient_clip_val or None,
        accumulate_grad_batches=args.accumulate_grad_batches, limit_train_batches=args.limit_train_batches,
        callbacks=[EarlyStopping(monitor="dev_loss", mode="min", patience=args.patience,
                                 min_delta=args.min_delta), checkpoint],
        logger=[CSVLogger(output_dir, name="", version=""),
                TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)],
        default_root_dir=output_dir, enable_model_summary=False)
    trainer.fit(module, datamodule=datamodule)
    ckpt_path = checkpoint.best_model_path or checkpoint.last_model_path
    module.generated = []
    trainer.test(module, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False)
    if not trainer.is_global_zero:
        return {}
    report = write_test_report(output_dir, data.test.examples, module.generated, ckpt_path)
    export_pretrained(module.model, data.tokenizer, output_dir / "export")
    print(f"done in {time.perf_counter() - started:.1f}s: best checkpoint {ckpt_path}")
    return report


if __name__ == "__main__":
    exit_on_user_error(main)()
