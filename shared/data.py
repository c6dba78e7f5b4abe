"""The QG Dataset: highlighted context -> question, tokenised once, padded per batch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from shared.errors import UserError
from shared.squad import HIGHLIGHT, QGExample
from shared.synthetic import write_synthetic_squad

LABEL_PAD = -100  # ignored by the cross-entropy loss


@dataclass(frozen=True)
class DataFiles:
    train: Path
    dev: Path
    test: Path
    synthetic: bool


def resolve_data_files(data_dir: str | None, train: str | None, dev: str | None, test: str | None,
                       synthetic_dir: Path, seed: int = 1234) -> DataFiles:
    """Pick the data: explicit files win over --data-dir; with neither, write the synthetic corpus."""
    if data_dir is None and train is None and dev is None and test is None:
        paths = write_synthetic_squad(synthetic_dir, seed=seed)
        return DataFiles(paths["train"], paths["dev"], paths["test"], synthetic=True)
    files = {}
    for split, explicit in (("train", train), ("dev", dev), ("test", test)):
        if explicit is not None:
            files[split] = Path(explicit)
        elif data_dir is not None:
            files[split] = Path(data_dir) / f"{split}.json"
        else:
            raise UserError(f"--{split}-file is missing: give all three of --train-file/--dev-file/--test-file, "
                            f"or --data-dir DIR holding train.json, dev.json and test.json")
    return DataFiles(files["train"], files["dev"], files["test"], synthetic=False)


def encode_source(tokenizer, example: QGExample, max_length: int) -> list[int]:
    """Token ids of the highlighted context, windowed around the answer when the context is too long.

    Plain truncation would cut the answer (and so the question's subject) off a long context. Instead the
    context is tokenised in full and a window of `max_length` tokens is taken that keeps both [HL] markers,
    centred on the answer where the context allows it.
    """
    ids = tokenizer(example.highlighted_context, add_special_tokens=False)["input_ids"]
    budget = max_length - 2  # room for <s> and </s>
    if len(ids) > budget:
        hl = tokenizer.convert_tokens_to_ids(HIGHLIGHT)
        first = ids.index(hl)
        last = len(ids) - 1 - ids[::-1].index(hl)
        span = last - first + 1
        if span >= budget:  # the answer alone is longer than the window: keep its start
            start = first
        else:
            start = max(0, min(first - (budget - span) // 2, len(ids) - budget))
        ids = ids[start:start + budget]
    return [tokenizer.bos_token_id, *ids, tokenizer.eos_token_id]


def encode_target(tokenizer, question: str, max_length: int) -> list[int]:
    return tokenizer(question, truncation=True, max_length=max_length)["input_ids"]


class QGDataset(Dataset):
    """Pre-tokenised examples; `__getitem__` returns plain lists, `PadCollator` pads a batch."""

    def __init__(self, examples: list[QGExample], tokenizer, max_source_length: int, max_target_length: int):
        self.examples = examples
        self.sources = [encode_source(tokenizer, e, max_source_length) for e in examples]
        self.targets = [encode_target(tokenizer, e.question, max_target_length) for e in examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict:
        return {"input_ids": self.sources[index], "labels": self.targets[index], "index": index}


class PadCollator:
    """Dynamic padding: each batch is padded to its own longest sequence, labels with -100."""

    def __init__(self, pad_token_id: int, with_index: bool = True):
        self.pad_token_id = pad_token_id
        # transformers' Trainer strips from each example what the model's forward does not take (`index`)
        self.with_index = with_index

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        source_len = max(len(item["input_ids"]) for item in items)
        target_len = max(len(item["labels"]) for item in items)
        input_ids = torch.full((len(items), source_len), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(items), source_len), dtype=torch.long)
        labels = torch.full((len(items), target_len), LABEL_PAD, dtype=torch.long)
        for row, item in enumerate(items):
            input_ids[row, : len(item["input_ids"])] = torch.tensor(item["input_ids"])
            attention_mask[row, : len(item["input_ids"])] = 1
            labels[row, : len(item["labels"])] = torch.tensor(item["labels"])
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if self.with_index:
            batch["index"] = torch.tensor([item["index"] for item in items], dtype=torch.long)
        return batch
