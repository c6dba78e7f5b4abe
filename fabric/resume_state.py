"""What the Fabric trainer puts in a checkpoint, and how it continues from one: the part Fabric leaves to its user.

`fabric.save(path, state)` writes whatever dict it is given (atomically, on rank 0) and `fabric.load(path)` reads it
back; what goes in is the user's. This module builds the dict in the layout the other two trainers use (Lightning's:
`state_dict` with `model.` prefixes, `optimizer_states`, `lr_schedulers`, `callbacks`, ...), so that any trainer's
test phase reads any other's weights, and adds what exact resume needs: the loop's position, the train loader's
state (`shared.resumable_loader`), every rank's RNG states, and the rows of metrics.csv logged before the
checkpoint (Fabric's CSVLogger, like Lightning's, deletes the file when it starts).
"""

from __future__ import annotations

import csv
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from shared.checkpoint_file import PREFIX, CheckpointError, check_resumable_by, check_weights_fit, read_checkpoint
from shared.rng_state import collect_rng_states, gather_from_every_rank

LIGHTNING_LAYOUT = "2.6.6"  # the checkpoint layout the dict follows (Lightning reads no checkpoint without the key)


@dataclass
class Position:
    """Where training stands."""

    epoch: int = 0
    global_step: int = 0
    batches_done: int = 0  # batches of `epoch` already trained
    epoch_finished: bool = False  # validation and epoch-end of `epoch` done
    should_stop: bool = False
    train_loss_sum: torch.Tensor = field(default_factory=lambda: torch.tensor(0.0))
    train_samples: int = 0


def checkpoint_state(model, optimizer, scheduler, precision, early_stopping, checkpoint, position: Position,
                     loader, hparams: dict) -> dict:
    """The dict `fabric.save` writes; built on every rank (it gathers their RNG states)."""
    rng_states = gather_from_every_rank(collect_rng_states())
    return {
        "trainer": "fabric",
        "pytorch-lightning_version": LIGHTNING_LAYOUT,
        "epoch": position.epoch,
        "global_step": position.global_step,
        "state_dict": {PREFIX + name: tensor for name, tensor in model.state_dict().items()},
        "optimizer_states": [optimizer.state_dict()],
        "lr_schedulers": [scheduler.state_dict()],
        "callbacks": {"EarlyStopping": early_stopping.state_dict(), "ModelCheckpoint": checkpoint.state_dict()},
        "precision": precision.state_dict(),
        "hyper_parameters": hparams,
        "loop_state": {**asdict(position), "train_loader": loader.state_dict(), "world_size": len(rng_states)},
        "rng_states": rng_states,
    }


def read_resume_checkpoint(fabric, path: Path) -> dict:
    """`fabric.load`, with a one-line error for a missing, truncated or foreign file, or another trainer's."""
    checkpoint = read_checkpoint(path, load=lambda path: fabric.load(path, weights_only=True))
    check_resumable_by("fabric", checkpoint, path)
    return checkpoint


def restore(checkpoint: dict, path: Path, model, optimizer, scheduler, precision, early_stopping, model_checkpoint,
            loader, fabric_loader, world_size: int, rank: int) -> tuple[Position, dict]:
    """Put everything back; return the position and this rank's RNG states (applied once the resumed epoch's
    loader has drawn its order)."""
    check_weights_fit(model, checkpoint, path)
    model.load_state_dict({name.removeprefix(PREFIX): tensor for name, tensor in checkpoint["state_dict"].items()
                           if name.startswith(PREFIX)})
    try:
        optimizer.load_state_dict(checkpoint["optimizer_states"][0])
        scheduler.load_state_dict(checkpoint["lr_schedulers"][0])
        early_stopping.load_state_dict(checkpoint["callbacks"]["EarlyStopping"])
        model_checkpoint.load_state_dict(checkpoint["callbacks"]["ModelCheckpoint"])
        precision.load_state_dict(checkpoint.get("precision", {}))
        state, rng_states = checkpoint["loop_state"], checkpoint["rng_states"]
    except (KeyError, IndexError, TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: cannot resume from it ({type(error).__name__}: {error})") from None
    if state["world_size"] != world_size:
        raise CheckpointError(f"{path}: was written by {state['world_size']} process(es); resume it with the same "
                              f"--devices")
    position = Position(**{name: state[name] for name in Position.__dataclass_fields__})
    loader.load_state_dict(state["train_loader"])
    # Fabric sets a DistributedSampler's epoch to the number of times its loader was iterated (once an epoch here):
    # a resumed run continues that count. Fabric has no public way to say so; this is its loader's own counter.
    fabric_loader._num_iter_calls = position.epoch + (1 if position.epoch_finished else 0)
    return position, rng_states[rank]


def keep_logged_rows(csv_logger, global_step: int) -> None:
    """Fabric's CSVLogger deletes metrics.csv when it first writes; on resume, log again the rows logged before
    the checkpoint (a row's `step` is below its global step), through a copy kept until they are written."""
    path = Path(csv_logger.log_dir) / "metrics.csv"
    backup = path.with_name(f".{path.name}.before-resume")
    source = path if path.is_file() else backup  # a copy left by a run killed in between
    if not source.is_file():
        return
    text = source.read_bytes()
    if source is path:
        backup.write_bytes(text)
    rows = [row for row in csv.DictReader(text.decode().splitlines()) if int(row["step"]) < global_step]
    csv_logger.experiment  # noqa: B018 -- made here: this is when Fabric's CSVLogger deletes the file
    for row in rows:
        csv_logger.log_metrics({key: int(value) if key == "epoch" else float(value)
                                for key, value in row.items() if value != "" and key != "step"}, step=int(row["step"]))
    csv_logger.save()
    backup.unlink(missing_ok=True)
