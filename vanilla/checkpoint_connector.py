"""What goes into a checkpoint and how a run is restored from one (Lightning: `_CheckpointConnector`).

One dict, shaped like Lightning's so that either trainer can read the other's weights: `state_dict` (keys
prefixed `model.`, as a LightningModule holding `self.model` writes them), `optimizer_states`, `lr_schedulers`,
`callbacks`, `epoch`, `global_step`, `hyper_parameters`, `pytorch-lightning_version`. On top of what Lightning
saves, the exact-resume part: the loop position (batches done in the epoch, partial epoch sums) and the shuffle
seed of the current epoch under `loop_state` (not `loops`, where Lightning keeps its own loops' state and would
look for it), and every rank's RNG states.
"""

from __future__ import annotations

from dataclasses import asdict

import torch

from vanilla import ddp
from vanilla.checkpoint_io import CheckpointError
from vanilla.fit_loop import FitLoop, LoopPosition
from vanilla.resumable_sampler import ResumableRandomSampler
from vanilla.seed import collect_rng_states

PREFIX = "model."
# The Lightning checkpoint layout this dict follows (Lightning will not read a checkpoint without the key).
LIGHTNING_LAYOUT = "2.6.6"


def model_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {PREFIX + name: tensor for name, tensor in model.state_dict().items()}


def load_model_weights(model: torch.nn.Module, checkpoint: dict, path) -> None:
    state = {name[len(PREFIX):]: tensor for name, tensor in checkpoint["state_dict"].items()
             if name.startswith(PREFIX)}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit this model configuration ({first})") from None


def _sampler_seed(loop: FitLoop) -> int | None:
    sampler = loop.train_loader.sampler
    return sampler.seed if isinstance(sampler, ResumableRandomSampler) else None


def dump_checkpoint(loop: FitLoop, hyper_parameters: dict) -> dict:
    """Called on every rank (RNG states are gathered from all of them); rank 0 writes the result."""
    rng_states = ddp.gather_objects(collect_rng_states())
    pos = loop.position
    return {
        "pytorch-lightning_version": LIGHTNING_LAYOUT,
        "epoch": pos.epoch,
        "global_step": pos.global_step,
        "state_dict": model_state_dict(loop.model),
        "optimizer_states": [loop.optimizer.state_dict()],
        "lr_schedulers": [loop.scheduler.state_dict()],
        "callbacks": {"EarlyStopping": loop.early_stopping.state_dict(),
                      "ModelCheckpoint": loop.checkpoint.state_dict()},
        "precision": loop.precision.state_dict(),
        "hyper_parameters": hyper_parameters,
        "loop_state": {**asdict(pos), "sampler_seed": _sampler_seed(loop), "batch_size": loop.train_loader.batch_size,
                  "world_size": len(rng_states)},
        "rng_states": rng_states,
    }


def restore_checkpoint(loop: FitLoop, checkpoint: dict, path, rank: int) -> None:
    """Restore everything `dump_checkpoint` saved; RNG is applied when the resumed epoch's iterator exists."""
    if "fit_loop" in checkpoint.get("loops", {}):
        raise CheckpointError(f"{path}: was written by lightning/train.py, whose loop state this trainer does not "
                              f"read; resume it with lightning/train.py (its weights load anywhere)")
    try:
        load_model_weights(loop.model, checkpoint, path)
        loop.optimizer.load_state_dict(checkpoint["optimizer_states"][0])
        loop.scheduler.load_state_dict(checkpoint["lr_schedulers"][0])
        loop.early_stopping.load_state_dict(checkpoint["callbacks"]["EarlyStopping"])
        loop.checkpoint.load_state_dict(checkpoint["callbacks"]["ModelCheckpoint"])
        loop.precision.load_state_dict(checkpoint.get("precision", {}))
        state = checkpoint["loop_state"]
        rng_states = checkpoint["rng_states"]
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot resume from it ({type(error).__name__}: {error})") from None
    if state["world_size"] != len(ddp.gather_objects(None)):
        raise CheckpointError(f"{path}: was written by {state['world_size']} process(es); resume it with the same "
                              f"--devices")
    if state["batches_done"] and state["batch_size"] != loop.train_loader.batch_size:
        raise CheckpointError(f"{path}: was saved mid-epoch at batch size {state['batch_size']}; resume it with "
                              f"--batch-size {state['batch_size']}")
    fields = {name: state[name] for name in LoopPosition.__dataclass_fields__}
    loop.position = LoopPosition(**fields)
    loop.stop_reason = loop.early_stopping.stopping_reason_message if loop.position.should_stop else None
    loop.pending_rng_states = rng_states[rank]
    if not loop.position.epoch_finished and 0 < loop.position.batches_done < loop.num_train_batches():
        samples_done = loop.position.batches_done * state["batch_size"]
        sampler = loop.train_loader.sampler
        if isinstance(sampler, ResumableRandomSampler):
            sampler.resume_epoch(state["sampler_seed"], samples_done)
        else:
            sampler.skip_next_epoch_start(samples_done)
