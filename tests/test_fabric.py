"""The Fabric trainer's own behaviour on tiny data (what the three trainers share is in test_parity.py and
test_faults.py): the same artifact tree as the others, checkpoints in the layout the others read, exact resume
from a checkpoint taken between epochs, the rows of metrics.csv a resumed run logs again, and the ladder's
boundaries -- fabric/ uses no part of the Trainer, neither other trainer uses fabric/, and Fabric's private
attributes are reached in one module only."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import REPO, load_train, run_tree, tiny_args

pytestmark = pytest.mark.slow
ENV = dict(os.environ, PYTHONWARNINGS="ignore")


def test_same_artifact_tree_and_settings_as_the_other_trainers(trained_runs):
    assert run_tree(trained_runs["fabric"]) == run_tree(trained_runs["vanilla"]) == run_tree(trained_runs["lightning"])
    hparams = {t: yaml.safe_load((out / "hparams.yaml").read_text()) for t, out in trained_runs.items()}
    for settings in hparams.values():
        settings.pop("output_dir")
    assert hparams["fabric"] == hparams["vanilla"] == hparams["lightning"]
    assert (trained_runs["fabric"] / "tensorboard" / "hparams.yaml").read_text() == \
        (trained_runs["fabric"] / "hparams.yaml").read_text()


LIGHTNING_LAYOUT_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "callbacks", "epoch", "global_step",
                         "hyper_parameters", "pytorch-lightning_version")


def shape_of(value):
    """A checkpoint value's structure: dict keys (a checkpoint path by its file name) and list lengths, down to the
    leaves' types."""
    if isinstance(value, dict):
        return {Path(key).name if "/" in str(key) else key: shape_of(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [shape_of(item) for item in value]
    return type(value).__name__


def test_checkpoints_through_fabric_save_keep_the_layout_the_other_trainers_read(trained_runs):
    """fabric.save is given the user's objects; what it writes has Lightning's layout, as vanilla's checkpoint
    does: the same keys, the weights prefixed `model.`, one optimizer and one scheduler state in lists, the
    callbacks by name -- each shaped as vanilla's, so that every trainer's test phase reads its weights."""
    fabric_last = torch.load(trained_runs["fabric"] / "checkpoints" / "last.ckpt", weights_only=True)
    vanilla_last = torch.load(trained_runs["vanilla"] / "checkpoints" / "last.ckpt", weights_only=True)
    assert set(LIGHTNING_LAYOUT_KEYS) <= set(fabric_last)
    assert fabric_last["trainer"] == "fabric" and all(name.startswith("model.") for name in fabric_last["state_dict"])
    for key in ("state_dict", "optimizer_states", "lr_schedulers", "callbacks", "pytorch-lightning_version"):
        assert shape_of(fabric_last[key]) == shape_of(vanilla_last[key]), key
    assert set(fabric_last["hyper_parameters"]) == set(vanilla_last["hyper_parameters"])
    assert fabric_last["hyper_parameters"]["output_dir"] == str(trained_runs["fabric"])
    # what exact resume adds, in the Fabric trainer's own keys: where the loop stands, and each rank's generators
    assert fabric_last["loop_state"]["train_loader"]["batches_trained"] == 0  # saved at an epoch's end
    assert fabric_last["loop_state"]["world_size"] == len(fabric_last["rng_states"]) == 1


def test_resume_from_a_checkpoint_taken_between_epochs_is_exact(trained_runs, tiny_data, tmp_path):
    """Killed after step 14 with no step saves: last.ckpt is the end of epoch 0; resumed, the run ends where the
    uninterrupted one (trained_runs) does."""
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "tests/helpers/interrupted_train.py", "fabric", "14",
                             *tiny_args(tiny_data, out, "--save-top-k", "2")], cwd=REPO, env=ENV,
                            capture_output=True, text=True, timeout=240)
    assert killed.returncode == 3, killed.stderr[-2000:]
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert (last["global_step"], last["loop_state"]["epoch_finished"]) == (13, True)
    load_train("fabric").main(tiny_args(tiny_data, out, "--save-top-k", "2", "--resume", "last"))
    straight = trained_runs["fabric"]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == \
        sorted(p.name for p in (straight / "checkpoints").iterdir())
    for path in (straight / "checkpoints").iterdir():
        x = torch.load(path, weights_only=True)["state_dict"]
        y = torch.load(out / "checkpoints" / path.name, weights_only=True)["state_dict"]
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), path.name
    for name in ("metrics.csv", "predictions.jsonl", "test_metrics.json"):
        assert (out / name).read_text() == (straight / name).read_text(), name


def test_a_failure_in_rank_zero_alone_stops_the_other_rank_and_is_one_line(tiny_data, tmp_path):
    """Two processes, Fabric's launcher starting the second: rank 0's first step checkpoint fails on a full disk
    while rank 1 waits for it in a collective. Rank 0 stops rank 1 (which would otherwise wait, or die with a
    traceback when the connection drops) and ends with its one line."""
    out = tmp_path / "run"
    result = subprocess.run([sys.executable, "tests/helpers/interrupted_train.py", "fabric", "full:1",
                             *tiny_args(tiny_data, out, "--strategy", "ddp", "--devices", "2",
                                        "--checkpoint-every-n-steps", "2")],
                            cwd=REPO, env=dict(ENV, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 2, result.stderr[-3000:]
    # the line may follow the progress bar's unfinished one
    errors = [line[line.index("error"):] for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors == [f"error: cannot write checkpoint {out / 'checkpoints' / 'last.ckpt'}: No space left on "
                      f"device; the previous checkpoint, if any, is intact"], result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def test_fabric_uses_no_part_of_the_trainer_and_no_other_trainer_uses_fabric():
    train_py = str(REPO / "fabric" / "train.py")
    result = subprocess.run([sys.executable, "-c", "import importlib.util, sys\n"
                             f"sys.path.insert(0, {str(REPO)!r})\n"
                             f"spec = importlib.util.spec_from_file_location('fabric_train', {train_py!r})\n"
                             "module = sys.modules['fabric_train'] = importlib.util.module_from_spec(spec)\n"
                             "spec.loader.exec_module(module)\n"
                             "print(sorted(name for name in sys.modules if name.startswith('pytorch_lightning')))"],
                            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr[-2000:]
    fabric_modules = {path.stem for path in (REPO / "fabric").glob("*.py")} - {"train"} | {"fabric", "fabric_train"}
    for folder in ("vanilla", "lightning", "shared"):
        for path in (REPO / folder).glob("*.py"):
            assert not {module.split(".")[0] for module in imported_modules(path)} & fabric_modules, path


def test_logged_rows_are_logged_again_up_to_the_checkpoint_and_the_copy_is_dropped(tmp_path):
    """shared/logged_rows.py, which the Fabric trainer uses on resume: the rows logged before the checkpoint's
    global step are logged again (those after it dropped), through a copy of metrics.csv that outlives a run killed
    before they are written again, and is removed once they are."""
    from shared.logged_rows import LoggedRows

    class Logger:
        def __init__(self):
            self.rows, self.saved = [], False

        def log_metrics(self, metrics, step):
            self.rows.append((metrics, step))

        def save(self):
            self.saved = True

    metrics_csv = tmp_path / "metrics.csv"
    text = "dev_loss,epoch,step,train_loss\n4.5,0,6,\n,0,6,5.25\n4.0,1,13,\n"
    metrics_csv.write_text(text)
    LoggedRows(metrics_csv)  # read, and the copy made; then the process dies and the logger deletes the file
    metrics_csv.unlink()
    backup = tmp_path / ".metrics.csv.before-resume"
    assert backup.read_text() == text
    logger = Logger()
    LoggedRows(metrics_csv).log_again(logger, global_step=7)  # from the copy
    assert logger.rows == [({"dev_loss": 4.5, "epoch": 0}, 6), ({"epoch": 0, "train_loss": 5.25}, 6)]
    assert logger.saved and not backup.exists()

    metrics_csv.write_text(text)
    kept = LoggedRows(metrics_csv)
    metrics_csv.write_text("")  # what a failed resume may leave
    kept.put_back()
    assert metrics_csv.read_text() == text and not backup.exists()


def test_fabric_private_attributes_are_reached_in_private_api_only():
    """The trainer's uses of Fabric beyond its public API sit in fabric/private_api.py, under the line saying that
    none exists; no other module in fabric/ reads or sets an attribute whose name starts with one underscore."""
    for path in sorted((REPO / "fabric").glob("*.py")):
        private = sorted({node.attr for node in ast.walk(ast.parse(path.read_text()))
                          if isinstance(node, ast.Attribute) and node.attr.startswith("_")
                          and not node.attr.startswith("__")})
        if path.name == "private_api.py":
            assert private == ["_dataloader", "_num_iter_calls"]
            assert "No public API exists" in path.read_text()
        else:
            assert private == [], path
