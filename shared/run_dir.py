"""The output directory of a run: what it holds, and refusing to overwrite a previous run by accident."""

from __future__ import annotations

import shutil
from pathlib import Path

from shared.errors import UserError

# Everything a run writes, for both trainers (the same artifact tree).
ARTIFACTS = ("checkpoints", "metrics.csv", "hparams.yaml", "tensorboard", "predictions.jsonl",
             "test_metrics.json", "export", "tokenizer", "data")


def holds_run(output_dir: Path) -> bool:
    return any((output_dir / name).exists() for name in ("checkpoints", "metrics.csv"))


def prepare_output_dir(output_dir: Path, resume: str | None, overwrite: bool) -> None:
    """Fresh runs need an empty place: refuse a directory holding a run unless --overwrite says to replace it."""
    if output_dir.exists() and not output_dir.is_dir():
        raise UserError(f"--output-dir {output_dir}: exists and is not a directory")
    if resume is None and holds_run(output_dir):
        if not overwrite:
            raise UserError(f"--output-dir {output_dir} already holds a run: continue it with --resume last, "
                            f"or replace it with --overwrite")
        for name in ARTIFACTS:
            path = output_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    output_dir.mkdir(parents=True, exist_ok=True)


def resolve_resume_path(output_dir: Path, resume: str) -> Path:
    path = output_dir / "checkpoints" / "last.ckpt" if resume == "last" else Path(resume)
    if not path.is_file():
        raise UserError(f"--resume {resume}: no checkpoint at {path}")
    return path
