"""Run vanilla/, fabric/ or lightning/train.py (argv[1]) and send SIGTERM from rank 0 at a phase of the run
(argv[2]) to rank 0 alone or to every process of the run (argv[3]: "rank0" or "all", the latter through the
process group, as a scheduler signals a job; start the run in a session of its own). The rest of argv is the
trainer's. Phases:
    sanity      the sanity check's first dev batch
    train       the second training batch
    validation  the first dev batch after training started
    test        the first test batch
    export      writing the exported model
The hooks wrap the shared functions the trainers import by name, before they import them."""

import os
import signal
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[0] = str(REPO)
TRAINER, PHASE, TARGET, ARGV = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

import torch  # noqa: E402

import shared.decoding  # noqa: E402  (the repository root goes on the path first)
import shared.export  # noqa: E402
import shared.model  # noqa: E402

calls = {"eval": 0, "train": 0}


def send() -> None:
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        return
    if TARGET == "all":
        os.killpg(os.getpgid(0), signal.SIGTERM)
    else:
        os.kill(os.getpid(), signal.SIGTERM)


def hooked(function, phase: str):
    def call(*args, **kwargs):
        if phase == PHASE:
            send()
        return function(*args, **kwargs)
    return call


seq2seq_loss = shared.model.seq2seq_loss


def loss(model, batch):
    kind = "train" if torch.is_grad_enabled() else "eval"  # dev batches run without autograd, in every trainer
    calls[kind] += 1
    if (PHASE, kind, calls[kind]) in (("sanity", "eval", 1), ("train", "train", 2)) or \
            (PHASE == "validation" and kind == "eval" and calls["train"] > 0 and calls["eval"] == 3):
        send()
    return seq2seq_loss(model, batch)


shared.model.seq2seq_loss = loss
shared.decoding.generate_questions = hooked(shared.decoding.generate_questions, "test")
shared.export.export_pretrained = hooked(shared.export.export_pretrained, "export")
from shared.entry_point import exit_on_user_error  # noqa: E402
from tests.conftest import load_train  # noqa: E402

train = load_train(TRAINER)
exit_on_user_error(lambda: train.main(ARGV))()
