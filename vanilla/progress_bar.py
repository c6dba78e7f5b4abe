"""The tqdm progress bar with a running training loss (Lightning: `callbacks.TQDMProgressBar`)."""

from __future__ import annotations

from collections import deque

from tqdm import tqdm


class ProgressBar:
    def __init__(self, enabled: bool = True, window: int = 20):
        self.enabled = enabled
        self.window = window
        self._bar: tqdm | None = None
        self._losses: deque[float] = deque(maxlen=window)

    def start_epoch(self, epoch: int, total: int, done: int = 0) -> None:
        if self.enabled:
            self._bar = tqdm(total=total, initial=done, desc=f"Epoch {epoch}", dynamic_ncols=True, leave=True)

    def advance(self, loss: float) -> None:
        """One batch done; show the mean loss over the last `window` batches."""
        if self._bar is not None:
            self._losses.append(loss)
            self._bar.set_postfix(loss=f"{sum(self._losses) / len(self._losses):.3f}", refresh=False)
            self._bar.update(1)

    def end_epoch(self, **metrics: float) -> None:
        if self._bar is not None:
            self._bar.set_postfix({**{"loss": f"{sum(self._losses) / max(1, len(self._losses)):.3f}"},
                                   **{k: f"{v:.3f}" for k, v in metrics.items()}})
            self._bar.close()
            self._bar = None
