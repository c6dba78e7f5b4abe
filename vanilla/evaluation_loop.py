"""The test phase after fit (Lightning: `trainer.test(ckpt_path=best or last)` and its evaluation loop).

Loads the best checkpoint's weights (or last.ckpt when no best exists), generates a question for every test
example by beam search, scores BLEU-1..4 and ROUGE-L, and writes predictions.jsonl and test_metrics.json. Under
DDP every rank loads the checkpoint and generates for its share of the batches; rank 0 gathers them, in order,
and writes the files (`shared.predictions`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader, Subset

from shared.checkpoint_dict import load_model_weights
from shared.checkpoint_file import read_checkpoint
from shared.data import PadCollator, QGDataset
from shared.decoding import generate_questions
from shared.errors import UserError
from shared.predictions import in_test_order, share_of_test_set, write_test_report
from vanilla import ddp
from vanilla.model_checkpoint import ModelCheckpoint
from vanilla.precision import Precision

ONE_PROCESS = ddp.ProcessInfo()


def checkpoint_to_test(checkpoint: ModelCheckpoint) -> str:
    path = checkpoint.best_model_path or checkpoint.last_model_path
    if not path:
        raise UserError("training wrote no checkpoint, so there is nothing to test")
    return path


def run_test(model: torch.nn.Module, tokenizer, dataset: QGDataset, ckpt_path: str, device: torch.device,
             precision: Precision, batch_size: int, num_beams: int, max_new_tokens: int,
             output_dir: Path, process: ddp.ProcessInfo = ONE_PROCESS) -> dict | None:
    """The scores on rank 0; None on the other ranks."""
    load_model_weights(model, read_checkpoint(ckpt_path), ckpt_path)
    model.to(device).eval()
    share = Subset(dataset, share_of_test_set(len(dataset), batch_size, process.rank, process.world_size))
    loader = DataLoader(share, batch_size=batch_size, shuffle=False, collate_fn=PadCollator(tokenizer.pad_token_id))
    batches: list[list[str]] = []
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        with precision.forward_context():
            batches.append(generate_questions(model, tokenizer, batch, num_beams, max_new_tokens))
    batches_of_each_rank = ddp.gather_objects(batches)
    if not process.is_global_zero:
        return None
    return write_test_report(output_dir, dataset.examples, in_test_order(batches_of_each_rank), ckpt_path)
