"""metrics.csv, hparams.yaml and TensorBoard events (Lightning: `loggers.CSVLogger` and `TensorBoardLogger`).

metrics.csv has Lightning's CSVLogger layout: one row per logging call holding the logged values plus `epoch`
and `step` (for epoch-end values, the index of the epoch's last optimizer step, as Lightning logs them), columns
sorted by name, empty cells for values a row does not hold.
Rows are appended as they come, so a crash loses nothing already logged. hparams.yaml is `yaml.dump` of the
run's settings, as Lightning writes it.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import yaml


class CSVLogger:
    def __init__(self, log_dir: str | Path):
        self.path = Path(log_dir) / "metrics.csv"
        self.keys: list[str] = []
        self.rows: list[dict] = []
        if self.path.exists():
            with open(self.path, newline="") as handle:
                reader = csv.DictReader(handle)
                self.keys = list(reader.fieldnames or [])
                self.rows = list(reader)

    def truncate(self, rows: int) -> None:
        """On resume: keep the first `rows` rows, dropping those the interrupted run logged after its checkpoint."""
        if len(self.rows) > rows:
            self.rows = self.rows[:rows]
            self._rewrite()

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        row = dict(metrics, step=step)
        self.rows.append(row)
        if set(row) - set(self.keys):
            self.keys = sorted(set(self.keys) | set(row))
            self._rewrite()
        else:
            with open(self.path, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=self.keys).writerow(row)

    def close(self) -> None:
        pass  # every row is on disk as soon as it is logged

    def _rewrite(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.keys)
            writer.writeheader()
            writer.writerows(self.rows)
        os.replace(tmp, self.path)


def save_hparams(log_dir: str | Path, hparams: dict) -> None:
    with open(Path(log_dir) / "hparams.yaml", "w", newline="") as handle:
        yaml.dump(hparams, handle)


class TensorBoardLogger:
    """Scalars under <output-dir>/tensorboard, one tag per metric, x axis = optimizer steps."""

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter  # imported late: it pulls in tensorboard

        self.writer = SummaryWriter(log_dir=str(Path(log_dir) / "tensorboard"))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            if name != "epoch":
                self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def open_loggers(output_dir: str | Path, hparams: dict, logged_rows: int | None = None) -> list:
    """metrics.csv (on resume: its first `logged_rows` rows kept, those logged after the checkpoint dropped),
    TensorBoard, and hparams.yaml beside each (Lightning's TensorBoardLogger keeps a copy in its folder too)."""
    csv_logger, tensorboard = CSVLogger(output_dir), TensorBoardLogger(output_dir)
    if logged_rows is not None:
        csv_logger.truncate(logged_rows)
    save_hparams(output_dir, hparams)
    save_hparams(Path(output_dir) / "tensorboard", hparams)
    return [csv_logger, tensorboard]
