"""Shared fixtures: a small synthetic data set and the command line of a tiny, fast run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from shared.synthetic import write_synthetic_squad

REPO = Path(__file__).resolve().parents[1]
PYTHON_ENV = {"PYTHONWARNINGS": "ignore"}


def run_tree(out: Path) -> list[str]:
    """Every file and folder of a run, relative to it; TensorBoard event files named by kind only."""
    names = []
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        names.append(relative.split("events.out.tfevents.")[0] + "events" if "tfevents" in relative else relative)
    return names


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """200 train / 48 dev / 24 test questions in SQuAD v1.1 files."""
    directory = tmp_path_factory.mktemp("tiny-data")
    write_synthetic_squad(directory, seed=7, sizes={"train": 200, "dev": 48, "test": 24})
    return directory


def tiny_args(data_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    """A run that takes a few seconds: tiny BART, small vocabulary, 3 epochs."""
    return ["--data-dir", str(data_dir), "--output-dir", str(output_dir), "--model-size", "tiny",
            "--vocab-size", "400", "--batch-size", "16", "--max-epochs", "3", "--warmup-steps", "4",
            "--num-beams", "2", "--max-target-length", "16", "--lr", "3e-3", *extra]


def write_json(path: Path, document) -> Path:
    path.write_text(json.dumps(document) if not isinstance(document, str) else document, encoding="utf-8")
    return path


def squad_doc(*qas, context: str = "Ada Lovelace was born in London in 1815.") -> dict:
    return {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": list(qas)}]}]}


def qa(id_: str, question: str, text: str, start: int, **extra) -> dict:
    return {"id": id_, "question": question, "answers": [{"text": text, "answer_start": start}], **extra}


TRAINERS = ("vanilla", "fabric", "lightning")  # the ladder: by hand, Fabric, the Trainer
HF_TRAINER = "hf_trainer"  # the fourth rung, transformers' Seq2SeqTrainer, in the tests that compare it so far


def load_train(trainer: str):
    """A trainer's train.py as a module: vanilla's is a package module; lightning/, fabric/ and hf_trainer/ are not
    packages (a package named `lightning` would shadow the real distribution), so theirs load from their files."""
    import importlib
    import importlib.util
    import sys

    if trainer == "vanilla":
        return importlib.import_module("vanilla.train")
    name = f"{trainer}_train"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / trainer / "train.py")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


def load_lightning_train():
    return load_train("lightning")


def loss_home(trainer: str):
    """The module whose code calls `seq2seq_loss` in `trainer`, where a test replaces the loss: its train.py, but
    for Lightning the LightningModule's file, lightning/plain_lightning.py."""
    train = load_train(trainer)
    return sys.modules[train.QGModule.__module__] if trainer == "lightning" else train


# ---------------------------------------------------------------- the parity report (tests marked `parity`)
# Each parity test records what each trainer did (tests/parity_report.py holds the rows and the comparisons it
# expects), before asserting; the report is printed at the end of the session, and with --parity-report DIR also
# written there as parity.md with the loss-curve plot. The session fails when an expected comparison was not
# recorded: in a parity run (--parity-report, or -m parity) any of them; otherwise those of the tests selected.
def pytest_addoption(parser):
    parser.addoption("--parity-report", metavar="DIR", default=None,
                     help="write the parity report (parity.md) and the loss-curve plot (parity_loss.png) to DIR")


def is_parity_run(config) -> bool:
    """The parity suite as a whole: `make parity` (-m parity --parity-report DIR), or -m parity by hand."""
    return bool(config.getoption("--parity-report")) or config.getoption("markexpr", "").strip() == "parity"


PARITY_CHECK: dict = {}  # what pytest_sessionfinish found, for the terminal summary


def pytest_sessionfinish(session, exitstatus):
    from tests import parity_report

    if session.config.getoption("collectonly"):
        return
    selected = {item.nodeid for item in session.items}
    required = parity_report.required(selected, is_parity_run(session.config))
    missing = parity_report.not_recorded(required, parity_report.ROWS)
    PARITY_CHECK.update(missing=missing, left_out=len(parity_report.EXPECTED) - len(required))
    if missing and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_runtest_logreport(report):
    from tests import fault_count

    if report.when == "call" and "fault" in report.keywords:
        counter = fault_count.FUZZ_TESTS if "test_fuzz_reader" in report.nodeid else fault_count.RAN
        counter[0] += 1


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    from tests import fault_count, parity_report

    if fault_count.RAN[0] or fault_count.FUZZED[0]:
        terminalreporter.section("faults and bad input")
        terminalreporter.write_line(
            f"fault and bad-input cases tried: {fault_count.RAN[0] + fault_count.FUZZED[0]} ({fault_count.RAN[0]} "
            f"fault and bad-input tests, and {fault_count.FUZZED[0]} generated documents fed to the SQuAD reader by "
            f"{fault_count.FUZZ_TESTS[0]} fuzz tests)")
    missing = PARITY_CHECK.get("missing", [])
    if not parity_report.ROWS and not missing:
        return
    terminalreporter.section("parity: vanilla/, fabric/, lightning/ and hf_trainer/ on the CPU, float32 unless stated")
    for line in parity_report.table(parity_report.ROWS, missing, PARITY_CHECK.get("left_out", 0)):
        terminalreporter.write_line(line)
    directory = config.getoption("--parity-report")
    if missing:
        terminalreporter.write_line(
            f"FAILED: {len(missing)} expected parity comparison(s) did not run, marked DID NOT RUN above (their test "
            f"failed before recording, was skipped, or was left out of a parity run)"
            + (f"; no report written to {directory}" if directory else ""), red=True, bold=True)
    elif directory:
        written = parity_report.write_report(Path(directory))
        terminalreporter.write_line(f"report written: {', '.join(str(p) for p in written)}")


@pytest.fixture(scope="session")
def trained_runs(tiny_data, tmp_path_factory) -> dict[str, Path]:
    """The tiny run (3 epochs, top-2 checkpoints) through each trainer, in this process; shared by the tests
    that compare the trainers' artifacts."""
    root = tmp_path_factory.mktemp("trained-runs")
    outputs = {trainer: root / trainer for trainer in TRAINERS}
    for trainer, output in outputs.items():
        load_train(trainer).main(tiny_args(tiny_data, output, "--save-top-k", "2"))
    return outputs


@pytest.fixture(scope="session")
def hf_trained_run(tiny_data, tmp_path_factory) -> Path:
    """The same tiny run through transformers' Seq2SeqTrainer (hf_trainer/), for the tests that compare it."""
    output = tmp_path_factory.mktemp("trained-runs") / HF_TRAINER
    load_train(HF_TRAINER).main(tiny_args(tiny_data, output, "--save-top-k", "2"))
    return output
