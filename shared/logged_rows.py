"""The rows of metrics.csv that a resumed run logs again. Lightning's and Fabric's CSVLogger delete the file when
they first write, so a resumed run reads it before that, keeps a copy beside it until the rows are safe again, and
logs again the rows logged before its checkpoint (a row's `step` is below the checkpoint's global step); those the
interrupted run logged after it are dropped. Framework-free: the logger is any with `log_metrics(metrics, step)`
and `save()` (the Fabric trainer's CSVLogger; the Lightning trainer's, from a callback)."""

from __future__ import annotations

import csv
from pathlib import Path


class LoggedRows:
    """metrics.csv as the resumed run found it (or the copy a run killed in between left); rank 0 (`is_writer`)
    alone touches files."""

    def __init__(self, metrics_csv: Path, is_writer: bool = True):
        self.path, self.backup = metrics_csv, metrics_csv.with_name(f".{metrics_csv.name}.before-resume")
        self.is_writer = is_writer
        source = metrics_csv if metrics_csv.is_file() else self.backup
        self.text = source.read_bytes() if source.is_file() else None
        if self.text is not None and source is metrics_csv and is_writer:
            self.backup.write_bytes(self.text)

    def log_again(self, logger, global_step: int) -> None:
        """Log through `logger` the rows logged before `global_step`; then the copy is no longer needed."""
        if self.text is None:
            return
        for row in csv.DictReader(self.text.decode().splitlines()):
            if int(row["step"]) < global_step:
                logger.log_metrics({key: int(value) if key == "epoch" else float(value)
                                    for key, value in row.items() if value != "" and key != "step"},
                                   step=int(row["step"]))
        logger.save()
        self.forget()

    def put_back(self) -> None:
        """The run failed before logging them again (a refused checkpoint, say): metrics.csv as it was."""
        if self.text is not None and self.is_writer:
            self.path.write_bytes(self.text)
        self.forget()

    def forget(self) -> None:
        if self.text is not None and self.is_writer:
            self.backup.unlink(missing_ok=True)
        self.text = None
