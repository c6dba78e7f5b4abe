"""What goes into a checkpoint and how a run is restored from one (Lightning: `_CheckpointConnector`).

One dict, shaped like Lightning's so that every trainer can read another's weights: `state_dict` (keys
prefixed `model.`, as a LightningModule holding `self.model` writes them), `optimizer_states`, `lr_schedulers`,
`callbacks`, `epoch`, `global_step`, `hyper_parameters`, `pytorch-lightning_version`. On top of what Lightning
saves, the exact-resume part: the loop's own state (its position in the epoch, partial epoch sums, the train
loader's state) under `loop_state` (not `loops`, where Lightning keeps its own loops' state and would look for
it), and every rank's RNG states.
"""

from __future__ import annotations

from shared.checkpoint_dict import LIGHTNING_LAYOUT, check_same_world_size, load_model_weights, resuming_from
from shared.checkpoint_file import PREFIX, check_resumable_by, read_checkpoint
from shared.rng_state import collect_rng_states
from vanilla import ddp
from vanilla.checkpoint_io import atomic_save
from vanilla.fit_loop import FitLoop


def dump_checkpoint(loop: FitLoop, hyper_parameters: dict) -> dict:
    """Called on every rank (RNG states are gathered from all of them); rank 0 writes the result."""
    rng_states = ddp.gather_objects(collect_rng_states())
    optimization = loop.optimization
    return {
        "pytorch-lightning_version": LIGHTNING_LAYOUT,
        "epoch": loop.position.epoch,
        "global_step": loop.position.global_step,
        "state_dict": {PREFIX + name: tensor for name, tensor in loop.model.state_dict().items()},
        "optimizer_states": [optimization.optimizer.state_dict()],
        "lr_schedulers": [optimization.scheduler.state_dict()],
        "callbacks": {"EarlyStopping": loop.early_stopping.state_dict(),
                      "ModelCheckpoint": loop.checkpoint.state_dict()},
        "precision": optimization.precision.state_dict(),
        "hyper_parameters": hyper_parameters,
        "loop_state": {**loop.state_dict(), "world_size": len(rng_states)},
        "rng_states": rng_states,
    }


def saver(hyper_parameters: dict, is_writer: bool):
    """The loop's `save_checkpoint(loop, path)`: every rank builds the checkpoint, rank 0 writes it atomically."""

    def save_checkpoint(loop: FitLoop, path) -> None:
        checkpoint = dump_checkpoint(loop, hyper_parameters)
        if is_writer:
            atomic_save(checkpoint, path)

    return save_checkpoint


def read_resume_checkpoint(path) -> dict:
    checkpoint = read_checkpoint(path)
    check_resumable_by("vanilla", checkpoint, path)
    return checkpoint


def restore_checkpoint(loop: FitLoop, checkpoint: dict, path, rank: int) -> None:
    """Restore everything `dump_checkpoint` saved; RNG is applied when the resumed epoch's iterator exists."""
    optimization = loop.optimization
    load_model_weights(optimization.model, checkpoint, path)
    with resuming_from(path):
        optimization.optimizer.load_state_dict(checkpoint["optimizer_states"][0])
        optimization.scheduler.load_state_dict(checkpoint["lr_schedulers"][0])
        loop.early_stopping.load_state_dict(checkpoint["callbacks"]["EarlyStopping"])
        loop.checkpoint.load_state_dict(checkpoint["callbacks"]["ModelCheckpoint"])
        optimization.precision.load_state_dict(checkpoint.get("precision", {}))
        state, rng_states = checkpoint["loop_state"], checkpoint["rng_states"]
    check_same_world_size(path, state["world_size"], ddp.world_size())
    loop.load_state_dict(state)
    loop.restore_rng_at_resume(rng_states[rank])
