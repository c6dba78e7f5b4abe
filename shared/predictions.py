"""The test phase's files, written the same way by both trainers: predictions.jsonl and test_metrics.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

from shared.metrics import qg_scores
from shared.squad import QGExample


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_test_report(output_dir: Path, examples: list[QGExample], generated: list[str], checkpoint: str) -> dict:
    """One JSON line per example (id, context, answer, reference, generated), then the scores."""
    lines = [json.dumps({"id": e.id, "context": e.context, "answer": e.answer, "reference": e.question,
                         "generated": g}, ensure_ascii=False) for e, g in zip(examples, generated, strict=True)]
    _write_atomically(output_dir / "predictions.jsonl", "\n".join(lines) + "\n")
    report = {**qg_scores(generated, [e.question for e in examples]), "num_examples": len(examples),
              "checkpoint": Path(checkpoint).name}
    _write_atomically(output_dir / "test_metrics.json", json.dumps(report, indent=2) + "\n")
    return report
