"""Question generation on SQuAD, trained with PyTorch Lightning 2.6: the same job as vanilla/train.py and
fabric/train.py. The job itself, as Lightning's documentation teaches it, is `plain_lightning.py` beside this file
(its DataModule, LightningModule, callbacks, loggers and Trainer); this file adds what Lightning lacks and the job
needs, from the modules beside it: exact resume (`exact_resume.py`) and the run's guard rails (`run_guard.py`: a
run directory of its own, a checked --resume, the seed's `dp`, one-line errors). Run from the repository root:
`python lightning/train.py --help` (the same command line as the other trainers).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

# As in vanilla/train.py: the repository root on the path instead of this folder, so that `shared` imports as a
# package; this folder goes last, for the modules beside this file.
HERE = Path(__file__).resolve().parent
if sys.path[0] in ("", str(HERE)):
    sys.path[0] = str(HERE.parent)
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

import pytorch_lightning as pl
from exact_resume import exact_resume_callbacks
from plain_lightning import QGDataModule, QGModule, callbacks, loggers, make_trainer
from pytorch_lightning.tuner import Tuner
from pytorch_lightning.utilities.seed import isolate_rng
from run_guard import RunGuard, SigtermEndsTheTest
from torch.utils.data import Subset

from shared.cli import parse_args
from shared.entry_point import exit_on_user_error
from shared.export import export_pretrained
from shared.pipeline import make_model, prepare_data
from shared.predictions import in_test_order, share_of_test_set, write_test_report
from shared.resumable_loader import ResumableDataLoader
from shared.rng_state import gather_from_every_rank
from shared.run_settings import batch_size_to_continue, resolve_settings
from shared.summary import end_lines, start_line

PROG = "lightning/train.py"
TRAINER = "lightning"  # its runs go to runs/lightning/version_N unless told otherwise


class ResumableQGDataModule(QGDataModule):
    """The plain DataModule, with a train loader whose position Lightning checkpoints (a resumed epoch continues in
    the same order), and under DDP each process's share of the test batches (`shared.predictions`)."""

    def __init__(self, data, batch_size: int, num_workers: int):
        super().__init__(data, batch_size, num_workers)
        # under DDP a process may have no test batch of its own (more processes than batches)
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def train_dataloader(self):
        return ResumableDataLoader(self.data.train, batch_size=self.batch_size, shuffle=True,
                                   collate_fn=self.collate, num_workers=self.num_workers)

    def test_dataloader(self):
        # in place of the DistributedSampler Lightning would add (the tester runs with use_distributed_sampler=False)
        return self.loader(Subset(self.data.test, share_of_test_set(len(self.data.test), self.batch_size,
                                                                    self.trainer.global_rank, self.trainer.world_size)))


def scale_batch_size(trainer: pl.Trainer, module: QGModule, datamodule: QGDataModule, mode: str) -> int:
    with isolate_rng():  # the Tuner restores the weights, not the random generators
        batch_size = Tuner(trainer).scale_batch_size(module, datamodule=datamodule, mode=mode)
    print(f"batch-size search ({mode}) -> batch size {batch_size}")
    # The Tuner wrote the size into module.hparams; the loggers write the hparams saved at __init__ (hparams.yaml)
    module.save_hyperparameters({**module.hparams, "batch_size": batch_size})
    return batch_size


def tester(trainer: pl.Trainer, settings, guard: RunGuard) -> pl.Trainer:
    """Under DDP every process tests its own share of the batches, given by the datamodule rather than by the
    DistributedSampler Lightning would add (it pads the shares with repeated examples)."""
    if trainer.world_size == 1:
        return trainer
    return make_trainer(settings, [SigtermEndsTheTest()], logger=False, use_distributed_sampler=False,
                        **guard.hardware)


def main(argv: list[str] | None = None) -> dict:
    started = time.perf_counter()
    args = parse_args(PROG, TRAINER, argv)
    guard = RunGuard(args, TRAINER)  # run directory and its lock, --resume checks, `dp`, one-line errors
    output_dir = guard.output_dir  # runs/lightning/version_N, or --output-dir
    settings = resolve_settings(args, output_dir, batch_size_to_continue(guard.resume, args))

    pl.seed_everything(settings.seed, verbose=False)
    data = prepare_data(settings, output_dir, save_tokenizer=guard.is_rank_zero)
    module = QGModule(make_model(settings, data.tokenizer), data.tokenizer, dict(vars(settings)))
    datamodule = ResumableQGDataModule(data, settings.batch_size, settings.num_workers)
    # the seed's two callbacks (in the run directory now: exact resume needs it); plain's step checkpoints are
    # replaced by exact resume's last.ckpt every N steps
    early_stopping, checkpoint = callbacks(settings, dirpath=output_dir / "checkpoints")
    exact_resume = exact_resume_callbacks(output_dir, checkpoint, settings.checkpoint_every_n_steps,
                                          resuming=guard.ckpt_path is not None)
    with guard.refusing_the_hardware():
        trainer = make_trainer(settings, [early_stopping, checkpoint, *guard.callbacks, *exact_resume],
                               loggers(settings), **guard.hardware)  # loggers in the run directory itself, unversioned
    if trainer.is_global_zero:
        print(start_line(data, module.model, f"{type(trainer.strategy).__name__} on {trainer.num_devices} "
                         f"{type(trainer.accelerator).__name__.removesuffix('Accelerator').lower()} device(s)"))
    if settings.auto_batch_size and guard.ckpt_path is None:
        with guard.refusing_the_search():
            scale_batch_size(trainer, module, datamodule, settings.auto_batch_size)
    with guard.out_of_memory_in_one_line(datamodule):
        trainer.fit(module, datamodule=datamodule, ckpt_path=guard.ckpt_path, weights_only=True)
    if early_stopping.stopping_reason_message and trainer.is_global_zero:
        print(f"early stopping: {early_stopping.stopping_reason_message}")
    ckpt_path = checkpoint.best_model_path or checkpoint.last_model_path
    if trainer.is_global_zero:
        print(f"testing {ckpt_path}")
    module.generated = []
    tester(trainer, settings, guard).test(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True,
                                         verbose=False)
    # every process's batches, in order; strings, which LightningModule.all_gather (tensors only) cannot gather.
    # Here, not in a test hook: Lightning skips those in a process without test batches.
    generated = in_test_order(gather_from_every_rank(module.generated))
    if not trainer.is_global_zero:
        return {}  # the other ranks have no collective left: they leave
    report = write_test_report(output_dir, data.test.examples, generated, ckpt_path)
    export_pretrained(module.model, data.tokenizer, output_dir / "export")
    print(end_lines(report, ckpt_path, output_dir / "export", started))
    return report


if __name__ == "__main__":
    exit_on_user_error(main)()
