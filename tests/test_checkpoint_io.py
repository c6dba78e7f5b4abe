"""Atomic checkpoint writes and safe loads."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from shared.checkpoint_file import CheckpointError
from shared.checkpoint_file import read_checkpoint as load_checkpoint
from vanilla import checkpoint_io
from vanilla.checkpoint_io import atomic_save


def test_round_trip_with_weights_only(tmp_path):
    path = tmp_path / "a.ckpt"
    checkpoint = {"state_dict": {"model.w": torch.arange(4.0)}, "epoch": 2, "note": ("x", 1, None)}
    atomic_save(checkpoint, path)
    loaded = load_checkpoint(path)
    assert torch.equal(loaded["state_dict"]["model.w"], torch.arange(4.0)) and loaded["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["a.ckpt"]  # no temporary file left behind


@pytest.mark.fault
def test_crash_mid_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"state_dict": {"model.w": torch.zeros(3)}}, path)
    before = path.read_bytes()

    def disk_full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint_io.os, "fsync", disk_full)
    with pytest.raises(CheckpointError, match="No space left on device") as error:
        atomic_save({"state_dict": {"model.w": torch.ones(3)}}, path)
    assert "\n" not in str(error.value) and str(path) in str(error.value)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.fault
def test_truncated_or_foreign_files_give_one_line_errors(tmp_path):
    good = tmp_path / "good.ckpt"
    atomic_save({"state_dict": {"model.w": torch.randn(1000)}}, good)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good.read_bytes()[:2000])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.ones(2)}, other)
    for path, expected in ((truncated, "not a readable checkpoint"), (text, "not a readable checkpoint"),
                           (other, "no 'state_dict'"), (tmp_path / "missing.ckpt", "no such checkpoint")):
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path)
        assert str(path) in str(error.value) and expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.fault
def test_loading_never_unpickles_arbitrary_objects(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo unsafe > " + str(tmp_path / "ran"),))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Payload()}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not (tmp_path / "ran").exists()
