"""The run's metrics files as every rung writes them: metrics.csv, TensorBoard scalars under tensorboard/ and
hparams.yaml, with the same names and rows (at each epoch's end, dev_loss then train_loss, at the index of the
epoch's last optimizer step, as Lightning logs epoch-end values).

The Trainer has no CSV logger, and its TensorBoard callback (`report_to="tensorboard"`) names the scalars its own
way (`eval/dev_loss`, `train/loss`) and logs the mean over optimizer steps, not the epoch's batch-size-weighted
mean. So this `TrainerCallback` writes them, through Lightning Fabric's loggers (the files Fabric's rung writes).
"""

from __future__ import annotations

import math
from pathlib import Path

from lightning_fabric.loggers import CSVLogger, TensorBoardLogger
from torchmetrics import MeanMetric
from transformers import TrainerCallback

from shared.logged_rows import LoggedRows
from vanilla.loggers import save_hparams


class MetricsFiles(TrainerCallback):
    def __init__(self, output_dir: Path, hparams: dict, train_loss: MeanMetric, resuming: bool = False):
        self.output_dir, self.hparams, self.train_loss = Path(output_dir), hparams, train_loss
        self.resuming = resuming
        self.epoch_ended = False  # an evaluation outside an epoch's end (a user's `evaluate()`) logs no row
        self.loggers = [CSVLogger(output_dir, name="", version=""),
                        TensorBoardLogger(output_dir, name="tensorboard", version="", default_hp_metric=False)]

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            for log_dir in (self.output_dir, Path(self.loggers[1].log_dir)):
                log_dir.mkdir(parents=True, exist_ok=True)
                save_hparams(log_dir, self.hparams)
            if self.resuming:  # Fabric's CSVLogger starts metrics.csv anew: log again the rows before the checkpoint
                LoggedRows(self.output_dir / "metrics.csv").log_again(self.loggers[0], state.global_step)

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch_ended = True

    def on_evaluate(self, args, state, control, metrics, **kwargs):
        if not self.epoch_ended:
            return
        self.epoch_ended = False
        epoch = math.ceil(state.epoch) - 1  # the Trainer's epoch is fractional: e + batches done / batches per epoch
        train_loss = self.train_loss.compute().item()
        self.train_loss.reset()
        if not state.is_world_process_zero:
            return
        for row in ({"dev_loss": metrics["eval_dev_loss"], "epoch": epoch}, {"train_loss": train_loss, "epoch": epoch}):
            for logger in self.loggers:
                logger.log_metrics(row, step=state.global_step - 1)
        for logger in self.loggers:
            logger.save()  # on disk at each epoch's end: a run killed later keeps the rows (the Fabric rung's too)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            for logger in self.loggers:
                logger.finalize("success")
