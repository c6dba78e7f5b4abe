"""Top-k bookkeeping and file names, compared with Lightning's ModelCheckpoint on the same scores."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from vanilla.model_checkpoint import ModelCheckpoint


def saver(log):
    def save(path: Path):
        path.write_text("ckpt")
        log.append(path.name)
    return save


def offer(checkpoint, scores, save):
    for epoch, score in enumerate(scores):
        checkpoint.on_validation_epoch_end(epoch, torch.tensor(score, dtype=torch.float32), save)


def test_top_2_keeps_the_two_best_and_deletes_the_evicted(tmp_path):
    written = []
    checkpoint = ModelCheckpoint(tmp_path, save_top_k=2)
    offer(checkpoint, [3.0, 2.0, 2.5, 1.0, 1.5], saver(written))
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["epoch=3-dev_loss=1.00.ckpt", "epoch=4-dev_loss=1.50.ckpt", "last.ckpt"]
    assert Path(checkpoint.best_model_path).name == "epoch=3-dev_loss=1.00.ckpt"
    assert checkpoint.best_model_score.item() == 1.0
    assert Path(checkpoint.kth_best_model_path).name == "epoch=4-dev_loss=1.50.ckpt"
    # last.ckpt is written right after every top-k save, and only then
    assert written == ["epoch=0-dev_loss=3.00.ckpt", "last.ckpt", "epoch=1-dev_loss=2.00.ckpt", "last.ckpt",
                       "epoch=2-dev_loss=2.50.ckpt", "last.ckpt", "epoch=3-dev_loss=1.00.ckpt", "last.ckpt",
                       "epoch=4-dev_loss=1.50.ckpt", "last.ckpt"]


def test_worse_score_is_not_saved_and_ties_do_not_replace(tmp_path):
    written = []
    checkpoint = ModelCheckpoint(tmp_path, save_top_k=1)
    offer(checkpoint, [2.0, 2.0, 2.1], saver(written))
    assert written == ["epoch=0-dev_loss=2.00.ckpt", "last.ckpt"]


def test_nan_ranks_as_infinity_and_keeps_its_name(tmp_path):
    written = []
    checkpoint = ModelCheckpoint(tmp_path, save_top_k=2)
    offer(checkpoint, [math.nan], saver(written))
    assert written == ["epoch=0-dev_loss=nan.ckpt", "last.ckpt"]
    assert checkpoint.best_k_models[str(tmp_path / "epoch=0-dev_loss=nan.ckpt")].item() == math.inf
    for epoch, score in ((1, 1.0), (2, 0.5)):
        checkpoint.on_validation_epoch_end(epoch, torch.tensor(score), saver(written))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch=1-dev_loss=1.00.ckpt",
                                                          "epoch=2-dev_loss=0.50.ckpt", "last.ckpt"]


def test_name_clash_gets_a_version_suffix(tmp_path):
    (tmp_path / "epoch=0-dev_loss=2.00.ckpt").write_text("someone else's")
    checkpoint = ModelCheckpoint(tmp_path, save_top_k=1)
    offer(checkpoint, [2.0], saver([]))
    assert Path(checkpoint.best_model_path).name == "epoch=0-dev_loss=2.00-v1.ckpt"
    assert (tmp_path / "epoch=0-dev_loss=2.00.ckpt").read_text() == "someone else's"


def test_non_writer_rank_keeps_bookkeeping_and_deletes_nothing(tmp_path):
    calls = []
    checkpoint = ModelCheckpoint(tmp_path / "ckpts", save_top_k=1, is_writer=False)
    offer(checkpoint, [2.0, 1.0], lambda path: calls.append(path.name))  # save is called on every rank
    assert calls == ["epoch=0-dev_loss=2.00.ckpt", "last.ckpt", "epoch=1-dev_loss=1.00.ckpt", "last.ckpt"]
    assert not (tmp_path / "ckpts").exists()
    assert Path(checkpoint.best_model_path).name == "epoch=1-dev_loss=1.00.ckpt"


@pytest.mark.parametrize("scores, k", [([3.0, 2.0, 2.5, 1.0, 1.5, 1.5, 0.9], 2), ([1.0, math.nan, 0.5, 2.0], 2),
                                        ([2.0, 1.0, 1.0, 3.0], 1), ([4.0, 3.0, 2.0, 1.0], 3)])
def test_same_bookkeeping_as_lightning(tmp_path, scores, k):
    from unittest import mock

    from pytorch_lightning.callbacks import ModelCheckpoint as LightningModelCheckpoint

    mine = ModelCheckpoint(tmp_path / "mine", save_top_k=k)
    theirs = LightningModelCheckpoint(dirpath=tmp_path / "theirs", monitor="dev_loss", save_top_k=k,
                                      filename="{epoch}-{dev_loss:.2f}", save_last=True)
    trainer = mock.MagicMock(is_global_zero=True)
    trainer.strategy.reduce_boolean_decision = lambda decision, all=True: decision
    trainer.save_checkpoint = lambda path, weights_only=False: Path(path).write_text("x")
    trainer.strategy.remove_checkpoint = lambda path: Path(path).unlink()
    (tmp_path / "mine").mkdir()
    (tmp_path / "theirs").mkdir()
    for epoch, score in enumerate(scores):
        value = torch.tensor(score, dtype=torch.float32)
        mine.on_validation_epoch_end(epoch, value, saver([]))
        trainer.current_epoch, trainer.global_step = epoch, epoch + 1
        candidates = {"dev_loss": value, "epoch": torch.tensor(epoch), "step": torch.tensor(epoch + 1)}
        theirs._save_topk_checkpoint(trainer, candidates)
        if theirs._last_global_step_saved == trainer.global_step:
            theirs._save_last_checkpoint(trainer, candidates)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == \
        sorted(p.name for p in (tmp_path / "theirs").iterdir())
    assert Path(mine.best_model_path).name == Path(theirs.best_model_path).name
    assert {Path(p).name: v.item() for p, v in mine.best_k_models.items()} == \
        {Path(p).name: v.item() for p, v in theirs.best_k_models.items()}
