"""The steps every trainer takes before training, in one order: data files, tokenizer, datasets, model.

None of the data steps draws from torch's generator, so a trainer may seed before or after them; the model's
random initialisation must come after seeding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.data import DataFiles, QGDataset, resolve_data_files
from shared.loader_workers import start_loader_workers_from_a_fork_server
from shared.model import build_model
from shared.squad import read_squad
from shared.tokenizer import load_pretrained_tokenizer, train_tokenizer


@dataclass
class PreparedData:
    files: DataFiles
    tokenizer: object
    train: QGDataset
    dev: QGDataset
    test: QGDataset
    skipped_unanswerable: dict[str, int]


def prepare_data(args, output_dir: Path, save_tokenizer: bool) -> PreparedData:
    files = resolve_data_files(args.data_dir, args.train_file, args.dev_file, args.test_file,
                               synthetic_dir=output_dir / "data")
    splits = {name: read_squad(getattr(files, name)) for name in ("train", "dev", "test")}
    if args.model is not None:
        tokenizer = load_pretrained_tokenizer(args.model)
    else:
        train_examples = splits["train"].examples
        tokenizer = train_tokenizer([e.context for e in train_examples] + [e.question for e in train_examples],
                                    vocab_size=args.vocab_size)
    if save_tokenizer:
        tokenizer.save_pretrained(output_dir / "tokenizer")
    datasets = {name: QGDataset(split.examples, tokenizer, args.max_source_length, args.max_target_length)
                for name, split in splits.items()}
    if args.num_workers > 0:
        start_loader_workers_from_a_fork_server()
    return PreparedData(files, tokenizer, datasets["train"], datasets["dev"], datasets["test"],
                        {name: split.skipped_unanswerable for name, split in splits.items()})


def make_model(args, tokenizer):
    """Call after seeding: a from-scratch BART draws its initial weights from the global generator."""
    return build_model(tokenizer, size=args.model_size, pretrained=args.model,
                       max_positions=max(args.max_source_length, args.max_target_length))
