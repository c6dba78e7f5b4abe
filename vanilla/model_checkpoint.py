"""Top-k checkpoints by dev_loss plus last.ckpt (Lightning: `callbacks.ModelCheckpoint`).

Same names and bookkeeping as `ModelCheckpoint(monitor="dev_loss", filename="{epoch}-{dev_loss:.2f}",
save_top_k=k, save_last=True)`: files are named `epoch=E-dev_loss=X.XX.ckpt`; a NaN score ranks as +inf; when
k files are kept, a new one must beat the worst of them (strictly), which is then deleted; a clashing name gets
`-v1`, `-v2`, ...; `last.ckpt` is written whenever a top-k file is, and also every N optimizer steps when
mid-epoch checkpoints are asked for. The writing itself (atomic) is `checkpoint_io.atomic_save`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch

SaveFn = Callable[[Path], None]


class ModelCheckpoint:
    def __init__(self, dirpath: str | Path, monitor: str = "dev_loss", save_top_k: int = 1, save_last: bool = True,
                 is_writer: bool = True):
        self.dirpath = Path(dirpath)
        self.monitor = monitor
        self.save_top_k = save_top_k
        self.save_last = save_last
        self.is_writer = is_writer  # only rank 0 touches files; every rank keeps the same bookkeeping
        self.best_k_models: dict[str, torch.Tensor] = {}
        self.kth_best_model_path = ""
        self.kth_value: torch.Tensor | None = None
        self.best_model_path = ""
        self.best_model_score: torch.Tensor | None = None
        self.current_score: torch.Tensor | None = None
        self.last_model_path = ""

    def format_name(self, epoch: int, score: torch.Tensor) -> str:
        return f"epoch={epoch}-{self.monitor}={score.item():.2f}"

    def _unique_path(self, stem: str, replacing: str | None) -> str:
        """Lightning's version counter: a name taken by another file gets -v1, -v2, ..."""
        path = str(self.dirpath / f"{stem}.ckpt")
        version = 1
        while Path(path).exists() and path != replacing and self.is_writer:
            path = str(self.dirpath / f"{stem}-v{version}.ckpt")
            version += 1
        return path

    def on_validation_epoch_end(self, epoch: int, score: torch.Tensor, save: SaveFn) -> bool:
        """Offer this epoch's score for the top k; save it (and last.ckpt) if it gets in. True if saved."""
        if not self._is_top_k(score):
            return False
        evicted = None
        if len(self.best_k_models) == self.save_top_k:
            evicted = self.kth_best_model_path
            self.best_k_models.pop(evicted)
        path = self._unique_path(self.format_name(epoch, score), replacing=evicted)  # a NaN is named as such
        if torch.isnan(score):
            score = torch.tensor(math.inf, device=score.device)
        self.current_score = score
        self.best_k_models[path] = score
        if len(self.best_k_models) == self.save_top_k:
            self.kth_best_model_path = max(self.best_k_models, key=self.best_k_models.get)
            self.kth_value = self.best_k_models[self.kth_best_model_path]
        self.best_model_path = min(self.best_k_models, key=self.best_k_models.get)
        self.best_model_score = self.best_k_models[self.best_model_path]
        self._write(path, save)
        if evicted and evicted != path and self.is_writer:
            Path(evicted).unlink(missing_ok=True)
        if self.save_last:
            self.save_last_checkpoint(save)
        return True

    def _is_top_k(self, score: torch.Tensor) -> bool:
        if len(self.best_k_models) < self.save_top_k:
            return True
        return bool(torch.lt(score, self.best_k_models[self.kth_best_model_path]))

    def save_last_checkpoint(self, save: SaveFn) -> None:
        self.last_model_path = str(self.dirpath / "last.ckpt")
        self._write(self.last_model_path, save)

    def _write(self, path: str, save: SaveFn) -> None:
        # Called on every rank: building a checkpoint gathers state from all of them; `save` writes on rank 0.
        if self.is_writer:
            self.dirpath.mkdir(parents=True, exist_ok=True)
        save(Path(path))

    def state_dict(self) -> dict:
        return {"monitor": self.monitor, "best_model_score": self.best_model_score,
                "best_model_path": self.best_model_path, "current_score": self.current_score,
                "dirpath": str(self.dirpath), "best_k_models": dict(self.best_k_models),
                "kth_best_model_path": self.kth_best_model_path, "kth_value": self.kth_value,
                "last_model_path": self.last_model_path}

    def load_state_dict(self, state: dict) -> None:
        self.best_model_score = state["best_model_score"]
        self.best_model_path = state["best_model_path"]
        self.current_score = state["current_score"]
        self.best_k_models = dict(state["best_k_models"])
        self.kth_best_model_path = state["kth_best_model_path"]
        self.kth_value = state["kth_value"]
        self.last_model_path = state["last_model_path"]
