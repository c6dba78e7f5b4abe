"""Export for plain transformers: `save_pretrained` of the model and its tokenizer in one directory."""

from __future__ import annotations

from pathlib import Path


def export_pretrained(model, tokenizer, directory: str | Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
