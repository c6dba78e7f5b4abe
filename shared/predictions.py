"""The test phase's share of work under DDP, and its files, written the same way by every trainer:
predictions.jsonl and test_metrics.json.

Under DDP every rank generates for its share of the test set, so that no rank waits in a collective while
another works through the whole phase (a long test phase would outlast the process group's timeout). The shares
are whole batches of the one-process loader, dealt in turn (rank r takes batches r, r+W, r+2W, ...): each batch
holds the same examples, with the same padding, as in one process, so the predictions are the same, and the
ranks finish within one batch of each other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from shared.metrics import qg_scores
from shared.squad import QGExample


def share_of_test_set(num_examples: int, batch_size: int, rank: int, world_size: int) -> list[int]:
    """The example indices of this rank's batches, in order: an unshuffled loader with the same batch size over
    them yields exactly those batches (only the last batch of all can be short, and it comes last here too)."""
    starts = range(rank * batch_size, num_examples, world_size * batch_size)
    return [index for start in starts for index in range(start, min(start + batch_size, num_examples))]


def in_test_order(batches_of_each_rank: list[list[list[str]]]) -> list[str]:
    """Every rank's generated batches (rank order) back in the one-process order of the batches."""
    world_size, generated = len(batches_of_each_rank), []
    for number in range(sum(map(len, batches_of_each_rank))):
        generated += batches_of_each_rank[number % world_size][number // world_size]
    return generated


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
