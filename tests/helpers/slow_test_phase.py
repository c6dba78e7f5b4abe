"""Run vanilla/, fabric/ or lightning/train.py (argv[1]) with a test phase made slow: every generated test batch
takes argv[2] more seconds. The rest of argv is the trainer's. Under torchrun every rank runs this file."""

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[0] = str(REPO)
TRAINER, SECONDS, ARGV = sys.argv[1], float(sys.argv[2]), sys.argv[3:]

import shared.decoding  # noqa: E402  (the repository root goes on the path first)

generate_questions = shared.decoding.generate_questions


def slow_generate_questions(*args, **kwargs):
    time.sleep(SECONDS)
    return generate_questions(*args, **kwargs)


shared.decoding.generate_questions = slow_generate_questions  # before the trainers import it by name
from shared.entry_point import exit_on_user_error  # noqa: E402
from tests.conftest import load_train  # noqa: E402

train = load_train(TRAINER)
exit_on_user_error(lambda: train.main(ARGV))()
