"""The command line as a user meets it: --help, and one-line errors with a non-zero exit, never a traceback.

A few cases run `python vanilla/train.py` as a user does; the rest run its entry point in this process, through
the same wrapper that turns an error into one line and an exit status (a new interpreter costs seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

from shared.entry_point import exit_on_user_error
from tests.conftest import REPO, qa, squad_doc, tiny_args, write_json

ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def vanilla(*args, cwd=REPO):
    return subprocess.run([sys.executable, str(REPO / "vanilla" / "train.py"), *args], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def vanilla_here(capsys, monkeypatch):
    """`python vanilla/train.py ARGS` in this process, in the directory `cwd`: its exit status and output."""
    from vanilla import train

    def run(*args, cwd=REPO):
        monkeypatch.chdir(cwd)
        with pytest.raises(SystemExit) as stop:
            exit_on_user_error(lambda: train.main(list(args)))()
        out, err = capsys.readouterr()
        return SimpleNamespace(returncode=stop.value.code, stdout=out, stderr=err)

    return run


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def test_help_explains_every_common_option():
    result = vanilla("--help")
    assert result.returncode == 0
    for option in ("--data-dir", "--train-file", "--dev-file", "--test-file", "--model", "--output-dir",
                   "--max-epochs", "--batch-size", "--lr", "--seed", "--patience", "--min-delta", "--precision",
                   "--accelerator", "--devices", "--strategy", "--auto-batch-size", "--resume",
                   "--checkpoint-every-n-steps", "--limit-train-batches", "--num-workers"):
        assert option in result.stdout, option


@pytest.mark.fault
def test_bad_record_is_one_line_naming_file_and_record(tiny_data, tmp_path):
    bad = write_json(tmp_path / "train.json", squad_doc(qa("rec-42", "Where?", "London", 3)))
    result = vanilla("--train-file", str(bad), "--dev-file", str(tiny_data / "dev.json"),
                     "--test-file", str(tiny_data / "test.json"), "--output-dir", str(tmp_path / "out"))
    assert_one_line_error(result, str(bad), "record 'rec-42'", "answer_start 3")


@pytest.mark.fault
def test_malformed_json_is_one_line(tiny_data, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for split in ("train", "dev", "test"):
        (data / f"{split}.json").write_text((tiny_data / f"{split}.json").read_text())
    (data / "dev.json").write_text('{"data": [ {"paragraphs": ')
    result = vanilla("--data-dir", str(data), "--output-dir", str(tmp_path / "out"))
    assert_one_line_error(result, str(data / "dev.json"), "malformed JSON")


@pytest.mark.fault
@pytest.mark.parametrize("args, fragments", [
    (["--strategy", "dp"], ["--strategy dp", "CUDA"]),
    (["--accelerator", "gpu"], ["--accelerator gpu", "no CUDA GPU"]),
    (["--batch-size", "0"], ["--batch-size", "at least 1"]),
    (["--limit-train-batches", "1.5"], ["--limit-train-batches"]),
    (["--precision", "64"], ["--precision", "invalid choice"]),
    (["--resume", "last", "--overwrite"], ["--resume", "--overwrite"]),
    (["--devices", "0"], ["--devices"]),
    (["--train-file", "x.json"], ["--dev-file is missing"]),
    (["--name", "exp"], ["--name", "--output-dir", "give one of them"]),
])
def test_impossible_requests_are_one_line(tmp_path, vanilla_here, args, fragments):
    assert_one_line_error(vanilla_here("--output-dir", str(tmp_path / "out"), *args), *fragments)


@pytest.mark.fault
@pytest.mark.parametrize("args, fragments", [
    (["--overwrite"], ["--overwrite", "new version directory"]),
    (["--name", "a/b"], ["--name 'a/b'", "folder name"]),
    (["--resume", "last"], ["--resume last: no run under runs/vanilla has a checkpoint"]),
    (["--resume", "nothere.ckpt"], ["--resume nothere.ckpt: no checkpoint at nothere.ckpt"]),
    (["--data-dir", "nowhere"], ["nowhere/train.json"]),  # after the version was made: it is removed again
])
def test_run_directory_requests_are_one_line(tmp_path, vanilla_here, args, fragments):
    assert_one_line_error(vanilla_here(*args, cwd=tmp_path), *fragments)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("version_*"))


@pytest.mark.fault
def test_missing_resume_checkpoint_and_existing_run(tiny_data, tmp_path, vanilla_here):
    assert_one_line_error(vanilla_here(*tiny_args(tiny_data, tmp_path / "a", "--resume", "last")), "no checkpoint at")
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    assert_one_line_error(vanilla_here(*tiny_args(tiny_data, tmp_path / "b")), "already holds a run", "--overwrite")


@pytest.mark.fault
def test_ask_command_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "shared.ask", "--model", str(tmp_path / "nowhere"),
                             "--context", "abc", "--answer", "b"], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=120)
    assert_one_line_error(result, "--model")
