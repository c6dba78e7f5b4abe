"""Shared fixtures: a small synthetic data set and the command line of a tiny, fast run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.synthetic import write_synthetic_squad

REPO = Path(__file__).resolve().parents[1]
PYTHON_ENV = {"PYTHONWARNINGS": "ignore"}


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """200 train / 48 dev / 24 test questions in SQuAD v1.1 files."""
    directory = tmp_path_factory.mktemp("tiny-data")
    write_synthetic_squad(directory, seed=7, sizes={"train": 200, "dev": 48, "test": 24})
    return directory


def tiny_args(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """A run that takes a few seconds: tiny BART, small vocabulary, 3 epochs."""
    return ["--data-dir", str(data_dir), "--output-dir", str(output_dir), "--model-size", "tiny",
            "--vocab-size", "400", "--batch-size", "16", "--max-epochs", "3", "--warmup-steps", "4",
            "--num-beams", "2", "--max-target-length", "16", "--lr", "3e-3", *extra]


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document, encoding="utf-8")
    return path


def squad_doc(*qas, context: str = "Ada Lovelace was born in London in 1815.") -> dict:
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": list(qas)}]}]}


def qa(id_: str, question: str, text: str, start: int, **extra) -> dict:
    return {"id": id_, "question": question, "answers": [{"text": text, "answer_start": start}], **extra}
