"""What the Lightning trainer adds around plain Lightning (`plain_lightning.py`) so that a command line behaves as in
every trainer here: a run directory of its own, a checked `--resume` checkpoint, the seed's `strategy="dp"`
(removed in Lightning 2.0), and one-line errors and notices instead of tracebacks and multi-line warnings.

The run directory is `shared/run_dir.py`'s, not Lightning's logger versions, which plain_lightning.py uses. Where
those fall short: the CSV logger numbers a new version as one past the highest it sees and creates it later, so two
runs started together share one; and `fit(ckpt_path="last")` looks only in this run's new version, so it cannot
continue the latest earlier one. `fit(ckpt_path=...)` itself does the resuming once the checkpoint is chosen.
"""

from __future__ import annotations

import math
import signal
import threading
from contextlib import contextmanager
from datetime import timedelta

import torch
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning import Callback
from pytorch_lightning.plugins.environments import SLURMEnvironment, TorchElasticEnvironment
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.strategies import DDPStrategy
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.memory import is_oom_error

from shared.checkpoint_file import cannot_write, check_resumable_by, check_weights_fit, read_checkpoint
from shared.devices import check_data_parallel, check_devices, precision_for, runs_ddp
from shared.errors import UserError, no_training_batches_error, out_of_memory_error
from shared.launcher import check_launcher
from shared.process_tree import end_with_rank_zero
from shared.run_dir import choose_run_directory, prepare_output_dir, resolve_resume_path


class RunGuard:
    """The run's directory and its lock, the --resume checkpoint (read and checked), the Trainer's hardware
    arguments, and the boundaries inside which Lightning's refusals become one line."""

    def __init__(self, args, trainer: str):
        end_with_rank_zero()  # a rank Lightning's launcher started ends with rank 0, however rank 0 ends
        self.args = args
        self.is_rank_zero = rank_zero_only.rank == 0  # processes started by Lightning's DDP launcher are not
        self.cuda = cuda = args.accelerator != "cpu" and torch.cuda.is_available()
        check_devices(args.devices, cuda)
        launcher = check_launcher(args, cuda, (TorchElasticEnvironment, SLURMEnvironment))  # torchrun's or srun's world
        self.output_dir = choose_run_directory(args, trainer, rank_zero_only.rank)
        if self.is_rank_zero:
            prepare_output_dir(self.output_dir, args.resume, args.overwrite)
        self.ckpt_path = resolve_resume_path(self.output_dir, args.resume) if args.resume else None
        self.resume = read_checkpoint(self.ckpt_path) if self.ckpt_path else None
        if self.resume is not None:
            check_resumable_by("lightning", self.resume, self.ckpt_path)
        self._check_data_parallel(args.strategy, cuda)
        self.precision = precision_for(args.precision, cuda)
        self.callbacks = [_Checks(self), SigtermEndsTheTest()]
        # under srun, without the requeue-on-SIGUSR1 that the other trainers do not have either
        slurm = [SLURMEnvironment(auto_requeue=False)] if isinstance(launcher, SLURMEnvironment) else []
        self.plugins = [_OneLineCheckpointIO(), *slurm]

    @property
    def strategy(self) -> str | DDPStrategy:
        """DDP with the run's --ddp-timeout (a new one for each Trainer: a strategy holds its Trainer's state)."""
        if self.args.strategy == "dp" or runs_ddp(self.args, self.cuda):
            return DDPStrategy(timeout=timedelta(seconds=self.args.ddp_timeout))
        return self.args.strategy

    @property
    def hardware(self) -> dict:
        """The Trainer's strategy, precision and plugins, in place of the command line's."""
        return {"strategy": self.strategy, "precision": self.precision, "plugins": self.plugins}

    @staticmethod
    def _check_data_parallel(strategy: str, cuda: bool) -> None:
        """The seed asked for `accelerator='dp'`; Lightning 2.0 removed DataParallel (Trainer(strategy='dp')
        raises), so its intent -- every visible GPU -- maps to DDP, the replacement Lightning supports."""
        if strategy == "dp":
            check_data_parallel(cuda)
            print("notice: --strategy dp: Lightning 2.x has no DataParallel (removed in 2.0); running strategy='ddp', "
                  "its supported replacement, with one process per GPU")

    @contextmanager
    def refusing_the_hardware(self):
        """Around building the Trainer: its refusal of the device and strategy flags (no GPU, too many GPUs, a
        strategy the accelerator lacks), in one line. A launcher's world the guard has checked already."""
        try:
            yield
        except (MisconfigurationException, ValueError) as error:
            raise UserError(f"--accelerator/--devices/--strategy: {str(error).strip().splitlines()[0]}") from None

    @contextmanager
    def refusing_the_search(self):
        """Around the Tuner: its refusal to search under DDP, in one line."""
        try:
            yield
        except ValueError as error:
            raise UserError(f"--auto-batch-size: {error} Run the search with --devices 1") from None

    @contextmanager
    def out_of_memory_in_one_line(self, datamodule):
        """Around fit: out of memory at the batch size the run trains at (the Tuner's, if it searched)."""
        try:
            yield
        except RuntimeError as error:
            if is_oom_error(error):
                raise out_of_memory_error(datamodule.batch_size) from None
            raise


class _Checks(Callback):
    """Before fit touches anything: the --resume checkpoint fits the model (Lightning's strict load would end in a
    traceback listing every tensor), and --limit-train-batches leaves at least one batch per epoch."""

    def __init__(self, guard: RunGuard):
        self.guard = guard

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "fit" and self.guard.resume is not None:
            check_weights_fit(pl_module.model, self.guard.resume, self.guard.ckpt_path)
            self.guard.resume = None  # checked: Lightning reads the file itself

    def on_fit_start(self, trainer, pl_module) -> None:
        limit = trainer.limit_train_batches
        if isinstance(limit, float) and limit < 1.0:
            loader = trainer.datamodule.train_dataloader()
            batches = math.ceil(math.ceil(len(loader.dataset) / trainer.world_size) / loader.batch_size)
            if int(batches * limit) == 0:
                raise no_training_batches_error(limit, batches)


class SigtermEndsTheTest(Callback):
    """SIGTERM in the test phase ends the process at once, as in the other trainers: training is over and saved,
    and `--resume last` tests again. (Lightning's own handler would end the phase with status 0 at the next batch,
    after broadcasting from inside the handler to ranks that are not listening.)"""

    def on_test_start(self, trainer, pl_module) -> None:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


class _OneLineCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writing (atomic), with a full disk or a read-only directory in one line."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        try:
            super().save_checkpoint(checkpoint, path, storage_options)
        except OSError as error:
            raise cannot_write(path, error) from None
