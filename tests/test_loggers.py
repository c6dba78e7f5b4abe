"""metrics.csv and hparams.yaml byte for byte as Lightning's CSVLogger writes them."""

from __future__ import annotations

import warnings

import torch

from vanilla.loggers import CSVLogger, save_hparams

ROWS = [({"dev_loss": torch.tensor(1.2345678).item(), "epoch": 0}, 13),
        ({"train_loss": torch.tensor(2.5).item(), "epoch": 0}, 13),
        ({"dev_loss": 0.987654321, "epoch": 1}, 26),
        ({"train_loss": 1.75, "epoch": 1}, 26)]
HPARAMS = {"lr": 0.001, "batch_size": 32, "data_dir": None, "limit_train_batches": 1.0, "strategy": "auto",
           "auto_batch_size": None, "resume": None}


def test_same_files_as_lightning_csv_logger(tmp_path):
    from pytorch_lightning.loggers import CSVLogger as LightningCSVLogger

    theirs_dir, mine_dir = tmp_path / "theirs", tmp_path / "mine"
    mine_dir.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = LightningCSVLogger(save_dir=str(theirs_dir), name="", version="")
        theirs.log_hyperparams(HPARAMS)
        for metrics, step in ROWS:
            theirs.log_metrics(metrics, step=step)
        theirs.save()
    mine = CSVLogger(mine_dir)
    for metrics, step in ROWS:
        mine.log_metrics(metrics, step=step)
    save_hparams(mine_dir, HPARAMS)
    assert (mine_dir / "metrics.csv").read_bytes() == (theirs_dir / "metrics.csv").read_bytes()
    assert (mine_dir / "hparams.yaml").read_bytes() == (theirs_dir / "hparams.yaml").read_bytes()


def test_rows_are_on_disk_as_they_are_logged_and_resume_truncates(tmp_path):
    logger = CSVLogger(tmp_path)
    logger.log_metrics({"dev_loss": 1.0, "epoch": 0}, step=10)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["dev_loss,epoch,step", "1.0,0,10"]
    logger.log_metrics({"train_loss": 2.0, "epoch": 0}, step=10)
    logger.log_metrics({"dev_loss": 0.5, "epoch": 1}, step=20)
    reopened = CSVLogger(tmp_path)
    reopened.truncate(2)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == \
        ["dev_loss,epoch,step,train_loss", "1.0,0,10,", ",0,10,2.0"]
