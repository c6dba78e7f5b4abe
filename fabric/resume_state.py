"""What the Fabric trainer saves with `fabric.save(path, state)` and restores with `fabric.load(path, state)`: the
part Fabric leaves to its user.

`state` is the user's objects, as Fabric's documentation has it; Fabric calls each one's `state_dict()` when it
saves and `load_state_dict()` when it loads. Their keys are those of Lightning's checkpoint layout, so that any
trainer's test phase reads any other's weights: the model under `state_dict` (inside a ModuleDict, as "model", its
weights are named `model.*`, as a LightningModule holding `self.model` names them), the optimizer's and the
scheduler's states in lists of one (`optimizer_states`, `lr_schedulers`), the callbacks' by name (`callbacks`).
Lightning keeps those two in those shapes, so two small adapters below give them to Fabric. On top of the layout,
what exact resume needs: the loop's position and the train loader's state (`loop_state`), and every rank's RNG
states (`rng_states`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from private_api import continue_sampler_epochs

from shared.checkpoint_dict import LIGHTNING_LAYOUT, check_same_world_size, resuming_from
from shared.checkpoint_file import cannot_write, check_resumable_by, check_weights_fit, read_checkpoint
from shared.loop_position import LoopPosition
from shared.rng_state import collect_rng_states, gather_from_every_rank


class InAList:
    """An optimizer's or a scheduler's state as Lightning's layout keeps it: in a list of one."""

    def __init__(self, stateful):
        self.stateful = stateful

    def state_dict(self) -> list:
        return [self.stateful.state_dict()]

    def load_state_dict(self, states: list) -> None:
        self.stateful.load_state_dict(states[0])


class ByName:
    """The callbacks' states as Lightning's layout keeps them: in one dict, by the callback's name."""

    def __init__(self, **callbacks):
        self.callbacks = callbacks

    def state_dict(self) -> dict:
        return {name: callback.state_dict() for name, callback in self.callbacks.items()}

    def load_state_dict(self, states: dict) -> None:
        for name, callback in self.callbacks.items():
            callback.load_state_dict(states[name])


class LoopState:
    """`loop_state`: where training stands and the train loader's state, whose count of trained batches is the
    loop's (0 once the epoch's training is over)."""

    def __init__(self, position: LoopPosition, loader, world_size: int):
        self.position, self.loader, self.world_size = position, loader, world_size

    def state_dict(self) -> dict:
        self.loader.batches_trained = 0 if self.position.epoch_finished else self.position.batches_done
        return {**self.position.state_dict(), "train_loader": self.loader.state_dict(), "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        self.position.load_state_dict(state)
        self.loader.load_state_dict(state["train_loader"])


def users_objects(loop) -> dict:
    """The objects `fabric.save` saves and `fabric.load` restores in place, by the keys of Lightning's layout."""
    job = loop.job
    return {"state_dict": torch.nn.ModuleDict({"model": job.raw_model}),
            "optimizer_states": InAList(job.optimizer),
            "lr_schedulers": InAList(job.scheduler),
            "callbacks": ByName(EarlyStopping=loop.early_stopping, ModelCheckpoint=loop.checkpoint),
            "precision": job.fabric.strategy.precision,
            "loop_state": LoopState(loop.position, loop.resumable_loader, job.fabric.world_size)}


def save_checkpoint(loop, path: Path) -> None:
    """Called on every rank (the RNG states are gathered from all of them); Fabric writes the file on rank 0."""
    rng_states = gather_from_every_rank(collect_rng_states())
    state = {"trainer": "fabric", "pytorch-lightning_version": LIGHTNING_LAYOUT, "epoch": loop.position.epoch,
             "global_step": loop.position.global_step, **users_objects(loop),
             "hyper_parameters": dict(vars(loop.job.settings)), "rng_states": rng_states}
    try:
        loop.job.fabric.save(path, state)
    except OSError as error:
        raise cannot_write(path, error) from None


def read_resume_checkpoint(path: Path) -> dict:
    """The checkpoint to resume, with its tensors left on disk (mmap), read before the run is set up: it says which
    trainer wrote it and the batch size the run had. One-line errors for a missing, truncated or foreign file, or
    another trainer's."""
    checkpoint = read_checkpoint(path, load=lambda path: torch.load(path, map_location="cpu", weights_only=True,
                                                                    mmap=True))
    check_resumable_by("fabric", checkpoint, path)
    return checkpoint


def resume(loop, checkpoint: dict, path: Path) -> dict:
    """Restore the run's objects from `path` with `fabric.load`, once the weights in `checkpoint` (the same file, as
    `read_resume_checkpoint` read it) are known to fit the model; return this rank's RNG states, which the loop puts
    back once the resumed epoch's loader has drawn its order."""
    fabric = loop.job.fabric
    check_weights_fit(loop.job.raw_model, checkpoint, path)
    state = {**users_objects(loop), "rng_states": None}
    with resuming_from(path):
        fabric.load(path, state, weights_only=True)  # the objects in place; `rng_states` as saved
    check_same_world_size(path, len(state["rng_states"]), fabric.world_size)
    # a DistributedSampler's epoch: the epochs whose training began
    continue_sampler_epochs(loop.train_loader, loop.position.epoch + (1 if loop.position.epoch_finished else 0))
    return state["rng_states"][fabric.global_rank]
