"""What a run prints about itself at the start and at the end: the same lines from every trainer."""

from __future__ import annotations

import time
from pathlib import Path

from shared.model import count_parameters


def start_line(data, model, placement: str) -> str:
    """`data: ... examples; model: N parameters; <strategy> on <devices>`, with any skipped SQuAD v2.0 questions."""
    notes = ["synthetic corpus"] if data.files.synthetic else []
    skipped = data.skipped_unanswerable
    if any(skipped.values()):
        notes.append("unanswerable SQuAD v2.0 questions skipped: "
                     + ", ".join(f"{count} {split}" for split, count in skipped.items() if count))
    noted = f" ({'; '.join(notes)})" if notes else ""
    return (f"data: {len(data.train)} train / {len(data.dev)} dev / {len(data.test)} test examples{noted}; "
            f"model: {count_parameters(model):,} parameters; {placement}")


def end_lines(scores: dict, checkpoint: str, export_dir: Path, started: float) -> str:
    return ("test: " + " ".join(f"{k}={v:.4f}" for k, v in scores.items() if isinstance(v, float)) + "\n"
            f"done in {time.perf_counter() - started:.1f}s: best checkpoint {checkpoint}; "
            f"model exported to {export_dir}")
