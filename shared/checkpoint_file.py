"""Reading a checkpoint a user points at, with one-line errors (the frameworks would end in a traceback): safe
loading, the checks that it is this project's and fits the model, and which trainer wrote it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from shared.errors import UserError

PREFIX = "model."  # every trainer keeps the seq2seq model as `self.model`: its weights are `model.*`


class CheckpointError(UserError):
    """A checkpoint that cannot be written or read; the message names the file."""


def read_checkpoint(path: str | Path, load: Callable[[Path], object] | None = None) -> dict:
    """`torch.load(weights_only=True)` (or `load`, which must be as safe: Fabric's `load(path, weights_only=True)`):
    reading a checkpoint cannot run code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        checkpoint = load(path) if load else torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- torch.load fails in many ways on a bad file (even KeyError)
        raise unreadable(path, error) from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a checkpoint of this project (no 'state_dict')")
    return checkpoint


def unreadable(path: str | Path, error: Exception) -> CheckpointError:
    """A checkpoint file that failed to load, in one line: its path and the first line of the reason."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return CheckpointError(f"{path}: not a readable checkpoint ({first_line[:200]})")


def check_weights_fit(model: torch.nn.Module, checkpoint: dict, path: str | Path) -> None:
    """Every `model.*` tensor of the checkpoint exists in `model` with the same shape, and none is missing."""
    expected = {PREFIX + name: tensor for name, tensor in model.state_dict().items()}
    saved = {name: tensor for name, tensor in checkpoint["state_dict"].items() if name.startswith(PREFIX)}
    for name, tensor in saved.items():
        if name not in expected or expected[name].shape != tensor.shape:
            raise CheckpointError(f"{path}: weights do not fit this model configuration ({name}: "
                                  f"{tuple(tensor.shape)} in the checkpoint)")
    missing = sorted(set(expected) - set(saved))
    if missing:
        raise CheckpointError(f"{path}: weights do not fit this model configuration ({missing[0]} is missing)")


def written_by(checkpoint: dict) -> str | None:
    """The trainer whose loop state the checkpoint holds (each reads only its own; weights load anywhere)."""
    if "fit_loop" in checkpoint.get("loops", {}):
        return "lightning"
    if checkpoint.get("trainer") == "fabric":
        return "fabric"
    if "loop_state" in checkpoint:
        return "vanilla"
    return None


def check_resumable_by(trainer: str, checkpoint: dict, path: str | Path) -> None:
    writer = written_by(checkpoint)
    if writer is not None and writer != trainer:
        raise CheckpointError(f"{path}: was written by {writer}/train.py, whose loop state {trainer}/train.py does "
                              f"not read; resume it with {writer}/train.py (its weights load anywhere)")


def cannot_write(path: str | Path, error: OSError) -> CheckpointError:
    """A checkpoint write that failed (a full disk, say): the file it was to replace is untouched."""
    return CheckpointError(f"cannot write checkpoint {path}: {error.strerror or error}; the previous checkpoint, "
                           f"if any, is intact")


def model_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A checkpoint's model weights, named `model.*`: from a .ckpt file in Lightning's layout (vanilla/, fabric/,
    lightning/), or from a transformers Trainer's checkpoint-N/ folder (hf_trainer/), read with from_pretrained,
    which puts back the tied weights save_pretrained writes once."""
    path = Path(path)
    if path.is_dir():
        from transformers import AutoModelForSeq2SeqLM

        model = AutoModelForSeq2SeqLM.from_pretrained(path)
        return {PREFIX + name: tensor for name, tensor in model.state_dict().items()}
    return {name: tensor for name, tensor in read_checkpoint(path)["state_dict"].items() if name.startswith(PREFIX)}
