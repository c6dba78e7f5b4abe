"""What the Trainer lacks for a run interrupted inside an epoch to continue bit for bit, as the other rungs do: a
`TrainerCallback` for step checkpoints (`--checkpoint-every-n-steps`), Ctrl-C and SIGTERM, and the state a
mid-epoch checkpoint must also hold.

- Step checkpoints: `control.should_save` every N optimizer steps (the Trainer saves either per epoch or per N
  steps, not both). Not at an epoch's last step: the epoch's own checkpoint follows it, after validation.
- Ctrl-C and SIGTERM (caught by vanilla/'s `SignalConnector`, as the Fabric rung does): the step under way ends,
  its checkpoint is saved, and `Interrupted` leaves `train()` at once (exit status 128 + the signal). Stopping
  through `control.should_training_stop` would let the Trainer's end of training run, which, with
  `save_total_limit=1`, deletes every checkpoint but the best: the one just saved too. At an epoch's last step the
  epoch still validates and saves first, so that no epoch ends without its validation.
- The epoch's shuffle. The Trainer resumes inside an epoch by skipping the batches done (`skip_first_batches`) and
  puts back the random generators saved with the checkpoint after the first batches. But the epoch's order is
  drawn when its loader starts, from torch's generator as it is then: in the resumed run, as seeding and building
  the model left it, not as the epoch's start left it (accelerate's seedable sampler, which seeds each epoch with
  seed + epoch, avoids this; this rung turns it off to shuffle as the other rungs do). So each checkpoint also holds
  the generators as they were at its epoch's start (`exact_resume.pt`), and the resumed epoch starts from them.
- The epoch's running train_loss (a MeanMetric the Trainer does not know), saved and put back with them.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torchmetrics import MeanMetric
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from shared.checkpoint_file import CheckpointError
from shared.errors import Interrupted
from shared.rng_state import collect_rng_states, restore_rng_states
from vanilla.signal_connector import SignalConnector

STATE_FILE = "exact_resume.pt"


def inside_an_epoch(state) -> bool:
    """The Trainer's epoch is fractional: epochs done + batches done / batches per epoch."""
    return state.epoch is not None and state.epoch != int(state.epoch)


class MidEpochResume(TrainerCallback):
    def __init__(self, train_loss: MeanMetric, every_n_steps: int | None, resume_from: str | None):
        self.train_loss, self.every_n_steps, self.resume_from = train_loss, every_n_steps, resume_from
        self.signals = SignalConnector()  # main trains inside its catching_stop_signals()
        self.epoch_start_rng: dict | None = None
        self.pending: dict | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        if self.resume_from is None or not inside_an_epoch(state):
            return  # from an epoch's end the Trainer restores the generators itself, before the epoch's loader
        path = Path(self.resume_from) / STATE_FILE
        if not path.is_file():
            raise CheckpointError(f"--resume: {self.resume_from} was saved inside an epoch without {STATE_FILE} "
                                  f"(the epoch's shuffle): it cannot continue exactly; resume an earlier checkpoint")
        self.pending = torch.load(path, map_location="cpu", weights_only=True)

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.pending is not None:  # the resumed epoch: its start as the saving run had it
            restore_rng_states(self.pending["epoch_start_rng"])
            for key, value in self.pending["train_loss"].items():
                setattr(self.train_loss, key, value)
            self.pending = None
        self.epoch_start_rng = collect_rng_states()

    def on_step_end(self, args, state, control, **kwargs):
        if not inside_an_epoch(state):
            return  # the epoch's end validates and saves next
        due = self.every_n_steps and state.global_step % self.every_n_steps == 0
        if due or self.signals.received is not None:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
        if state.is_world_process_zero:
            train_loss = {key: value.detach().clone() for key, value in self.train_loss.metric_state.items()}
            torch.save({"epoch_start_rng": self.epoch_start_rng, "train_loss": train_loss}, checkpoint / STATE_FILE)
        if self.signals.received is not None:
            raise Interrupted(self.signals.received, math.ceil(state.epoch) - 1, state.global_step, str(checkpoint))
