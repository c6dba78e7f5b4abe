"""The command line every trainer shares: `python vanilla/train.py --help`, `python fabric/train.py --help` and
`python lightning/train.py --help` print the same options, and a command line means the same run in each. This
module parses it and refuses contradictory flags; what the flags mean for devices and launchers is
`shared/devices.py` and `shared/launcher.py`."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from shared.errors import UserError
from shared.model import MODEL_SIZES

PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number of at least 0, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):  # also rejects nan
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def _devices(text: str) -> int:
    value = int(text)
    if value == 0 or value < -1:
        raise argparse.ArgumentTypeError(f"must be a positive number of devices or -1 for every GPU, got {text}")
    return value


def _limit(text: str) -> float | int:
    """Lightning's meaning: a whole number is a count of batches, a fraction in (0, 1] a share of the epoch."""
    if text.isdigit():
        value = int(text)
        if value < 1:
            raise argparse.ArgumentTypeError(f"a count of batches must be at least 1, got {text}")
        return value
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be a whole number of batches or a fraction in (0, 1], got {text}")
    return value


class _OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse prints usage plus a message; keep it to one line
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser(prog: str, trainer: str) -> argparse.ArgumentParser:
    parser = _OneLineErrorParser(
        prog=prog,
        description="Train a question-generation model (highlighted SQuAD paragraph -> question), validate each "
                    "epoch, stop early on dev_loss, keep the best checkpoints, then test the best one.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    data = parser.add_argument_group("data (default: the embedded synthetic corpus, written under the output dir)")
    data.add_argument("--data-dir", help="directory holding train.json, dev.json and test.json in SQuAD format "
                                         "(the NQG split of Du et al. 2017 comes this way)")
    data.add_argument("--train-file", help="SQuAD v1.1/v2.0 JSON for training (overrides --data-dir's)")
    data.add_argument("--dev-file", help="SQuAD JSON for validation: dev_loss, early stopping, checkpoints")
    data.add_argument("--test-file", help="SQuAD JSON for the test phase after training")
    data.add_argument("--max-source-length", type=_positive_int, default=256,
                      help="tokens of highlighted context; longer contexts are windowed around the answer")
    data.add_argument("--max-target-length", type=_positive_int, default=32, help="tokens of question")
    data.add_argument("--num-workers", type=_non_negative_int, default=0, help="DataLoader worker processes")

    model = parser.add_argument_group("model")
    model.add_argument("--model", metavar="NAME_OR_PATH",
                       help="pretrained seq2seq model and tokenizer to fine-tune (from_pretrained); default: a "
                            "BART initialised at random with a tokenizer trained on the training split")
    model.add_argument("--model-size", choices=sorted(MODEL_SIZES), default="small",
                       help="size of the randomly initialised BART (ignored with --model)")
    model.add_argument("--vocab-size", type=_positive_int, default=1000, help="size of the trained tokenizer")
    model.add_argument("--num-beams", type=_positive_int, default=4, help="beam width for test-time generation")

    train = parser.add_argument_group("training")
    train.add_argument("--output-dir",
                       help="an exact place for the run: checkpoints/, metrics.csv, hparams.yaml, tensorboard/, "
                            f"predictions and the exported model (default: a new runs/{trainer}/version_N, the next "
                            "free N, as Lightning's loggers version their runs)")
    train.add_argument("--name",
                       help=f"keep the run's versions under runs/NAME/ instead of runs/{trainer}/")
    train.add_argument("--max-epochs", type=_positive_int, default=8, help="upper bound on training epochs")
    train.add_argument("--batch-size", type=_positive_int, default=32, help="examples per batch (per process)")
    train.add_argument("--lr", type=float, default=1e-3, help="peak AdamW learning rate")
    train.add_argument("--weight-decay", type=_non_negative_float, default=0.01, help="AdamW weight decay")
    train.add_argument("--warmup-steps", type=_non_negative_int, default=100,
                       help="optimizer steps of linear LR warm-up, constant after (0: none)")
    train.add_argument("--gradient-clip-val", type=_non_negative_float, default=1.0,
                       help="clip the gradient norm to this (0: no clipping)")
    train.add_argument("--accumulate-grad-batches", type=_positive_int, default=1,
                       help="batches whose gradients are summed per optimizer step")
    train.add_argument("--limit-train-batches", type=_limit, default=1.0,
                       help="batches per training epoch: a count, or a fraction of the epoch")
    train.add_argument("--seed", type=int, default=42, help="seed for Python, NumPy and torch")

    stop = parser.add_argument_group("early stopping and checkpoints (monitor: dev_loss, mode: min)")
    stop.add_argument("--patience", type=_positive_int, default=2,
                      help="epochs without improvement of dev_loss before stopping")
    stop.add_argument("--min-delta", type=_non_negative_float, default=0.0,
                      help="an improvement means dev_loss + min_delta < best dev_loss")
    stop.add_argument("--save-top-k", type=_positive_int, default=1, help="how many best checkpoints to keep")
    stop.add_argument("--checkpoint-every-n-steps", type=_non_negative_int, default=0,
                      help="also write last.ckpt every N optimizer steps, for mid-epoch resume (0: off)")
    stop.add_argument("--resume", metavar="PATH|last",
                      help="continue from a checkpoint; 'last': the latest version's last.ckpt (with --output-dir, "
                           "that directory's), a PATH: that checkpoint, in the run it belongs to")
    stop.add_argument("--overwrite", action="store_true",
                      help="replace a finished or abandoned run in --output-dir (without it, a directory that "
                           "already holds a run is refused, so nothing is overwritten by accident)")

    hardware = parser.add_argument_group("hardware")
    hardware.add_argument("--accelerator", choices=("auto", "cpu", "gpu"), default="auto",
                          help="auto picks the GPU when CUDA is available")
    hardware.add_argument("--devices", type=_devices, default=1, help="number of devices, or -1 for every GPU")
    hardware.add_argument("--num-nodes", type=_positive_int, default=1,
                          help="machines taking part, each running --devices processes; the processes of every "
                               "node are started by torchrun or SLURM's srun (docs/multi-node.md)")
    hardware.add_argument("--strategy", choices=("auto", "dp", "ddp"), default="auto",
                          help="dp: torch.nn.DataParallel over the GPUs (as the 2021 seed did); ddp: one process "
                               "per device, launched by the trainer (or by torchrun)")
    hardware.add_argument("--ddp-timeout", type=_positive_float, default=1800.0, metavar="SECONDS",
                          help="how long a DDP rank waits in a collective for the others before failing "
                               "(Lightning's DDPStrategy(timeout=...), 30 minutes by default)")
    hardware.add_argument("--precision", choices=PRECISIONS, default="32-true",
                          help="32-true, or autocast to bfloat16 / float16 (float16 with a GradScaler on CUDA)")
    hardware.add_argument("--auto-batch-size", choices=("power", "binsearch"),
                          help="search the largest batch size that fits in memory before training "
                               "(Lightning's scale_batch_size algorithm)")
    return parser


def parse_args(prog: str, trainer: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """`trainer` (vanilla, fabric, lightning, hf_trainer): where its runs go by default, runs/<trainer>/version_N."""
    args = build_parser(prog, trainer).parse_args(argv)
    if args.resume is not None and args.overwrite:
        raise UserError("--resume continues the run in --output-dir and --overwrite replaces it: give one of them")
    if args.overwrite and args.output_dir is None:
        raise UserError("--overwrite replaces the run in --output-dir: without --output-dir every run gets a new "
                        "version directory, and nothing is overwritten")
    if args.name is not None and args.output_dir is not None:
        raise UserError("--name keeps the run's versions under runs/NAME/ and --output-dir gives an exact place: "
                        "give one of them")
    if args.name is not None and (not args.name or Path(args.name).name != args.name or args.name.startswith(".")):
        raise UserError(f"--name {args.name!r}: a folder name under runs/, without '/' or a leading '.'")
    if args.strategy == "dp" and args.num_nodes > 1:
        raise UserError("--strategy dp runs one process on one machine; across --num-nodes use --strategy ddp")
    if args.model is not None and args.model_size != "small":
        raise UserError("--model-size sets the size of a model trained from scratch; it cannot be used with --model")
    return args
