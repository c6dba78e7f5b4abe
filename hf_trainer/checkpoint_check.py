"""One line for a checkpoint-N/ that `--resume last` cannot continue, as the other rungs give one: the Trainer would
end in a traceback from deep inside `resume_from_checkpoint` (a truncated file, another model configuration's
weights). Every file it will read is read first, as safely as the Trainer reads it, and the weights are checked
against the model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers.trainer_pt_utils import safe_globals

from shared.checkpoint_file import CheckpointError, unreadable


def _read(path: Path):
    if path.suffix == ".safetensors":
        return load_file(path)
    if path.suffix == ".json":
        return json.loads(path.read_text(encoding="utf-8"))
    with safe_globals():  # the NumPy objects of rng_state.pth, as the Trainer allows them
        return torch.load(path, map_location="cpu", weights_only=True)


def check_resumable(checkpoint: str | Path, model: torch.nn.Module) -> None:
    folder = Path(checkpoint)
    contents = {}
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth", "trainer_state.json"):
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing: {folder} is not a whole checkpoint of this trainer")
        try:
            contents[name] = _read(path)
        except Exception as error:  # noqa: BLE001 -- a bad file fails in many ways
            raise unreadable(path, error) from None
    expected = model.state_dict()
    for name, tensor in contents["model.safetensors"].items():  # tied weights are saved once: none is missing
        if name not in expected or expected[name].shape != tensor.shape:
            raise CheckpointError(f"{folder / 'model.safetensors'}: weights do not fit this model configuration "
                                  f"({name}: {tuple(tensor.shape)} in the checkpoint)")
